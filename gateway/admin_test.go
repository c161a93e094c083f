package gateway_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// adminGet fetches path from the gateway's admin endpoint, started if need
// be, and returns the response and its body.
func adminGet(t *testing.T, gw *gateway.Gateway, path string) (*http.Response, string) {
	t.Helper()
	if gw.AdminAddr() == nil {
		if err := gw.StartAdmin("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + gw.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestReadiness: /healthz answers while the process lives; /readyz names
// each route without a reachable upstream and each expired certificate,
// is 200 once nothing is wrong, and 503 "shutting down" while sessions
// drain.
func TestReadiness(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	expired := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "old.example"},
		DNSNames: []string{"old.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	dead := smqtest.DeadAddr(t)
	broker := smqtest.Listen(t) // accepts, for the probe; never bootstraps
	b := apptest.Start(t, t.TempDir(), fmt.Sprintf(`
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "old"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  [[listener.route]]
  path = "/down"
  upstream = "dead"
  [[listener.route]]
  path = "/up"
  upstream = "alive"
[upstream.dead]
urls = ["http://%s/smq"]
[upstream.alive]
urls = ["ws://%s/smq", "http://%s/smq"]
[certs.old]
cert_file = %q
key_file = %q
`, dead, dead, broker.Addr(), expired.CertFile, expired.KeyFile))
	if resp, body := adminGet(t, b.GW, "/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %s %q", resp.Status, body)
	}
	resp, body := adminGet(t, b.GW, "/readyz")
	want := []string{
		"not ready:\n",
		`  listener "edge" route "/down": upstream dead unreachable: dial tcp ` + dead + ": connect: connection refused\n",
		`  certs old: certificate "old.example" expired at `,
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/readyz lacks %q:\n%s", w, body)
		}
	}
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, `"/up"`) || strings.Contains(body, `route "/":`) {
		t.Errorf("/readyz: %s\n%s", resp.Status, body)
	}

	good := ca.Server(t, "127.0.0.1")
	ok := apptest.Start(t, t.TempDir(), apptest.Listener("edge", "files")+apptest.Listener("lan", "")+apptest.CertFiles(good))
	if resp, body := adminGet(t, ok.GW, "/readyz"); resp.StatusCode != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz of a healthy gateway: %s %q", resp.Status, body)
	}
	// While a session drains, /readyz says so; the admin endpoint closes
	// after the last session.
	c := smqtest.Connect(t, ok.GW.Addr("lan").String(), "draining")
	admin := ok.GW.AdminAddr().String()
	done := make(chan error, 1)
	go func() { done <- ok.GW.Shutdown(context.Background()) }()
	if _, err := c.ReadFrame(smqtest.WaitFor); !smqtest.IsClosed(err) { // the drain's end of the stream
		t.Fatalf("draining client: %v, want the end of the stream", err)
	}
	if resp, body := adminGet(t, ok.GW, "/readyz"); resp.StatusCode != http.StatusServiceUnavailable || body != "not ready:\n  shutting down\n" {
		t.Errorf("/readyz while draining: %s %q", resp.Status, body)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if conn, err := net.Dial("tcp", admin); err == nil {
		conn.Close()
		t.Error("the admin endpoint is still open after shutdown")
	}
}
