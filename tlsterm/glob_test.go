package tlsterm

import (
	"regexp"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		yes     []string
		no      []string
	}{
		{"device-1", []string{"device-1"}, []string{"device-10", "device-", "Device-1", "xdevice-1", ""}},
		{"*", []string{"", "a", "a.b/c:d", "*"}, nil},
		{"**", []string{"", "abc"}, nil},
		{"device-*", []string{"device-", "device-1", "device-1.lab", "device-a/b"}, []string{"device", "Device-1", "sensor-1", "xdevice-1"}},
		{"*-1", []string{"-1", "device-1", "a.b-1"}, []string{"device-10", "device-1 "}},
		{"*.example.com", []string{".example.com", "a.example.com", "a.b.example.com"}, []string{"example.com", "a.example.com.evil", "aexample.com"}},
		{"spiffe://example.org/device/*", []string{"spiffe://example.org/device/", "spiffe://example.org/device/42", "spiffe://example.org/device/a/b"},
			[]string{"spiffe://example.org/device", "spiffe://example.org/gateway/1", "spiffe://example.org.evil/device/1"}},
		{"a*b*c", []string{"abc", "aXbYc", "abbc", "acbc", "abcbc"}, []string{"ab", "bc", "acb", "abcd", "xabc"}},
		{"a*a", []string{"aa", "aaa", "aba"}, []string{"a", "ab"}},
		{"ab*ba", []string{"abba", "abxba", "ababa"}, []string{"aba", "abab"}},
		{"a*b*b", []string{"abb", "abxb", "abbb"}, []string{"ab", "abba"}},
		{"*a*", []string{"a", "xax", "aaa"}, []string{"", "xyz"}},
		{`\*`, []string{"*"}, []string{"", "a", `\*`}},
		{`dev\*-*`, []string{"dev*-", "dev*-1"}, []string{"dev-1", "devX-1"}},
		{`a\\b`, []string{`a\b`}, []string{"ab", `a\\b`}},
		{`what\?`, []string{"what?"}, []string{"whatX", "what"}},
		{`\[x\]*`, []string{"[x]", "[x]1"}, []string{"x", "[x"}},
		{"gerät-*", []string{"gerät-", "gerät-7"}, []string{"gerat-7"}},
		{"*ü", []string{"ü", "müü"}, []string{"u", "ü!"}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			g, err := compileGlob(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.yes {
				if !g.match(s) {
					t.Errorf("%q does not match %q", tt.pattern, s)
				}
			}
			for _, s := range tt.no {
				if g.match(s) {
					t.Errorf("%q matches %q", tt.pattern, s)
				}
			}
		})
	}
}

func TestGlobErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ pattern, err string }{
		{"", "empty pattern"},
		{"\xff", "pattern is not valid UTF-8"},
		{`a\`, `pattern ends in a lone \`},
		{`\a`, `\a is not an escape: only \*, \\, \?, \[ and \] are`},
		{`\.`, `\. is not an escape: only \*, \\, \?, \[ and \] are`},
		{`x\ü`, `\ü is not an escape: only \*, \\, \?, \[ and \] are`},
		{"dev?", `only * is a wildcard: write \? for a literal ?`},
		{"[a-z]*", `only * is a wildcard: write \[ for a literal [`},
		{"a]", `only * is a wildcard: write \] for a literal ]`},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			_, err := compileGlob(tt.pattern)
			if err == nil || err.Error() != tt.err {
				t.Errorf("error %v, want %q", err, tt.err)
			}
		})
	}
}

// TestGlobExhaustive compares match with a regular expression built from the
// documented syntax, for every pattern up to 4 characters over {a, b, ., *}
// and every name up to 6 characters over {a, b, .}.
func TestGlobExhaustive(t *testing.T) {
	t.Parallel()
	patterns := strings.Split(words("ab.*", 4), "\n")
	names := strings.Split(words("ab.", 6), "\n")
	checks := 0
	for _, p := range patterns {
		g, err := compileGlob(p)
		if p == "" {
			if err == nil {
				t.Error("empty pattern compiled")
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		re := regexp.MustCompile(`^(?s:` + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, `.*`) + `)$`)
		for _, n := range names {
			if got, want := g.match(n), re.MatchString(n); got != want {
				t.Fatalf("%q on %q: match %v, want %v", p, n, got, want)
			}
			checks++
		}
	}
	t.Logf("%d checks", checks)
}

// words returns every string of at most n characters over alphabet, one a
// line, starting with the empty string.
func words(alphabet string, n int) string {
	all := []string{""}
	level := []string{""}
	for range n {
		var next []string
		for _, w := range level {
			for _, c := range alphabet {
				next = append(next, w+string(c))
			}
		}
		all = append(all, next...)
		level = next
	}
	return strings.Join(all, "\n")
}

func TestNotAllowed(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 70)
	tests := []struct {
		names []string
		want  string
	}{
		{nil, "none"},
		{[]string{"a"}, `OU "a" not allowed`},
		{[]string{"a", "b"}, `OUs "a", "b" not allowed`},
		{[]string{"a", "b", "c", "d", "e"}, `OUs "a", "b", "c" and 2 more not allowed`},
		{[]string{"tab\there"}, `OU "tab\there" not allowed`},
		{[]string{long}, `OU "` + strings.Repeat("x", 64) + `..." not allowed`},
		{[]string{strings.Repeat("x", 63) + "ü"}, `OU "` + strings.Repeat("x", 63) + `..." not allowed`},
	}
	for _, tt := range tests {
		if got := notAllowed("OU", "OUs", "none", tt.names); got != tt.want {
			t.Errorf("notAllowed(%q) = %q, want %q", tt.names, got, tt.want)
		}
	}
}
