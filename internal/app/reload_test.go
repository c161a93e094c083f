package app_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/internal/app"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

func TestCertificateFilesReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	clientCA := testpki.NewCA(t)
	first, second := ca.Server(t, "127.0.0.1"), ca.Server(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	apptest.WriteFile(t, certFile, first.CertPEM)
	apptest.WriteFile(t, keyFile, first.KeyPEM)
	b := apptest.Start(t, dir, fmt.Sprintf(`
watch_interval = "20ms"
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  client_auth = "optional"
  client_ca = [%q]
[certs.files]
cert_file = "server.pem"
key_file = "server-key.pem"
`, clientCA.CertFile))
	addr := b.GW.Addr("edge").String()
	if got := smqtest.ServedCert(t, addr, &tls.Config{RootCAs: ca.Pool}); !got.Equal(first.Cert) {
		t.Fatal("the configured certificate is not served")
	}
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	open, err := client.Dial(ctx, "wss://"+addr+"/", client.Options{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	raw, err := client.Dial(ctx, "https://"+addr+"/", client.Options{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	// Replaced on disk: picked up by the watcher, no signal needed.
	apptest.WriteFile(t, certFile, second.CertPEM)
	apptest.WriteFile(t, keyFile, second.KeyPEM)
	smqtest.WaitServed(t, addr, &tls.Config{RootCAs: ca.Pool}, second.Cert)
	// The sessions opened under the old certificate are still there.
	apptest.PubSub(t, open, raw)
	apptest.PubSub(t, raw, open)

	// A corrupt replacement is rejected, with a log line that says why;
	// the certificate in service stays.
	logged := len(b.Logs.String())
	apptest.WriteFile(t, certFile, second.CertPEM[:len(second.CertPEM)/2])
	err = b.Reload()
	if err == nil || !strings.Contains(err.Error(), "server.pem") {
		t.Fatalf("Reload of a corrupt file: %v, want an error naming server.pem", err)
	}
	if !strings.Contains(b.Logs.String()[logged:], `msg="reload failed: keeping the current one in service" what="certs \"files\""`) {
		t.Errorf("no log line for the rejected file:\n%s", b.Logs)
	}
	if got := smqtest.ServedCert(t, addr, &tls.Config{RootCAs: ca.Pool}); !got.Equal(second.Cert) {
		t.Fatal("a corrupt file replaced the certificate in service")
	}
	apptest.PubSub(t, open, raw)
}

func TestRevokedClientRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	clientCA := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	good, bad := clientCA.Client(t, "device-good"), clientCA.Client(t, "device-bad")
	crlFile := filepath.Join(dir, "clients.crl")
	apptest.WriteFile(t, crlFile, clientCA.CRL(t).DER) // nothing revoked yet, DER
	caFile := filepath.Join(dir, "clients-ca.pem")
	apptest.WriteFile(t, caFile, clientCA.CertPEM)
	b := apptest.Start(t, dir, `
watch_interval = "1h"   # this test reloads by hand, as SIGHUP does
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  client_auth = "require"
  client_ca = ["clients-ca.pem"]
  client_crl = ["clients.crl"]
`+apptest.CertFiles(server))
	addr := b.GW.Addr("edge").String()
	dial := func(l *testpki.Leaf, scheme string) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		c, err := client.Dial(ctx, scheme+"://"+addr+"/", client.Options{RootCAs: ca.Pool, Certificate: &l.TLS})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	before, err := dial(bad, "wss")
	if err != nil {
		t.Fatalf("not yet revoked, refused: %v", err)
	}

	// Revoke, as PEM this time, and reload.
	apptest.WriteFile(t, crlFile, clientCA.CRL(t, bad.Cert).PEM)
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"wss", "https"} {
		_, err := dial(bad, scheme)
		var re *client.RefusedError
		if !errors.As(err, &re) || re.Code != smq.CodeCertNotAccepted || re.Reason != "certificate revoked" {
			t.Errorf("%s: revoked certificate: %v, want Connack 0x05 \"certificate revoked\"", scheme, err)
		}
		c, err := dial(good, scheme)
		if err != nil {
			t.Fatalf("%s: a certificate not revoked was refused: %v", scheme, err)
		}
		apptest.PubSub(t, c, c)
	}
	// The session admitted before the revocation is left alone: the CRL is
	// checked when a session starts.
	apptest.PubSub(t, before, before)
	if !strings.Contains(b.Logs.String(), `detail="0x05 client certificate not accepted: certificate revoked"`) {
		t.Errorf("the refusal is not logged:\n%s", b.Logs)
	}

	// A broken CRL is rejected and the revocation stays in force.
	apptest.WriteFile(t, crlFile, []byte("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n"))
	if err := b.Reload(); err == nil || !strings.Contains(err.Error(), "clients.crl") {
		t.Fatalf("Reload of a broken CRL: %v, want an error naming clients.crl", err)
	}
	if _, err := dial(bad, "wss"); !errors.As(err, new(*client.RefusedError)) {
		t.Errorf("after a broken CRL: %v, want the revoked certificate still refused", err)
	}

	// The CA bundle is replaced by another CA's: its devices get in, the
	// old CA's are refused.
	otherCA := testpki.NewCA(t)
	apptest.WriteFile(t, caFile, otherCA.CertPEM)
	apptest.WriteFile(t, crlFile, otherCA.CRL(t).PEM)
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	var re *client.RefusedError
	if _, err := dial(good, "https"); !errors.As(err, &re) || !strings.Contains(re.Reason, "unknown authority") {
		t.Errorf("a device of the replaced CA: %v, want 0x05 unknown authority", err)
	}
	if _, err := dial(otherCA.Client(t, "device-new"), "https"); err != nil {
		t.Errorf("a device of the new CA: %v", err)
	}
}

func TestACMEHTTPRedirect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// No CA is contacted: Run is not what this test needs, only the
	// HTTP-01 listener's behaviour for requests that are not challenges.
	cfg, err := config.Parse([]byte(fmt.Sprintf("state_dir = %q\n", dir)+`
[[listener]]
name = "edge"
address = "127.0.0.1:8443"
tls = "le"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[certs.le]
acme_domains = ["gw.example.com"]
acme_directory = "https://127.0.0.1:1/dir"
acme_http_address = "127.0.0.1:0"
`), filepath.Join(dir, "smqgw.toml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := app.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler
	for _, l := range b.Config.Listeners {
		if l.Handler != nil {
			h = l.Handler
		}
	}
	if h == nil {
		t.Fatal("no HTTP-01 listener built")
	}
	for _, tc := range []struct {
		method, host, target string
		code                 int
		location             string
	}{
		{"GET", "gw.example.com", "/page?x=1", http.StatusPermanentRedirect, "https://gw.example.com:8443/page?x=1"},
		{"HEAD", "gw.example.com:80", "/", http.StatusPermanentRedirect, "https://gw.example.com:8443/"},
		{"POST", "gw.example.com", "/", http.StatusBadRequest, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, "http://"+tc.host+tc.target, nil))
		if rec.Code != tc.code || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s %s%s: %d %q, want %d %q", tc.method, tc.host, tc.target, rec.Code, rec.Header().Get("Location"), tc.code, tc.location)
		}
	}
	if b.Broker != nil {
		b.Broker.Shutdown(context.Background())
	}
}
