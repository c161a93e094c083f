package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/testpki"
)

// TestSIGHUPReloadsCertificates replaces the certificate files of a
// running smqgw whose file watch is too slow to notice, sends it SIGHUP,
// and checks new handshakes get the new certificate while a session opened
// before goes on.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	first, second := ca.Server(t, "127.0.0.1"), ca.Server(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	replace := func(l *testpki.Leaf) {
		t.Helper()
		for name, data := range map[string][]byte{certFile: l.CertPEM, keyFile: l.KeyPEM} {
			if err := os.WriteFile(name+".new", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(name+".new", name); err != nil {
				t.Fatal(err)
			}
		}
	}
	replace(first)
	gw := startSMQGW(t, dir, fmt.Sprintf(`watch_interval = "1h"
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[certs.files]
cert_file = %q
key_file = %q
`, certFile, keyFile))
	addr := gw.gw.Addr("edge").String()
	served := func() []byte {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	open, err := client.Dial(ctx, "wss://"+addr+"/", client.Options{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	replace(second)
	if string(served()) != string(first.Cert.Raw) {
		t.Fatal("the new files were loaded before SIGHUP (watch_interval is 1h)")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for string(served()) != string(second.Cert.Raw) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not install the new certificate:\n%s", gw.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(gw.logs.String(), "SIGHUP: reloading") {
		t.Error("the reload is not logged")
	}
	// The session from before the reload still works.
	if _, err := open.Ping(ctx); err != nil {
		t.Fatalf("session opened before SIGHUP: %v", err)
	}
}
