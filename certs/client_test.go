package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// devPKI makes a dev PKI in a temporary directory and returns it.
func devPKI(t *testing.T) *Dev {
	t.Helper()
	d, err := EnsureDev(filepath.Join(t.TempDir(), "pki"), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readCA(t *testing.T, d *Dev) *x509.Certificate {
	t.Helper()
	ca, _, err := loadPair(d.CAFile, filepath.Join(d.Dir, DevCAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestIssueClient(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	ca := readCA(t, d)
	f, err := IssueClient(d.Dir, "device-1", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(d.Dir, "device-1.pem"); f.CertFile != want {
		t.Errorf("CertFile %s, want %s", f.CertFile, want)
	}
	if want := filepath.Join(d.Dir, "device-1-key.pem"); f.KeyFile != want {
		t.Errorf("KeyFile %s, want %s", f.KeyFile, want)
	}
	if want := filepath.Join(d.Dir, "device-1.p12"); f.P12File != want {
		t.Errorf("P12File %s, want %s", f.P12File, want)
	}
	if f.CAFile != d.CAFile {
		t.Errorf("CAFile %s, want %s", f.CAFile, d.CAFile)
	}
	if !f.GeneratedPassword || len(f.Password) != 16 {
		t.Errorf("password %q (generated %v), want 16 generated characters", f.Password, f.GeneratedPassword)
	}

	// The PEM pair loads, and is the certificate described.
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	if !leaf.Equal(f.Certificate) {
		t.Error("CertFile does not hold ClientFiles.Certificate")
	}
	if leaf.Subject.CommonName != "device-1" || !slices.Equal(leaf.Subject.Organization, []string{"smqgw development"}) {
		t.Errorf("subject %s", leaf.Subject)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(leaf.UnknownExtKeyUsage) > 0 {
		t.Errorf("extended key usage %v %v, want clientAuth only", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v, want digitalSignature", leaf.KeyUsage)
	}
	if leaf.IsCA {
		t.Error("client certificate is a CA")
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve.Params().Name != "P-256" {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := time.Until(leaf.NotAfter); life < DefaultClientValidity-time.Minute || life > DefaultClientValidity {
		t.Errorf("valid for %v more, want %v", life, DefaultClientValidity)
	}

	// It verifies against the CA for client authentication, not for servers.
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify for clientAuth: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate verifies for serverAuth")
	}

	for file, want := range map[string]fs.FileMode{f.CertFile: 0o644, f.KeyFile: 0o600, f.P12File: 0o600} {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(file), st.Mode().Perm(), want)
		}
	}

	// The PKCS#12 file holds the same key and certificate, and the CA.
	p12, err := os.ReadFile(f.P12File)
	if err != nil {
		t.Fatal(err)
	}
	key, cert, cas, err := pkcs12.DecodeChain(p12, f.Password)
	if err != nil {
		t.Fatalf("decode with the password: %v", err)
	}
	if !cert.Equal(leaf) {
		t.Error("p12 certificate differs from CertFile")
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || !k.Equal(pair.PrivateKey) {
		t.Errorf("p12 key (%T) differs from KeyFile", key)
	}
	if len(cas) != 1 || !cas[0].Equal(ca) {
		t.Errorf("p12 holds %d CA certificates, want the dev CA", len(cas))
	}
	if _, _, _, err := pkcs12.DecodeChain(p12, "wrong password"); !errors.Is(err, pkcs12.ErrIncorrectPassword) {
		t.Errorf("decode with a wrong password: %v, want ErrIncorrectPassword", err)
	}
}

func TestIssueClientOptions(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	f, err := IssueClient(d.Dir, "alice@example.com", ClientOptions{Password: "s3cret", Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if f.Password != "s3cret" || f.GeneratedPassword {
		t.Errorf("password %q (generated %v), want the one given", f.Password, f.GeneratedPassword)
	}
	if life := time.Until(f.Certificate.NotAfter); life < 47*time.Hour || life > 48*time.Hour {
		t.Errorf("valid for %v more, want 48h", life)
	}
	p12, _ := os.ReadFile(f.P12File)
	if _, _, _, err := pkcs12.DecodeChain(p12, "s3cret"); err != nil {
		t.Errorf("decode with the given password: %v", err)
	}

	for _, v := range []time.Duration{-time.Hour, 20 * 365 * 24 * time.Hour} {
		if _, err := IssueClient(d.Dir, "bob", ClientOptions{Validity: v}); err == nil {
			t.Errorf("validity %v accepted", v)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Dir, "bob.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused client left files behind: %v", err)
	}

	// Random passwords differ.
	g, err := IssueClient(d.Dir, "carol", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := IssueClient(d.Dir, "dave", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g.Password == h.Password {
		t.Errorf("two random passwords are both %q", g.Password)
	}
}

// TestIssueClientOU: -ou puts organizational units in the subject, for
// allow_ou and topic permissions; an empty one is refused.
func TestIssueClientOU(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	f, err := IssueClient(d.Dir, "alice", ClientOptions{OU: []string{"operators", "night shift"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Certificate.Subject.OrganizationalUnit; !slices.Equal(got, []string{"operators", "night shift"}) {
		t.Errorf("OUs %q", got)
	}
	if _, err := IssueClient(d.Dir, "bob", ClientOptions{OU: []string{""}}); err == nil || !strings.Contains(err.Error(), "invalid OU") {
		t.Errorf("empty OU: %v", err)
	}
}

func TestIssueClientRefusesToOverwrite(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	first, err := IssueClient(d.Dir, "device-1", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = IssueClient(d.Dir, "device-1", ClientOptions{})
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "-force") || !strings.Contains(err.Error(), "device-1.pem") {
		t.Fatalf("second issue: %v, want a refusal naming device-1.pem and -force", err)
	}
	again, _ := os.ReadFile(first.CertFile)
	if string(again) != string(pemCert(first.Certificate)) {
		t.Error("refused issue changed the certificate")
	}

	// Any of the three files blocks the name.
	os.Remove(first.CertFile)
	if _, err := IssueClient(d.Dir, "device-1", ClientOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("with the key and p12 left: %v, want a refusal", err)
	}

	second, err := IssueClient(d.Dir, "device-1", ClientOptions{Force: true})
	if err != nil {
		t.Fatalf("with Force: %v", err)
	}
	if second.Certificate.Equal(first.Certificate) {
		t.Error("Force did not issue a new certificate")
	}
	if _, err := tls.LoadX509KeyPair(second.CertFile, second.KeyFile); err != nil {
		t.Errorf("replaced pair: %v", err)
	}
}

func TestIssueClientWithoutCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := IssueClient(dir, "device-1", ClientOptions{})
	want := "certs: no dev CA in " + dir + ": run `smqgw certs init -dir " + dir + "` first"
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want %q", err, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("wrote %d files without a CA", len(entries))
	}

	os.WriteFile(filepath.Join(dir, DevCAFile), []byte("garbage"), 0o644)
	os.WriteFile(filepath.Join(dir, DevCAKeyFile), []byte("garbage"), 0o600)
	if _, err := IssueClient(dir, "device-1", ClientOptions{}); err == nil || !strings.Contains(err.Error(), "dev CA in") {
		t.Errorf("broken CA: %v", err)
	}

	// The server certificate is not a CA.
	d := devPKI(t)
	os.Rename(filepath.Join(d.Dir, DevServerFile), filepath.Join(d.Dir, DevCAFile))
	os.Rename(filepath.Join(d.Dir, DevServerKeyFile), filepath.Join(d.Dir, DevCAKeyFile))
	if _, err := IssueClient(d.Dir, "device-1", ClientOptions{}); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf as CA: %v", err)
	}
}

func TestClientNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"device-1", "a", "alice@example.com", "node_7.lab", "X", strings.Repeat("n", 64)} {
		if err := checkName("client", name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", ".hidden", "-flag", "_x", "@x", "a/b", "../up", `a\b`, "a b",
		"é", "a:b", "a*", "ca", "server", "ca-key", "server-key", "device-key", strings.Repeat("n", 65)} {
		err := checkName("client", name)
		if err == nil {
			t.Errorf("%q accepted", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "certs: invalid client name ") {
			t.Errorf("%q: %v", name, err)
		}
	}
	// IssueClient checks the name before anything else.
	if _, err := IssueClient(t.TempDir(), "../up", ClientOptions{}); err == nil || !strings.Contains(err.Error(), "invalid client name") {
		t.Errorf("IssueClient(../up): %v", err)
	}
}
