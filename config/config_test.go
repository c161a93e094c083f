package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/tlsterm"
)

// lines joins its arguments into a TOML document: argument i is line i+1.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// listener is a valid listener with one route, 6 lines long.
var listener = []string{
	`[[listener]]`,
	`name = "a"`,
	`address = ":1"`,
	`[[listener.route]]`,
	`path = "/"`,
	`upstream = "embedded"`,
}

func withListener(l ...string) string { return lines(append(append([]string{}, listener...), l...)...) }

// testDir returns a directory holding ca.pem, cert.pem and key.pem, and a
// config file name inside it, so that relative paths resolve there.
func testDir(t *testing.T) (dir, name string) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range []string{"ca.pem", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("test placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir, filepath.Join(dir, "test.toml")
}

// problems returns err's problems, failing the test when err is not an
// *config.Error.
func problems(t *testing.T, err error) []config.Problem {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return ce.Problems
}

type want struct {
	line int    // 0: position unknown
	msg  string // fragment of Problem.Msg
}

func TestParseProblems(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	tests := []struct {
		name string
		src  string
		want []want
	}{
		// TOML and types
		{"syntax error", lines(`[[listener]]`, `name = "a`), []want{{2, "invalid TOML: "}}},
		{"duplicate key", lines(`state_dir = "/a"`, `state_dir = "/b"`), []want{{2, `invalid TOML: `}}},
		{"wrong type", lines(`[[listener]]`, `name = 5`, `address = ":1"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{2, `name in [[listener]]: want a string, got integer 5`}}},
		{"listener not an array", lines(`[listener]`, `name = "a"`),
			[]want{{1, `listener: want an array of tables [[listener]], got a table`}}},
		{"array element type", withListener(`[upstream.x]`, `urls = ["http://a", 5]`),
			[]want{{8, `urls in [upstream.x]: want a string, got integer 5`}}},
		{"boolean type", withListener(`[certs.x]`, `dev = "yes"`),
			[]want{{8, `dev in [certs.x]: want a boolean (true or false), got string "yes"`}}},

		// unknown keys
		{"unknown key with suggestion", lines(`[[listener]]`, `name = "a"`, `adress = ":1"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{1, `missing required key "address" in [[listener]]`}, {3, `unknown key "adress" in [[listener]] (did you mean "address"?)`}}},
		{"root key in a table", withListener(`stat_dir = "/x"`),
			[]want{{7, `unknown key "stat_dir" in [[listener.route]]`}}},
		{"unknown root key", lines(append([]string{`stat_dir = "/x"`}, listener...)...),
			[]want{{1, `unknown key "stat_dir" (did you mean "state_dir"?)`}}},
		{"unknown key in limits", withListener(`[limits]`, `idle_timout = "5m"`),
			[]want{{8, `unknown key "idle_timout" in [limits] (did you mean "idle_timeout"?)`}}},
		{"unknown key without suggestion", withListener(`frobnicate = true`),
			[]want{{7, `unknown key "frobnicate" in [[listener.route]]`}}},
		{"unknown table", withListener(`[upstreams.lan]`, `urls = ["http://a"]`),
			[]want{{7, `unknown key "upstreams" (did you mean "upstream"?)`}}},
		{"unknown key in second route", withListener(`[[listener.route]]`, `path = "/x"`, `upstream = "embedded"`, `client_aut = "off"`),
			[]want{{10, `unknown key "client_aut" in [[listener.route]] (did you mean "client_auth"?)`}}},

		// [log], [limits], [admin]
		{"log level", withListener(`[log]`, `level = "verbose"`, `format = "xml"`),
			[]want{{8, `level in [log]: invalid value "verbose" (want "debug", "info", "warn" or "error")`},
				{9, `format in [log]: invalid value "xml" (want "text" or "json")`}}},
		{"bad duration", withListener(`[limits]`, `idle_timeout = "5x"`),
			[]want{{8, `idle_timeout in [limits]: invalid duration "5x"`}}},
		{"zero duration", withListener(`[limits]`, `handshake_timeout = "0s"`),
			[]want{{8, `handshake_timeout in [limits]: must be greater than 0, got "0s"`}}},
		{"negative duration", withListener(`[limits]`, `shutdown_grace = "-1s"`),
			[]want{{8, `shutdown_grace in [limits]: must be greater than 0, got "-1s"`}}},
		{"duration as number", withListener(`[limits]`, `request_timeout = 10`),
			[]want{{8, `request_timeout in [limits]: want a duration string like "10s", got integer 10`}}},
		{"zero max_sessions", withListener(`[limits]`, `max_sessions = 0`),
			[]want{{8, `max_sessions in [limits]: must be between 1 and 2147483647, got 0`}}},
		{"max_message_size too large", withListener(`[limits]`, `max_message_size = 65534`),
			[]want{{8, `max_message_size in [limits]: 65534 is larger than 65533`}}},
		{"admin address", withListener(`[admin]`, `address = "localhost"`),
			[]want{{8, `address in [admin]: invalid address "localhost": missing port in address`}}},

		// [[listener]]
		{"no listener", lines(`[log]`, `level = "debug"`),
			[]want{{0, `no [[listener]] defined: at least one is required`}}},
		{"missing name and address", lines(`[[listener]]`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{1, `missing required key "name" in [[listener]]`}, {1, `missing required key "address" in [[listener]]`}}},
		{"empty name", lines(`[[listener]]`, `name = ""`, `address = ":1"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{2, `name in [[listener]]: must not be empty`}}},
		{"duplicate name", withListener(listener...),
			[]want{{8, `name in [[listener]]: duplicate listener name "a" (first at line 2)`}, {9, `port 1 is already used`}}},
		{"address without port", lines(`[[listener]]`, `name = "a"`, `address = "8443"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{3, `address in [[listener]]: invalid address "8443": missing port in address`}}},
		{"address bad port", lines(`[[listener]]`, `name = "a"`, `address = ":99999"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{3, `address in [[listener]]: invalid port "99999" in address ":99999"`}}},
		{"unknown certs", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "deb"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `[certs.dev]`, `dev = true`),
			[]want{{4, `tls in [[listener]]: no [certs.deb] block (did you mean "dev"?)`}}},
		{"no route", lines(`[[listener]]`, `name = "a"`, `address = ":1"`),
			[]want{{1, `missing [[listener.route]] in [[listener]]: a listener needs at least one route`}}},

		// [[listener.route]]
		{"missing path and upstream", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `[[listener.route]]`, `client_auth = "off"`),
			[]want{{4, `missing required key "path" in [[listener.route]]`}, {4, `missing required key "upstream" in [[listener.route]]`}}},
		{"relative path", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `[[listener.route]]`, `path = "smq"`, `upstream = "embedded"`),
			[]want{{5, `path in [[listener.route]]: invalid path "smq" (want an absolute path`}}},
		{"duplicate path", withListener(`[[listener.route]]`, `path = "/"`, `upstream = "embedded"`),
			[]want{{8, `path in [[listener.route]]: duplicate path "/" in this listener (first at line 5)`}}},
		{"unknown upstream", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `[[listener.route]]`, `path = "/"`, `upstream = "lam"`, `[upstream.lan]`, `urls = ["http://a"]`),
			[]want{{6, `upstream in [[listener.route]]: no [upstream.lam] block, and not "embedded" (did you mean "lan"?)`}}},
		{"client_auth value", withListener(`client_auth = "maybe"`),
			[]want{{7, `client_auth in [[listener.route]]: invalid value "maybe" (want "off", "optional" or "require")`}}},
		{"client_auth on plain listener", withListener(`client_auth = "require"`, `client_ca = ["ca.pem"]`),
			[]want{{7, `client_auth in [[listener.route]]: "require" needs a TLS listener: this [[listener]] has no tls`}}},
		{"client_auth without client_ca", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `client_auth = "optional"`, `[certs.d]`, `dev = true`),
			[]want{{5, `client_ca in [[listener.route]]: required with client_auth "optional" (or set pins)`}}},
		{"allow list with client_auth off", withListener(`allow_cn = ["device-*"]`, `pins = ["sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]`),
			[]want{{7, `allow_cn in [[listener.route]]: has no effect with client_auth "off"`}, {8, `pins in [[listener.route]]: has no effect with client_auth "off"`}}},
		{"client_ca missing file", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `client_auth = "require"`, `client_ca = ["ca.pem", "nope.pem"]`, `[certs.d]`, `dev = true`),
			[]want{{9, `client_ca in [[listener.route]]: cannot read "`}}},
		{"client_ca directory", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `client_auth = "require"`, `client_ca = ["adir"]`, `[certs.d]`, `dev = true`),
			[]want{{9, `is a directory, not a file`}}},
		{"bad pins", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `client_auth = "require"`,
			`pins = ["sha1:AAAA", "sha256:AAAA", "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]`, `[certs.d]`, `dev = true`),
			[]want{{9, `pins in [[listener.route]]: invalid pin "sha1:AAAA" (want "sha256:" and the base64 of a 32-byte SPKI hash)`}, {9, `invalid pin "sha256:AAAA"`}}},
		{"empty allow pattern", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `client_auth = "require"`,
			`client_ca = ["ca.pem"]`, `allow_uri = ["spiffe://example.org/device/*", ""]`, `[certs.d]`, `dev = true`),
			[]want{{10, `allow_uri in [[listener.route]]: empty pattern`}}},
		{"bad origins", withListener(`allowed_origins = ["https://ok.example.com", "*", "app.example.com", "https://a.example.com/path"]`),
			[]want{{7, `allowed_origins in [[listener.route]]: invalid origin "app.example.com"`}, {7, `invalid origin "https://a.example.com/path"`}}},

		// [upstream.NAME]
		{"upstream embedded reserved", withListener(`[upstream.embedded]`, `urls = ["http://a"]`),
			[]want{{7, `[upstream.embedded]: the name "embedded" is reserved for the in-process broker`}}},
		{"upstream without urls", withListener(`[upstream.lan]`, `proxy = "env"`),
			[]want{{7, `missing required key "urls" in [upstream.lan]`}}},
		{"upstream empty urls", withListener(`[upstream.lan]`, `urls = []`),
			[]want{{8, `urls in [upstream.lan]: must not be empty`}}},
		{"upstream url forms", withListener(`[upstream.lan]`, `urls = ["ftp://a/x", "http:///x", "ws://a/x", "wss://a:443/x",`, `  "https://a:70000/x"]`),
			[]want{{8, `urls in [upstream.lan]: unsupported scheme "ftp" in "ftp://a/x" (want "http", "ws", "https" or "wss")`},
				{8, `urls in [upstream.lan]: no host in "http:///x"`},
				{9, `urls in [upstream.lan]: invalid port "70000" in "https://a:70000/x"`}}},
		{"upstream durations", withListener(`[upstream.lan]`, `urls = ["http://a"]`, `dial_timeout = "soon"`, `backoff = "0"`),
			[]want{{9, `dial_timeout in [upstream.lan]: invalid duration "soon"`}, {10, `backoff in [upstream.lan]: must be greater than 0, got "0"`}}},
		{"proxy scheme", withListener(`[upstream.lan]`, `urls = ["http://a"]`, `proxy = "ftp://proxy:21"`),
			[]want{{9, `proxy in [upstream.lan]: unsupported proxy "ftp://proxy:21" (want "", "env", or a URL with scheme "http", "https", "socks5" or "socks5h")`}}},
		{"proxy form", withListener(`[upstream.a]`, `urls = ["http://a"]`, `proxy = "socks5://"`, `[upstream.b]`, `urls = ["http://a"]`, `proxy = "http://p:3128/x"`),
			[]want{{9, `proxy in [upstream.a]: no host in "socks5://"`}, {12, `proxy in [upstream.b]: proxy URL "http://p:3128/x" must not have a path`}}},

		{"upstream tls keys without tls", withListener(`[upstream.a]`, `urls = ["http://a"]`, `ca_file = "ca.pem"`, `server_name = "a.example"`),
			[]want{{9, `ca_file in [upstream.a]: has no effect: no URL of this upstream uses TLS`}, {10, `server_name in [upstream.a]: has no effect`}}},
		{"upstream tls keys", withListener(`[upstream.a]`, `urls = ["wss://a"]`, `cert_file = "cert.pem"`, `ca_file = "gone.pem"`, `server_name = "bad name"`),
			[]want{{7, `missing required key "key_file" in [upstream.a]: cert_file needs it`}, {10, `ca_file in [upstream.a]: cannot read`}, {11, `server_name in [upstream.a]: invalid name "bad name"`}}},
		{"same port twice", lines(`[[listener]]`, `name = "a"`, `address = ":8443"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`,
			`[[listener]]`, `name = "b"`, `address = "127.0.0.1:8443"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`,
			`[admin]`, `address = "127.0.0.1:9000"`, `[[listener]]`, `name = "c"`, `address = "127.0.0.2:9000"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`,
			`[certs.le]`, `acme_domains = ["gw.example.com"]`, `acme_http_address = "0.0.0.0:9000"`),
			[]want{{9, `address in [[listener]]: address "127.0.0.1:8443": port 8443 is already used by address in [[listener]] (first at line 3)`},
				{23, `acme_http_address in [certs.le]: address "0.0.0.0:9000": port 9000 is already used by address in [[listener]] (first at line 17)`}}},
		{"acme renew too early", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_renew_before = "1000h"`),
			[]want{{9, `acme_renew_before in [certs.x]: 1000h0m0s is more than 720h`}}},
		// [certs.NAME]
		{"certs without source", withListener(`[certs.x]`, `hosts = ["localhost"]`),
			[]want{{7, `missing required keys "cert_file" and "key_file" in [certs.x] (or set acme_domains, or dev = true)`}, {8, `hosts in [certs.x]: only used with dev = true`}}},
		{"certs without key", withListener(`[certs.x]`, `cert_file = "cert.pem"`),
			[]want{{7, `missing required key "key_file" in [certs.x]: cert_file needs it`}}},
		{"certs missing files", withListener(`[certs.x]`, `cert_file = "gone.pem"`, `key_file = "/nonexistent/key.pem"`),
			[]want{{8, `cert_file in [certs.x]: cannot read "`}, {9, `key_file in [certs.x]: cannot read "/nonexistent/key.pem": no such file or directory`}}},
		{"dev with files", withListener(`[certs.x]`, `dev = true`, `cert_file = "cert.pem"`, `key_file = "key.pem"`),
			[]want{{9, `cert_file in [certs.x]: not allowed with dev = true`}, {10, `key_file in [certs.x]: not allowed with dev = true`}}},
		{"dev hosts", withListener(`[certs.x]`, `dev = true`, `hosts = ["localhost", "::1", "*.example.com", "bad host", "-x.example"]`),
			[]want{{9, `hosts in [certs.x]: invalid host "bad host" (want a DNS name or an IP address)`}, {9, `invalid host "-x.example"`}}},
		{"dev empty hosts", withListener(`[certs.x]`, `dev = true`, `hosts = []`),
			[]want{{9, `hosts in [certs.x]: must not be empty with dev = true`}}},
		{"pair without key", withListener(`[certs.x]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`, `[[certs.x.pair]]`, `cert_file = "cert.pem"`, `[[certs.x.pair]]`, `cert_file = "gone.pem"`, `key_file = "key.pem"`),
			[]want{{10, `missing required key "key_file"`}, {13, `cannot read "`}}},
		{"dev with pair", withListener(`[certs.x]`, `dev = true`, `[[certs.x.pair]]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`),
			[]want{{9, `pair in [certs.x]: not allowed with dev = true`}}},
		{"acme domains", withListener(`[certs.x]`, `acme_domains = ["*.example.com", "10.0.0.1", "nodot", "bad name.example", "gw.example.com"]`),
			[]want{{8, `wildcard "*.example.com" needs the DNS-01 challenge, not tls-alpn-01 (the default): set acme_challenge = "dns-01"`}, {8, `"10.0.0.1" is an IP address`},
				{8, `invalid domain "nodot"`}, {8, `invalid domain "bad name.example"`}}},
		{"acme with files", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`),
			[]want{{8, `acme_domains in [certs.x]: not allowed with cert_file, key_file or [[pair]]`}}},
		{"acme with dev", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `dev = true`),
			[]want{{8, `acme_domains in [certs.x]: not allowed with dev = true`}}},
		{"acme keys without domains", withListener(`[certs.x]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`, `acme_email = "ops@example.com"`, `acme_renew_before = "240h"`),
			[]want{{10, `acme_email in [certs.x]: only used with acme_domains`}, {11, `acme_renew_before in [certs.x]: only used with acme_domains`}}},
		{"acme values", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_email = "ops"`, `acme_directory = "http://ca.example/dir"`,
			`acme_directory_ca = "gone.pem"`, `acme_eab_kid = "kid-1"`, `acme_http_address = "80"`),
			[]want{{9, `acme_email in [certs.x]: invalid address "ops"`}, {10, `acme_directory in [certs.x]: invalid directory URL "http://ca.example/dir" (want https://`},
				{11, `acme_directory_ca in [certs.x]: cannot read`}, {12, `acme_eab_kid in [certs.x]: acme_eab_key is missing`}, {13, `acme_http_address in [certs.x]: invalid address "80"`}}},
		{"acme eab key", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_eab_kid = "kid-1"`, `acme_eab_key = "!!not base64!!"`),
			[]want{{10, `acme_eab_key in [certs.x]: invalid key: want the base64url HMAC key the CA gave`}}},
		{"acme unknown key", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_emial = "ops@example.com"`),
			[]want{{9, `acme_emial`}}},
		{"client_crl without client_ca", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`, `client_auth = "require"`,
			`pins = ["sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]`, `client_crl = ["ca.pem"]`, `[certs.d]`, `dev = true`),
			[]want{{10, `client_crl in [[listener.route]]: needs client_ca`}}},
		{"client_crl off and missing", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `tls = "d"`, `[[listener.route]]`, `path = "/"`, `upstream = "embedded"`,
			`client_crl = ["gone.crl"]`, `[certs.d]`, `dev = true`),
			[]want{{8, `client_crl in [[listener.route]]: has no effect with client_auth "off"`}, {8, `cannot read "`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, name := testDir(t)
			c, err := config.Parse([]byte(tt.src), name)
			if err == nil {
				t.Fatalf("Parse succeeded, want %d problems; config: %+v", len(tt.want), c)
			}
			if c != nil {
				t.Errorf("Parse returned a Config with an error")
			}
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				p := got[i]
				if p.Line != w.line || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = line %d %q\nwant line %d containing %q", i, p.Line, p.Msg, w.line, w.msg)
				}
				if p.File != name {
					t.Errorf("problem %d: File = %q, want %q", i, p.File, name)
				}
				if w.line > 0 && p.Col == 0 {
					t.Errorf("problem %d: no column", i)
				}
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	src := lines(
		`[limits]`,               // 1
		`idle_timeout = "soon"`,  // 2
		``,                       // 3
		`[[listener]]`,           // 4
		`name = "edge"`,          // 5
		`  adress = ":8443"`,     // 6
		`  [[listener.route]]`,   // 7
		`  path = "/smq"`,        // 8
		`  upstream = "lan"`,     // 9
		`  client_auth = "yes"`,  // 10
		``,                       // 11
		`[upstream.lan]`,         // 12
		`urls = ["gopher://x"]`,  // 13
		`proxy = "socks5://p:1"`, // 14
	)
	_, err := config.Parse([]byte(src), "gw.toml")
	want := strings.Join([]string{
		`gw.toml:2:1: idle_timeout in [limits]: invalid duration "soon" (want a number and a unit: "500ms", "10s", "30m", "1h")`,
		`gw.toml:4:1: missing required key "address" in [[listener]]`,
		`gw.toml:6:3: unknown key "adress" in [[listener]] (did you mean "address"?)`,
		`gw.toml:10:3: client_auth in [[listener.route]]: invalid value "yes" (want "off", "optional" or "require")`,
		`gw.toml:13:9: urls in [upstream.lan]: unsupported scheme "gopher" in "gopher://x" (want "http", "ws", "https" or "wss")`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
	ps := problems(t, err)
	if got := ps[2]; got.Key != "listener.0.adress" || got.Line != 6 || got.Col != 3 {
		t.Errorf("unknown key problem = %+v", got)
	}
	if got := ps[4].Key; got != "upstream.lan.urls.0" {
		t.Errorf("url problem key = %q", got)
	}
}

func TestSyntaxErrorPosition(t *testing.T) {
	t.Parallel()
	src := lines(
		`[[listener]]`,
		`name = "a"`,
		`address = :8443`,
	)
	_, err := config.Parse([]byte(src), "x.toml")
	ps := problems(t, err)
	if len(ps) != 1 || ps[0].Line != 3 || ps[0].Col != 11 || !strings.HasPrefix(err.Error(), "x.toml:3:11: invalid TOML: ") {
		t.Errorf("got %v (%+v), want x.toml:3:11: invalid TOML: ...", err, ps)
	}
}

func TestUnknownPositionFallback(t *testing.T) {
	t.Parallel()
	p := config.Problem{File: "f.toml", Key: "listener.0.route.1.foo", Msg: "m"}
	if got, want := p.String(), `f.toml: key "listener.0.route.1.foo": m`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	p = config.Problem{File: "f.toml", Line: 3, Col: 7, Key: "k", Msg: "m"}
	if got, want := p.String(), `f.toml:3:7: m`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestDefaultsApplied(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw:/var/lib/other")
	dir, name := testDir(t)
	src := lines(
		`[[listener]]`,
		`name = "edge"`,
		`address = ":8443"`,
		`tls = "files"`,
		`[[listener.route]]`,
		`path = "/smq"`,
		`upstream = "lan"`,
		`client_auth = "require"`,
		`client_ca = ["ca.pem", "./adir/../ca.pem"]`,
		`[[listener.route]]`,
		`path = "/"`,
		`upstream = "embedded"`,
		`[upstream.lan]`,
		`urls = ["http://10.0.0.5/smq.lsp"]`,
		`[certs.files]`,
		`cert_file = "cert.pem"`,
		`key_file = "`+filepath.Join(dir, "key.pem")+`"`,
		`[certs.dev]`,
		`dev = true`,
	)
	c, err := config.Parse([]byte(src), name)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/smqgw" {
		t.Errorf("StateDir = %q, want the first entry of $STATE_DIRECTORY", c.StateDir)
	}
	if c.Log != (config.Log{Format: "text"}) {
		t.Errorf("Log = %+v", c.Log)
	}
	wantLimits := limits.Limits{
		HandshakeTimeout: 10 * time.Second,
		RequestTimeout:   10 * time.Second,
		ConnectTimeout:   10 * time.Second,
		IdleTimeout:      30 * time.Minute,
		WSPingInterval:   30 * time.Second,
		MaxSessions:      10000,
		MaxMessageSize:   65533,
		ShutdownGrace:    10 * time.Second,
		WriteTimeout:     30 * time.Second,
		MaxSessionsPerIP: 1000,
		SessionRatePerIP: 50,
		MessageRate:      10000,
		MessageRatePerIP: 20000,
		MaxPending:       4096,
		MaxPendingPerIP:  100,
		// max_sessions_per_ip and max_pending_per_ip
		MaxConnectionsPerIP: 1100,
	}
	if c.Limits != wantLimits {
		t.Errorf("Limits = %+v, want %+v", c.Limits, wantLimits)
	}
	if c.Admin.Address != "" {
		t.Errorf("Admin.Address = %q", c.Admin.Address)
	}
	r := c.Listeners[0].Routes
	if r[0].ClientAuth != tlsterm.Require || r[1].ClientAuth != tlsterm.Off {
		t.Errorf("ClientAuth = %q, %q", r[0].ClientAuth, r[1].ClientAuth)
	}
	ca := filepath.Join(dir, "ca.pem")
	if !reflect.DeepEqual(r[0].ClientCA, []string{ca, ca}) {
		t.Errorf("ClientCA = %q, want absolute %q twice", r[0].ClientCA, ca)
	}
	if u := c.Upstreams["lan"]; u.Name != "lan" || u.DialTimeout != 5*time.Second || u.Backoff != 5*time.Second || u.Proxy != "" {
		t.Errorf("upstream = %+v", u)
	}
	if f := c.Certs["files"]; f.CertFile != filepath.Join(dir, "cert.pem") || f.KeyFile != filepath.Join(dir, "key.pem") || f.Dev || f.Hosts != nil {
		t.Errorf("certs files = %+v", f)
	}
	if d := c.Certs["dev"]; !reflect.DeepEqual(d.Hosts, []string{"localhost", "127.0.0.1", "::1"}) {
		t.Errorf("dev hosts = %q", d.Hosts)
	}
}

func TestExplicitValues(t *testing.T) {
	t.Parallel()
	dir, name := testDir(t)
	src := withListener(
		`[log]`,
		`level = "debug"`,
		`format = "json"`,
		`[limits]`,
		`handshake_timeout = "1s"`,
		`request_timeout = "2s"`,
		`connect_timeout = "3s"`,
		`idle_timeout = "4m"`,
		`ws_ping_interval = "5s"`,
		`max_sessions = 6`,
		`max_message_size = 7000`,
		`shutdown_grace = "8s"`,
		`write_timeout = "12s"`,
		`max_sessions_per_ip = 13`,
		`session_rate_per_ip = 14`,
		`message_rate = 15`,
		`max_pending = 16`,
		`max_pending_per_ip = 17`,
		`max_connections_per_ip = 18`,
		`message_rate_per_ip = 19`,
		`[admin]`,
		`address = "127.0.0.1:9090"`,
		`[upstream.x]`,
		`urls = ["ws://a/x", "wss://b/x", "https://c/x"]`,
		`dial_timeout = "9s"`,
		`backoff = "1m"`,
		`proxy = "socks5h://user:pw@p:1080"`,
	)
	src = `state_dir = "state"` + "\n" + src
	c, err := config.Parse([]byte(src), name)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != filepath.Join(dir, "state") {
		t.Errorf("StateDir = %q, want it relative to the config file", c.StateDir)
	}
	if c.Log.Level.String() != "DEBUG" || c.Log.Format != "json" {
		t.Errorf("Log = %+v", c.Log)
	}
	want := limits.Limits{HandshakeTimeout: time.Second, RequestTimeout: 2 * time.Second, ConnectTimeout: 3 * time.Second,
		IdleTimeout: 4 * time.Minute, WSPingInterval: 5 * time.Second, MaxSessions: 6, MaxMessageSize: 7000,
		ShutdownGrace: 8 * time.Second, WriteTimeout: 12 * time.Second, MaxSessionsPerIP: 13, SessionRatePerIP: 14, MessageRate: 15,
		MaxPending: 16, MaxPendingPerIP: 17, MaxConnectionsPerIP: 18, MessageRatePerIP: 19}
	if c.Limits != want {
		t.Errorf("Limits = %+v, want %+v", c.Limits, want)
	}
	if c.Admin.Address != "127.0.0.1:9090" {
		t.Errorf("Admin = %+v", c.Admin)
	}
	u := c.Upstreams["x"]
	if len(u.URLs) != 3 || u.DialTimeout != 9*time.Second || u.Backoff != time.Minute || u.Proxy != "socks5h://user:pw@p:1080" {
		t.Errorf("upstream = %+v", u)
	}
}

func TestStateDirDefaults(t *testing.T) {
	tests := []struct {
		name, stateDir, xdg, home, want string
	}{
		{"systemd", "/run/state/smqgw", "/x", "/home/u", "/run/state/smqgw"},
		{"xdg", "", "/x/state", "/home/u", "/x/state/smqgw"},
		{"home", "", "", "/home/u", "/home/u/.local/state/smqgw"},
		{"relative env ignored", "rel", "rel", "/home/u", "/home/u/.local/state/smqgw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STATE_DIRECTORY", tt.stateDir)
			t.Setenv("XDG_STATE_HOME", tt.xdg)
			t.Setenv("HOME", tt.home)
			if got := config.Default().StateDir; got != tt.want {
				t.Errorf("StateDir = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNoStateDir(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "")
	_, name := testDir(t)
	// Without dev certificates, no state directory is needed.
	if _, err := config.Parse([]byte(withListener()), name); err != nil {
		t.Errorf("Parse without dev certs: %v", err)
	}
	_, err := config.Parse([]byte(withListener(`[certs.d]`, `dev = true`)), name)
	ps := problems(t, err)
	if len(ps) != 1 || ps[0].Key != "state_dir" || !strings.Contains(ps[0].Msg, "state_dir: not set, and no default") {
		t.Errorf("got %v", err)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir, name := testDir(t)
	if err := os.WriteFile(name, []byte(withListener(`[certs.c]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Certs["c"].CertFile; got != filepath.Join(dir, "cert.pem") {
		t.Errorf("CertFile = %q", got)
	}

	_, err = config.Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: open ") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestDefault(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	c := config.Default()
	if len(c.Listeners) != 2 {
		t.Fatalf("Listeners = %+v", c.Listeners)
	}
	tl, lan := c.Listeners[0], c.Listeners[1]
	if tl.Name != "tls" || tl.Address != "127.0.0.1:8443" || tl.TLS != "dev" ||
		len(tl.Routes) != 1 || tl.Routes[0].Path != "/" || tl.Routes[0].Upstream != config.Embedded || tl.Routes[0].ClientAuth != tlsterm.Off {
		t.Errorf("tls listener = %+v", tl)
	}
	if lan.Name != "lan" || lan.Address != "127.0.0.1:9000" || lan.TLS != "" || len(lan.Routes) != 1 || lan.Routes[0].Path != "/" {
		t.Errorf("lan listener = %+v", lan)
	}
	if d := c.Certs["dev"]; d == nil || !d.Dev || !reflect.DeepEqual(d.Hosts, []string{"localhost", "127.0.0.1", "::1"}) {
		t.Errorf("dev certs = %+v", d)
	}
	if c.Limits.IdleTimeout != limits.DefaultIdleTimeout || c.Log.Format != "text" || c.StateDir != "/var/lib/smqgw" {
		t.Errorf("defaults not applied: %+v", c)
	}
	// Default returns a fresh value each time.
	c.Certs["dev"].Hosts[0] = "changed"
	if config.Default().Certs["dev"].Hosts[0] != "localhost" {
		t.Error("Default shares state between calls")
	}
}

func TestCertsKinds(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	dir, name := testDir(t)
	src := lines(
		`watch_interval = "2s"`,
		`[[listener]]`,
		`name = "edge"`,
		`address = ":443"`,
		`tls = "acme"`,
		`[[listener.route]]`,
		`path = "/"`,
		`upstream = "embedded"`,
		`client_auth = "optional"`,
		`client_ca = ["ca.pem"]`,
		`client_crl = ["ca.pem"]`,
		`[certs.acme]`,
		`acme_domains = ["gw.example.com", "b.example.com"]`,
		`acme_email = "ops@example.com"`,
		`acme_eab_kid = "kid-1"`,
		`acme_eab_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"`,
		`acme_http_address = ":80"`,
		`acme_renew_before = "240h"`,
		`[certs.files]`,
		`cert_file = "cert.pem"`,
		`key_file = "key.pem"`,
		`[[certs.files.pair]]`,
		`cert_file = "cert.pem"`,
		`key_file = "key.pem"`,
	)
	c, err := config.Parse([]byte(src), name)
	if err != nil {
		t.Fatal(err)
	}
	if c.WatchInterval != 2*time.Second {
		t.Errorf("WatchInterval = %v", c.WatchInterval)
	}
	a := c.Certs["acme"]
	if !a.ACME() || a.ACMEDirectory != config.DefaultACMEDirectory || a.ACMEEmail != "ops@example.com" ||
		a.ACMEEABKeyID != "kid-1" || a.ACMEHTTPAddress != ":80" || a.ACMERenewBefore != 240*time.Hour ||
		!reflect.DeepEqual(a.ACMEDomains, []string{"gw.example.com", "b.example.com"}) {
		t.Errorf("acme = %+v", a)
	}
	if k := a.ACMEEABKey; len(k) != 48 {
		t.Errorf("ACMEEABKey = %d bytes", len(k))
	}
	f := c.Certs["files"]
	want := []config.CertPair{{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}}
	if f.ACME() || !reflect.DeepEqual(f.Pairs, want) {
		t.Errorf("files = %+v", f)
	}
	if crl := c.Listeners[0].Routes[0].ClientCRL; !reflect.DeepEqual(crl, []string{filepath.Join(dir, "ca.pem")}) {
		t.Errorf("ClientCRL = %q", crl)
	}

	d := config.Default()
	if d.WatchInterval != certs.DefaultWatchInterval {
		t.Errorf("Default().WatchInterval = %v", d.WatchInterval)
	}
}
