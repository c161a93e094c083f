// Package browser drives Debian's headless Chromium for end-to-end tests
// through the DevTools protocol: a fresh profile and HOME per browser
// (with an NSS database for the CAs and client certificates it trusts),
// navigation, JavaScript evaluation and screenshots.
package browser

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Path is where Debian's chromium package puts the browser.
const Path = "/usr/bin/chromium"

// Require returns the Chromium binary, or skips the test without it
// (fails it when CI=true: .ci/run installs chromium and libnss3-tools).
func Require(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{Path, "certutil", "pk12util"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI (apt-get install chromium libnss3-tools)", tool)
			}
			t.Skipf("%s is not installed (apt-get install chromium libnss3-tools)", tool)
		}
	}
	return Path
}

// Home is a HOME directory with an NSS database ($HOME/.pki/nssdb), as
// Chromium on Linux reads it for trusted CAs and client certificates.
type Home struct {
	Dir string
	t   *testing.T
}

// NewHome makes a HOME with an empty NSS database.
func NewHome(t *testing.T) *Home {
	t.Helper()
	h := &Home{Dir: t.TempDir(), t: t}
	db := filepath.Join(h.Dir, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	h.nss("certutil", "-N", "-d", "sql:"+db, "--empty-password")
	return h
}

// nss runs an NSS tool on the database, with no input and a timeout.
func (h *Home) nss(tool string, args ...string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdin = nil // </dev/null: never wait for a password prompt
	cmd.Env = append(os.Environ(), "HOME="+h.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
}

func (h *Home) db() string { return "sql:" + filepath.Join(h.Dir, ".pki", "nssdb") }

// TrustCA makes the browser trust a CA (PEM file) for servers.
func (h *Home) TrustCA(name, pemFile string) {
	h.t.Helper()
	h.nss("certutil", "-A", "-d", h.db(), "-n", name, "-t", "C,,", "-i", pemFile)
}

// ImportClient imports a client certificate and key (PKCS#12 file).
func (h *Home) ImportClient(p12File, password string) {
	h.t.Helper()
	h.nss("pk12util", "-i", p12File, "-d", h.db(), "-W", password)
}

// PolicyDir is where Chromium reads managed policies on Linux.
const PolicyDir = "/etc/chromium/policies/managed"

// AutoSelectCertificate writes a policy that makes Chromium present a
// client certificate to pattern (an origin, "https://127.0.0.1:8443")
// without asking, and removes it when the test ends. It needs root.
func AutoSelectCertificate(t *testing.T, pattern string) {
	t.Helper()
	rule, _ := json.Marshal(map[string]any{"pattern": pattern, "filter": map[string]any{}})
	policy, _ := json.Marshal(map[string]any{"AutoSelectCertificateForUrls": []string{string(rule)}})
	if err := os.MkdirAll(PolicyDir, 0o755); err != nil {
		t.Fatalf("writing the Chromium policy (needs root): %v", err)
	}
	file := filepath.Join(PolicyDir, fmt.Sprintf("smqgw-test-%d.json", os.Getpid()))
	if err := os.WriteFile(file, policy, 0o644); err != nil {
		t.Fatalf("writing the Chromium policy (needs root): %v", err)
	}
	t.Cleanup(func() { os.Remove(file) })
}

// Browser is a running headless Chromium with one page.
type Browser struct {
	t *testing.T // failures are reported to it
	c *devtools
}

// devtools is the connection to the page.
type devtools struct {
	ws   *websocket.Conn
	next atomic.Int64
	mu   sync.Mutex // serialises calls
}

// With returns the browser reporting failures to t (a subtest's).
func (b *Browser) With(t *testing.T) *Browser { return &Browser{t: t, c: b.c} }

// Start runs headless Chromium with a fresh profile and HOME h, and
// attaches to its page.
func Start(t *testing.T, h *Home) *Browser {
	t.Helper()
	bin := Require(t)
	profile := t.TempDir()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+profile, "--remote-debugging-port=0",
		"--remote-debugging-address=127.0.0.1", "about:blank")
	cmd.Env = append(os.Environ(), "HOME="+h.Dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &Browser{t: t, c: &devtools{}}
	t.Cleanup(func() {
		if b.c.ws != nil {
			b.c.ws.Close()
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Chromium writes its port to DevToolsActivePort in the profile.
	var port string
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if err == nil && strings.Contains(string(data), "\n") {
			port = strings.SplitN(string(data), "\n", 2)[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromium did not start its DevTools endpoint:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://127.0.0.1:" + port + "/json/list")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var targets []struct{ Type, WebSocketDebuggerURL string }
	if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		if tg.Type == "page" {
			if b.c.ws, _, err = websocket.DefaultDialer.Dial(tg.WebSocketDebuggerURL, nil); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if b.c.ws == nil {
		t.Fatalf("chromium has no page: %+v", targets)
	}
	return b
}

// call sends one DevTools command and returns its result.
func (b *Browser) call(method string, params any) (json.RawMessage, error) {
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next.Add(1)
	if err := c.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		var m struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := c.ws.ReadJSON(&m); err != nil {
			return nil, err
		}
		if m.ID != id {
			continue // an event
		}
		if m.Error != nil {
			return nil, errors.New(m.Error.Message)
		}
		return m.Result, nil
	}
}

// Navigate loads url in the page and waits for it to load.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	if _, err := b.call("Page.navigate", map[string]any{"url": url}); err != nil {
		b.t.Fatalf("navigate %s: %v", url, err)
	}
	b.WaitTrue(`document.readyState === "complete"`, "the page to load")
}

// Eval evaluates a JavaScript expression (awaiting a promise) and returns
// its value as JSON.
func (b *Browser) Eval(expr string) (json.RawMessage, error) {
	res, err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return nil, err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, err
	}
	if e := r.ExceptionDetails; e != nil {
		return nil, fmt.Errorf("%s %s", e.Text, e.Exception.Description)
	}
	return r.Result.Value, nil
}

// String evaluates expr to a string.
func (b *Browser) String(expr string) string {
	b.t.Helper()
	v, err := b.Eval(expr)
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	var s string
	_ = json.Unmarshal(v, &s)
	return s
}

// Do runs a statement in the page.
func (b *Browser) Do(stmt string) {
	b.t.Helper()
	if _, err := b.Eval("(() => { " + stmt + " })()"); err != nil {
		b.t.Fatalf("%s: %v", stmt, err)
	}
}

// WaitTrue waits up to 20 s for a JavaScript condition.
func (b *Browser) WaitTrue(cond, what string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := b.Eval("!!(" + cond + ")")
		if err == nil && string(v) == "true" {
			return
		}
		if time.Now().After(deadline) {
			page, _ := b.Eval(`location.href + "\n" + document.body?.innerText`)
			b.t.Fatalf("timed out waiting for %s (%s): %v\npage: %s", what, cond, err, page)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Resize sets the page's viewport (CSS pixels), as a window of that size
// would have; the page lays itself out again.
func (b *Browser) Resize(width, height int) {
	b.t.Helper()
	if _, err := b.call("Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}); err != nil {
		b.t.Fatal(err)
	}
	b.WaitTrue(fmt.Sprintf("innerWidth === %d", width), "the page to take the new width")
}

// Screenshot returns a PNG of the page in a viewport of width × height.
func (b *Browser) Screenshot(width, height int) []byte {
	b.t.Helper()
	b.Resize(width, height)
	res, err := b.call("Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		b.t.Fatal(err)
	}
	var r struct{ Data string }
	if err := json.Unmarshal(res, &r); err != nil {
		b.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	return png
}
