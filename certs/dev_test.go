package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsureDevCreatesThenReuses(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dev")
	d, err := EnsureDev(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !d.CreatedCA || !d.IssuedServer {
		t.Errorf("first run: CreatedCA %v, IssuedServer %v, want both", d.CreatedCA, d.IssuedServer)
	}
	// The server certificate verifies against the CA for each host.
	caPEM, err := os.ReadFile(d.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	leaf, err := x509.ParseCertificate(d.Server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: pool}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	for _, f := range []string{DevCAKeyFile, DevServerKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}

	// A second run reuses both; a new host renews only the server certificate.
	again, err := EnsureDev(dir, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Server.Certificate[0]) != string(d.Server.Certificate[0]) {
		t.Error("server certificate replaced although it still covers the hosts")
	}
	if again.CreatedCA || again.IssuedServer {
		t.Errorf("reuse: CreatedCA %v, IssuedServer %v, want neither", again.CreatedCA, again.IssuedServer)
	}
	more, err := EnsureDev(dir, []string{"localhost", "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	if string(more.Server.Certificate[0]) == string(d.Server.Certificate[0]) {
		t.Error("server certificate kept although it does not cover gw.test")
	}
	if more.CreatedCA || !more.IssuedServer {
		t.Errorf("new host: CreatedCA %v, IssuedServer %v, want only IssuedServer", more.CreatedCA, more.IssuedServer)
	}
	caAgain, _ := os.ReadFile(more.CAFile)
	if string(caAgain) != string(caPEM) {
		t.Error("CA replaced")
	}
}

func TestEnsureDevRejectsBrokenFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, DevCAFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DevCAKeyFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureDev(dir, []string{"localhost"}); err == nil {
		t.Fatal("a broken CA file was accepted")
	}
}

func TestEnsureDevRefusesHalfACA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := EnsureDev(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, DevCAKeyFile)); err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, DevCAFile))
	_, err := EnsureDev(dir, []string{"localhost"})
	if err == nil || !strings.Contains(err.Error(), "ca.pem exists but ca-key.pem is missing") {
		t.Fatalf("EnsureDev with the CA key gone: %v, want a refusal", err)
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dir, DevCAFile)); string(caAfter) != string(caBefore) {
		t.Error("the CA certificate was replaced")
	}
}
