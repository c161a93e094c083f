package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/apptest"
)

// TestConsoleServed: a route with console = true serves the page and its
// scripts at its own path, with a strict Content-Security-Policy; other
// routes do not.
func TestConsoleServed(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), `
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
  console = true
  [[listener.route]]
  path = "/plain"
  upstream = "embedded"
`)
	base := "http://" + b.GW.Addr("lan").String()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/smq", "text/html; charset=utf-8", `<script type="module" src="?console=console.js">`},
		{"/smq?console=console.js", "text/javascript; charset=utf-8", `import(location.pathname + "?console=smq.js")`},
		{"/smq?console=smq.js", "text/javascript; charset=utf-8", "export async function connect("},
	} {
		resp, body := get(tc.path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %s %q", tc.path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") ||
			!strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("%s: CSP %q", tc.path, csp)
		}
	}
	if resp, _ := get("/smq?console=../../etc/passwd"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown console file: %s", resp.Status)
	}
	if resp, _ := get("/plain"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a route without the console: %s", resp.Status)
	}
}
