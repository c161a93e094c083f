//go:build unix

package app_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/bindtest"
	"github.com/smqgw/smqgw/internal/pebbletest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// dnsWait bounds an issuance by DNS-01 against Pebble and BIND.
const dnsWait = 60 * time.Second

// dns01Gateway is the TOML of a gateway with an admin endpoint and one TLS
// listener "edge" serving [certs.le], which obtains domains from pb by
// DNS-01 with the dns_* keys in keys.
func dns01Gateway(dir string, pb *pebbletest.Pebble, domains []string, keys string) string {
	q := make([]string, len(domains))
	for i, d := range domains {
		q[i] = fmt.Sprintf("%q", d)
	}
	return fmt.Sprintf(`state_dir = %q
[log]
level = "debug"
[admin]
address = "127.0.0.1:0"
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "le"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[certs.le]
acme_domains = [%s]
acme_email = "ops@example.test"
acme_directory = %q
acme_directory_ca = %q
acme_challenge = "dns-01"
%s
`, filepath.Join(dir, "state"), strings.Join(q, ", "), pb.DirectoryURL, pb.CAFile, keys)
}

// servedCert is what a TLS client asking addr for sni gets, verified
// against roots.
func servedCert(t *testing.T, addr, sni string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := smqtest.PeerCert(addr, &tls.Config{ServerName: sni, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to %s as %q: %v", addr, sni, err)
	}
	return c
}

// readyz returns the admin endpoint's /readyz status and body.
func readyz(t *testing.T, r *apptest.Running) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.GW.AdminAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func waitLog(t *testing.T, r *apptest.Running, want string) {
	t.Helper()
	smqtest.WaitUntilWithin(t, dnsWait, "a log line with "+want, func() bool { return strings.Contains(r.Logs.String(), want) })
}

// TestDNS01RFC2136: the gateway obtains a certificate for a name and one
// for a wildcard from Pebble by DNS-01, its TXT records set in BIND by
// RFC 2136 with the TSIG secret from a BIND key file, and serves them by
// SNI: the exact name its own, another name under the zone the wildcard.
// /readyz is ready, the expiry metric has both, the secret is in no log.
func TestDNS01RFC2136(t *testing.T) {
	bind := bindtest.Start(t, bindtest.Options{})
	pb := pebbletest.Start(t, pebbletest.Options{DNSServer: bind.Addr})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tsig.key")
	key := fmt.Sprintf("key %q {\n\talgorithm %s;\n\tsecret %q;\n};\n", bind.KeyName, bind.KeyAlgorithm, bind.KeySecret)
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	r := apptest.Start(t, dir, dns01Gateway(dir, pb, []string{"gw.example.test", "*.example.test"}, fmt.Sprintf(`dns_server = %q
dns_zone = %q
dns_tsig_name = %q
dns_tsig_algorithm = %q
dns_tsig_secret_file = %q
dns_resolvers = [%q]
`, bind.Addr, bind.Zone, bind.KeyName, bind.KeyAlgorithm, keyFile, bind.Addr)))
	roots := pb.Roots(t)
	edge := r.GW.Addr("edge").String()

	smqtest.WaitUntilWithin(t, dnsWait, "/readyz ready", func() bool { code, _ := readyz(t, r); return code == http.StatusOK })
	if got := servedCert(t, edge, "gw.example.test", roots).DNSNames; !slices.Equal(got, []string{"gw.example.test"}) {
		t.Errorf("gw.example.test: served %q, want its own certificate", got)
	}
	if got := servedCert(t, edge, "a.example.test", roots).DNSNames; !slices.Equal(got, []string{"*.example.test"}) {
		t.Errorf("a.example.test: served %q, want the wildcard", got)
	}
	for _, want := range []string{`msg="acme: order created"`, `msg="acme: TXT record set"`, `msg="acme: TXT record visible"`,
		`msg="acme: challenge accepted"`, `msg="acme: certificate stored"`, `msg="acme: TXT record removed"`,
		`msg="acme: serving certificate" certs=le`, `domain=*.example.test`} {
		if !strings.Contains(r.Logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(r.Logs.String(), bind.KeySecret) {
		t.Error("the TSIG secret is in the log")
	}
	resp, err := http.Get("http://" + r.GW.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`smqgw_certificate_expiry_timestamp_seconds{serial=`, `set="certs le",subject="gw.example.test"}`,
		`set="certs le",subject="*.example.test"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(metrics), bind.KeySecret) {
		t.Error("the TSIG secret is in the metrics")
	}

	// A restart serves the cached certificates without asking the CA.
	held := servedCert(t, edge, "a.example.test", roots)
	r.Stop()
	pb.Stop()
	again := apptest.Start(t, dir, dns01Gateway(dir, pb, []string{"gw.example.test", "*.example.test"}, fmt.Sprintf(`dns_server = %q
dns_zone = %q
dns_tsig_name = %q
dns_tsig_secret_file = %q
`, bind.Addr, bind.Zone, bind.KeyName, keyFile)))
	waitLog(t, again, "acme: serving certificate")
	smqtest.WaitUntil(t, "both cached certificates", func() bool { code, _ := readyz(t, again); return code == http.StatusOK })
	if got := servedCert(t, again.GW.Addr("edge").String(), "b.example.test", roots); !got.Equal(held) {
		t.Error("after a restart without the CA: another certificate than the cached one")
	}
	if strings.Contains(again.Logs.String(), "order created") {
		t.Errorf("the restart asked the CA:\n%s", again.Logs)
	}
}

// TestDNS01Hook: the TXT record set by an exec hook (nsupdate against
// BIND, lego's exec convention), and the certificate served.
func TestDNS01Hook(t *testing.T) {
	bind := bindtest.Start(t, bindtest.Options{})
	pb := pebbletest.Start(t, pebbletest.Options{DNSServer: bind.Addr})
	dir := t.TempDir()
	r := apptest.Start(t, dir, dns01Gateway(dir, pb, []string{"hook.example.test"}, fmt.Sprintf(`dns_hook = %q
dns_zone = %q
dns_resolvers = [%q]
`, bindtest.HookScript(t, bind), bind.Zone, bind.Addr)))
	smqtest.WaitUntilWithin(t, dnsWait, "/readyz ready", func() bool { code, _ := readyz(t, r); return code == http.StatusOK })
	if got := servedCert(t, r.GW.Addr("edge").String(), "hook.example.test", pb.Roots(t)).DNSNames; !slices.Equal(got, []string{"hook.example.test"}) {
		t.Errorf("served %q", got)
	}
	waitLog(t, r, "acme: TXT record removed")
	if v := bind.TXT(t, "_acme-challenge.hook.example.test."); len(v) != 0 {
		t.Errorf("TXT records left behind: %q", v)
	}
}

// TestDNS01Failures: a wrong TSIG secret, a zone the server does not
// serve, and a record that never appears (a hook that sets nothing) each
// log the step that failed and why, and /readyz says the certificate is
// missing (503). No secret is logged.
// TestDNS01Renewal: a gateway renews a DNS-01 certificate as it nears
// expiry and serves the new one without a restart: Pebble issues
// certificates valid for 10 minutes, acme_renew_before is 9m45s, so the
// renewal is due 15 s after the first issuance.
func TestDNS01Renewal(t *testing.T) {
	bind := bindtest.Start(t, bindtest.Options{})
	pb := pebbletest.Start(t, pebbletest.Options{DNSServer: bind.Addr, Validity: 10 * time.Minute})
	dir := t.TempDir()
	r := apptest.Start(t, dir, dns01Gateway(dir, pb, []string{"*.example.test"}, fmt.Sprintf(`dns_server = %q
dns_zone = %q
dns_tsig_name = %q
dns_tsig_algorithm = %q
dns_tsig_secret = %q
dns_resolvers = [%q]
acme_renew_before = "9m45s"
`, bind.Addr, bind.Zone, bind.KeyName, bind.KeyAlgorithm, bind.KeySecret, bind.Addr)))
	roots := pb.Roots(t)
	edge := r.GW.Addr("edge").String()
	smqtest.WaitUntilWithin(t, dnsWait, "/readyz ready", func() bool { code, _ := readyz(t, r); return code == http.StatusOK })
	first := servedCert(t, edge, "device.example.test", roots)
	if life := first.NotAfter.Sub(first.NotBefore); life > 11*time.Minute {
		t.Fatalf("Pebble issued a certificate valid for %v, want 10 minutes", life)
	}
	// The renewal is due 15 s after the first issuance; give it room on a
	// loaded machine.
	var next *x509.Certificate
	smqtest.WaitUntilWithin(t, 15*time.Second+2*dnsWait, "a renewed certificate served", func() bool {
		next = servedCert(t, edge, "device.example.test", roots)
		return next.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if !next.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the first's %v", next.NotAfter, first.NotAfter)
	}
	if got := strings.Count(r.Logs.String(), `msg="acme: certificate stored"`); got < 2 {
		t.Errorf("%d certificates stored, want the first and its renewal", got)
	}
	if code, body := readyz(t, r); code != http.StatusOK {
		t.Errorf("/readyz after the renewal: %d %q", code, body)
	}
}

func TestDNS01Failures(t *testing.T) {
	bind := bindtest.Start(t, bindtest.Options{})
	pb := pebbletest.Start(t, pebbletest.Options{DNSServer: bind.Addr})
	noop := filepath.Join(t.TempDir(), "noop-hook")
	if err := os.WriteFile(noop, []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	const wrongSecret = "bm90IHRoZSBzZWNyZXQsIG5vdCB0aGUgc2VjcmV0ISE="
	rfc := func(zone, secret string) string {
		return fmt.Sprintf("dns_server = %q\ndns_zone = %q\ndns_tsig_name = %q\ndns_tsig_algorithm = %q\ndns_tsig_secret = %q\ndns_resolvers = [%q]\n",
			bind.Addr, zone, bind.KeyName, bind.KeyAlgorithm, secret, bind.Addr)
	}
	for _, tc := range []struct {
		name   string
		domain string
		keys   string
		want   []string
	}{
		{"wrong secret", "gw.example.test", rfc(bind.Zone, wrongSecret),
			[]string{`msg="acme: step failed: setting the TXT record"`, "TSIG key rejected (NOTAUTH/BADSIG)"}},
		{"unknown zone", "gw.other.test", rfc("other.test", bind.KeySecret),
			[]string{`msg="acme: step failed: setting the TXT record"`, `server is not authoritative for zone \"other.test.\" (NOTAUTH)`}},
		{"record not visible", "gw.example.test", fmt.Sprintf("dns_hook = %q\ndns_propagation_timeout = \"1s\"\ndns_resolvers = [%q]\n", noop, bind.Addr),
			[]string{`msg="acme: TXT record set"`, `msg="acme: step failed: waiting for the TXT record to be visible"`,
				"TXT record _acme-challenge.gw.example.test. not visible after 1s at 1 of 1 authoritative servers: " + bind.Addr + " (NXDOMAIN)",
				`msg="acme: TXT record removed"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := apptest.Start(t, dir, dns01Gateway(dir, pb, []string{tc.domain}, tc.keys))
			waitLog(t, r, "acme: cannot obtain certificate")
			for _, w := range tc.want {
				if !strings.Contains(r.Logs.String(), w) {
					t.Errorf("log lacks %s", w)
				}
			}
			code, body := readyz(t, r)
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "certs le: 0 of 1 certificates obtained") {
				t.Errorf("/readyz: %d %q, want 503 with the missing certificate", code, body)
			}
			if strings.Contains(r.Logs.String(), bind.KeySecret) || strings.Contains(r.Logs.String(), wrongSecret) {
				t.Error("a TSIG secret is in the log")
			}
		})
	}
}
