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

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

// get fetches path from the gateway's admin endpoint.
func adminGet(t *testing.T, b *apptest.Running, path string) (int, string) {
	t.Helper()
	if b.GW.AdminAddr() == nil {
		if err := b.GW.StartAdmin("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + b.GW.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestReadiness: /healthz answers while the process lives; /readyz names
// each route without a reachable upstream and each expired certificate,
// is 200 once nothing is wrong, and 503 "shutting down" while sessions
// drain.
func TestReadiness(t *testing.T) {
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
	if code, body := adminGet(t, b, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	code, body := adminGet(t, b, "/readyz")
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
	if code != http.StatusServiceUnavailable || strings.Contains(body, `"/up"`) || strings.Contains(body, `route "/":`) {
		t.Errorf("/readyz: %d\n%s", code, body)
	}

	good := ca.Server(t, "127.0.0.1")
	ok := apptest.Start(t, t.TempDir(), fmt.Sprintf(`
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "good"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[certs.good]
cert_file = %q
key_file = %q
`, good.CertFile, good.KeyFile))
	if code, body := adminGet(t, ok, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz of a healthy gateway: %d %q", code, body)
	}
	// While a session drains, /readyz says so; the admin endpoint closes
	// after the last session.
	c := smqtest.Connect(t, ok.GW.Addr("lan").String(), "draining")
	admin := ok.GW.AdminAddr().String()
	done := make(chan error, 1)
	go func() { done <- ok.GW.Shutdown(context.Background()) }()
	c.ExpectType(smq.TypeDisconnect)
	if code, body := adminGet(t, ok, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready:\n  shutting down\n" {
		t.Errorf("/readyz while draining: %d %q", code, body)
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
