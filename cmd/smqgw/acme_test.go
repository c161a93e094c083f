package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/pebbletest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// acmeDomain is the name the gateway gets certificates for; Pebble's DNS
// server resolves every name to 127.0.0.1.
const acmeDomain = "gw.smqgw.test"

// acmeWait bounds issuance: Pebble validates at once, but a failed
// TLS-ALPN-01 attempt before HTTP-01 costs a few round trips.
const acmeWait = 60 * time.Second

// reservePorts holds n loopback TCP ports until release, so that nothing
// else started meanwhile (Pebble picks its own ports) can take them; the
// gateway binds them right after release.
func reservePorts(t *testing.T, n int) (ports []int, release func()) {
	t.Helper()
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, ln := range lns {
				ln.Close()
			}
		})
	}
	t.Cleanup(release)
	return ports, release
}

// waitLog waits until logs holds want.
func waitLog(t *testing.T, logs *smqtest.SyncBuffer, want string) {
	t.Helper()
	smqtest.WaitUntilWithin(t, acmeWait, "a log line with "+want, func() bool { return strings.Contains(logs.String(), want) })
}

// verifiedLeaf waits until a handshake with addr for acmeDomain verifies
// against roots, and returns the certificate. Until the ACME order
// completes the handshake waits for it or fails.
func verifiedLeaf(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	smqtest.Retry(t, acmeWait, "a verified certificate for "+acmeDomain+" from "+addr, func() (err error) {
		leaf, err = smqtest.PeerCert(addr, &tls.Config{ServerName: acmeDomain, RootCAs: roots})
		return err
	})
	return leaf
}

// session opens an SMQ session over TLS to addr as acmeDomain, trusting
// only roots, and checks a message goes round.
func session(t *testing.T, scheme, addr string, roots *x509.CertPool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	c, err := client.Dial(ctx, scheme+"://"+addr+"/smq", client.Options{
		TLSConfig: &tls.Config{ServerName: acmeDomain, RootCAs: roots}})
	if err != nil {
		t.Fatalf("%s session: %v", scheme, err)
	}
	defer c.Close()
	apptest.PubSub(t, c, c)
}

func acmeConfig(stateDir, addr string, pb *pebbletest.Pebble, extra string) string {
	return fmt.Sprintf(`state_dir = %q
[log]
level = "debug"
[[listener]]
name = "edge"
address = %q
tls = "le"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
[certs.le]
acme_domains = [%q]
acme_email = "ops@smqgw.test"
acme_directory = %q
acme_directory_ca = %q
%s
`, stateDir, addr, acmeDomain, pb.DirectoryURL, pb.CAFile, extra)
}

// TestACMETLSALPN obtains a certificate from Pebble by TLS-ALPN-01 on the
// gateway's own TLS listener, with External Account Binding, then shows the
// certificate outlives the CA: the gateway keeps serving when Pebble stops,
// and a restart serves it from the cache. Not parallel: the gateway binds
// a port reserved for Pebble and released just before, which a parallel
// test could take in between.
func TestACMETLSALPN(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	ports, release := reservePorts(t, 1)
	port := ports[0]
	pb := pebbletest.Start(t, pebbletest.Options{TLSPort: port, EAB: map[string][]byte{"kid-1": key}})
	release()
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := acmeConfig(stateDir, addr, pb, fmt.Sprintf("acme_eab_kid = \"kid-1\"\nacme_eab_key = %q",
		base64.RawURLEncoding.EncodeToString(key)))
	began := time.Now()
	gw := apptest.Start(t, dir, cfg)
	roots := pb.Roots(t)

	leaf := verifiedLeaf(t, addr, roots)
	t.Logf("certificate obtained by TLS-ALPN-01 %v after start-up", time.Since(began).Round(time.Millisecond))
	if !slices.Contains(leaf.DNSNames, acmeDomain) {
		t.Fatalf("certificate for %q, want %q", leaf.DNSNames, acmeDomain)
	}
	// autocert hands the certificate to waiting handshakes before it
	// stores it and before Run sees it: wait for those lines.
	for _, want := range []string{"acme: answered tls-alpn-01 challenge", "acme: certificate issued", "acme: serving certificate"} {
		waitLog(t, gw.Logs, want)
	}
	// Offering acme-tls/1 among other protocols is an ordinary client: it
	// gets http/1.1 and the certificate. Offering it alone without a
	// pending challenge gets no certificate.
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: acmeDomain, RootCAs: roots, NextProtos: []string{"acme-tls/1", "http/1.1"}})
	if err != nil {
		t.Fatalf("client offering acme-tls/1 and http/1.1: %v", err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1", p)
	}
	c.Close()
	if c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: acmeDomain, InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}}); err == nil {
		c.Close()
		t.Error("an acme-tls/1 probe without a pending challenge got a certificate")
	}
	session(t, "wss", addr, roots)
	session(t, "https", addr, roots)
	matches, _ := filepath.Glob(filepath.Join(stateDir, "acme", "*", acmeDomain))
	if len(matches) != 1 {
		t.Fatalf("cached certificate: found %q under %s/acme", matches, stateDir)
	}
	if st, err := os.Stat(matches[0]); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("cached certificate %s: %v, want a file private to its owner", matches[0], err)
	}

	// The CA goes away: handshakes and sessions go on.
	pb.Stop()
	if got := verifiedLeaf(t, addr, roots); !got.Equal(leaf) {
		t.Error("another certificate served after the CA stopped")
	}
	session(t, "wss", addr, roots)

	// A restart while the CA is down serves the cached certificate.
	gw.Stop()
	again := apptest.Start(t, dir, cfg)
	waitLog(t, again.Logs, "acme: serving certificate")
	if got := verifiedLeaf(t, addr, roots); !got.Equal(leaf) {
		t.Error("restart without the CA: the cached certificate is not served")
	}
	session(t, "https", addr, roots)
	if strings.Contains(again.Logs.String(), "level=ERROR") {
		t.Errorf("restart with a valid cached certificate logged errors:\n%s", again.Logs)
	}
}

// TestACMEHTTP01 obtains a certificate by HTTP-01 on the plain listener
// set by acme_http_address: Pebble's TLS-ALPN-01 port leads nowhere, so
// autocert falls back to HTTP-01. Not parallel, as TestACMETLSALPN.
func TestACMEHTTP01(t *testing.T) {
	ports, release := reservePorts(t, 2)
	httpPort := ports[0]
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	release()
	dir := t.TempDir()
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	gw := apptest.Start(t, dir, acmeConfig(filepath.Join(dir, "state"), tlsAddr, pb,
		fmt.Sprintf("acme_http_address = \"127.0.0.1:%d\"", httpPort)))
	began := time.Now()
	roots := pb.Roots(t)
	leaf := verifiedLeaf(t, tlsAddr, roots)
	t.Logf("certificate obtained by HTTP-01 %v after start-up", time.Since(began).Round(time.Millisecond))
	if !slices.Contains(leaf.DNSNames, acmeDomain) {
		t.Fatalf("certificate for %q, want %q", leaf.DNSNames, acmeDomain)
	}
	logs := gw.Logs.String()
	if !strings.Contains(logs, "acme: http-01 challenge request") {
		t.Errorf("no HTTP-01 challenge was answered:\n%s", logs)
	}
	if strings.Contains(logs, "acme: answered tls-alpn-01 challenge") {
		t.Errorf("TLS-ALPN-01 was answered although Pebble's TLS port leads nowhere")
	}
	session(t, "wss", tlsAddr, roots)
}

// TestACMEUnreachable starts with a CA that does not answer and nothing
// cached: the failure is logged with the cause, a retry is scheduled, and
// the rest of the gateway serves.
func TestACMEUnreachable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dead := "https://" + smqtest.DeadAddr(t) + "/dir" // nothing listens there
	gw := apptest.Start(t, dir, fmt.Sprintf("state_dir = %q\n", filepath.Join(dir, "state"))+
		apptest.Listener("edge", "le")+apptest.Listener("lan", "")+fmt.Sprintf(`
[certs.le]
acme_domains = [%q]
acme_directory = %q
`, acmeDomain, dead))
	waitLog(t, gw.Logs, "acme: certificates missing, retrying")
	logs := gw.Logs.String()
	for _, want := range []string{`msg="acme: cannot obtain certificate"`, "connection refused", `domain=` + acmeDomain, "retry_in=1m"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+gw.GW.Addr("lan").String()+"/", client.Options{})
	if err != nil {
		t.Fatalf("the plain listener does not serve while ACME fails: %v", err)
	}
	c.Close()
}
