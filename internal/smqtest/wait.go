package smqtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// WaitFor bounds every wait in tests that use Context and Recv.
const WaitFor = 10 * time.Second

// Context returns a context that ends after WaitFor or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	t.Cleanup(cancel)
	return ctx
}

// Recv receives from ch, failing the test after WaitFor; what names the
// awaited event in the failure.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(WaitFor):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// WaitUntil polls cond every 10 ms until it holds, failing the test after
// WaitFor; what names the awaited state in the failure. For states with no
// event to wait on, such as a line in a log.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitUntilWithin(t, WaitFor, what, cond)
}

// WaitUntilWithin is WaitUntil bounded by d instead of WaitFor, for states
// that take longer to come about than a test's ordinary steps, such as a
// certificate from an ACME CA.
func WaitUntilWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Retry calls op every 10 ms until it succeeds, failing the test after d
// with op's last error; what names the awaited state in the failure. For a
// step that fails until that state comes, such as a handshake that needs a
// certificate still being issued.
func Retry(t testing.TB, d time.Duration, what string, op func() error) {
	t.Helper()
	var err error
	if !poll(d, func() bool { err = op(); return err == nil }) {
		t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
	}
}

// poll calls cond every 10 ms until it holds or d has passed, and reports
// whether it held.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// PeerCert does a TLS handshake with addr under cfg (its RootCAs, its
// ServerName) and returns the certificate the server sent, or the
// handshake's error.
func PeerCert(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: WaitFor}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// ServedCert is PeerCert failing the test if the handshake fails.
func ServedCert(t testing.TB, addr string, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	cert, err := PeerCert(addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	return cert
}

// Resumes connects to addr over TLS with cfg (give it a
// ClientSessionCache), reads the answer to a plain HTTP request — a TLS
// 1.3 session ticket comes after the handshake — and reports whether the
// TLS session was resumed.
func Resumes(t testing.TB, addr string, cfg *tls.Config) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: WaitFor}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /nothing HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c.ConnectionState().DidResume
}

// WaitServed waits until new handshakes with addr under cfg get want: for
// a certificate replaced on disk or by a reload. A failed handshake fails
// the test.
func WaitServed(t testing.TB, addr string, cfg *tls.Config, want *x509.Certificate) {
	t.Helper()
	WaitUntil(t, "the new certificate to be served on "+addr, func() bool {
		return ServedCert(t, addr, cfg).Equal(want)
	})
}

// Main runs a package's tests, then checks that none left a goroutine
// behind (goleak). Unless the command line sets -test.parallel, it lets
// up to parallel tests that call t.Parallel run at once: tests that
// spend their time waiting on sockets and timers, not on the CPU, end
// sooner than under the default of one per CPU.
func Main(m *testing.M, parallel int) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		if err := flag.Set("test.parallel", strconv.Itoa(parallel)); err != nil {
			panic(err)
		}
	}
	goleak.VerifyTestMain(m)
}
