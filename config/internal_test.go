package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultValidates(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	d := &decoder{bad: map[string]bool{}}
	d.validate(Default())
	if len(d.problems) > 0 {
		t.Errorf("Default() does not validate: %v", &Error{Problems: d.problems})
	}
}

func TestScanPositions(t *testing.T) {
	t.Parallel()
	src := strings.Join([]string{
		`# [[listener]] in a comment`,       // 1
		`state_dir = """`,                   // 2
		`[[listener]]`,                      // 3: inside a string
		`name = "x" """`,                    // 4
		`[[listener]] # one`,                // 5
		`name = 'a'`,                        // 6
		`  [[listener.route]]`,              // 7
		`  path = "/\"#"`,                   // 8
		`  "client_auth" = "off"`,           // 9
		`  [[listener.route]]`,              // 10
		`  allow_cn = [`,                    // 11
		`    "a", # comment ]`,              // 12
		`    '''b''',`,                      // 13
		`  ]`,                               // 14
		`[[listener]]`,                      // 15
		`name = "b"`,                        // 16
		`  [[listener.route]]`,              // 17
		`  path = "/"`,                      // 18
		`[upstream.lan]`,                    // 19
		`urls = ["http://a", "ws://b"]`,     // 20
		`limits.idle_timeout = "5s"`,        // 21: dotted key in [upstream.lan]
		`[certs]`,                           // 22
		`x = { dev = true, hosts = ["h"] }`, // 23
		`when = 1979-05-27 07:32:00Z`,       // 24
		`"dotted.name" = 1`,                 // 25
	}, "\n")
	want := map[string]pos{
		"state_dir":                        {2, 1},
		"listener":                         {5, 1},
		"listener.0":                       {5, 1},
		"listener.0.name":                  {6, 1},
		"listener.0.route.0":               {7, 3},
		"listener.0.route.0.path":          {8, 3},
		"listener.0.route.0.client_auth":   {9, 3},
		"listener.0.route.1":               {10, 3},
		"listener.0.route.1.allow_cn":      {11, 3},
		"listener.0.route.1.allow_cn.0":    {12, 5},
		"listener.0.route.1.allow_cn.1":    {13, 5},
		"listener.1":                       {15, 1},
		"listener.1.name":                  {16, 1},
		"listener.1.route.0":               {17, 3},
		"listener.1.route.0.path":          {18, 3},
		"upstream":                         {19, 1},
		"upstream.lan":                     {19, 1},
		"upstream.lan.urls.1":              {20, 21},
		"upstream.lan.limits.idle_timeout": {21, 1},
		"certs.x":                          {23, 1},
		"certs.x.dev":                      {23, 7},
		"certs.x.hosts.0":                  {23, 28},
		"certs.when":                       {24, 1},
		"certs.dotted.name":                {25, 1},
	}
	got := scanPositions(src)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s at %v, want %v", k, got[k], w)
		}
	}
	if _, ok := got["listener.2"]; ok {
		t.Errorf("[[listener]] inside a string counted")
	}
}

// FuzzScanPositions checks that the position scanner never panics or
// hangs, whatever the input.
func FuzzScanPositions(f *testing.F) {
	files, _ := filepath.Glob("../configs/*.toml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	for _, s := range []string{``, `[`, `[[`, `a = "`, `a = """`, `a = '''x`, `a = [`, `a = {`, `a = { b = [1, {`, `"\`, `a."b\" = 1`, "a = \"\\", `=`, `[a.]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		scanPositions(src)
	})
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	known := []string{"name", "address", "tls", "route"}
	for in, want := range map[string]string{
		"adress":   ` (did you mean "address"?)`,
		"Address":  ` (did you mean "address"?)`,
		"nme":      ` (did you mean "name"?)`,
		"routes":   ` (did you mean "route"?)`,
		"tsl":      ` (did you mean "tls"?)`,
		"x":        ``,
		"upstream": ``,
	} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDemoMatchesDefault(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	c, err := Load("../configs/demo.toml")
	if err != nil {
		t.Fatal(err)
	}
	if d := Default(); !reflect.DeepEqual(c, d) {
		t.Errorf("configs/demo.toml differs from Default():\n%+v\n%+v", c, d)
	}
}

// FuzzParse checks that no input makes Parse panic, and that a rejected
// input always comes with at least one problem.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../configs/*.toml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("listener = [1, {name = 2}, []]\nupstream = 5\ncerts = {x = 1, y = {dev = 1, hosts = [1]}}")
	f.Add("[limits]\nmax_sessions = 1e3\nidle_timeout = 1979-05-27\n[log]\nlevel = 'INFO'")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Parse([]byte(src), "fuzz.toml")
		if err != nil {
			if ce, ok := err.(*Error); !ok || len(ce.Problems) == 0 {
				t.Fatalf("error %v (%T) without problems", err, err)
			}
			return
		}
		if c == nil || len(c.Listeners) == 0 {
			t.Fatalf("accepted config without listeners: %+v", c)
		}
	})
}
