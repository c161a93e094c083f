package certs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/testpki"
)

// served does a real TLS handshake against src on loopback, as a client
// asking for serverName (none when ""), and returns the leaf it got.
func served(t *testing.T, src Source, serverName string) *x509.Certificate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{GetCertificate: src.GetCertificate})
		_ = tc.Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake for %q: %v", serverName, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// pairFiles copies a leaf's files to dir under name, so a test can replace
// them.
func pairFiles(t *testing.T, dir, name string, l *testpki.Leaf) Pair {
	t.Helper()
	p := Pair{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}
	replace(t, p, l.CertPEM, l.KeyPEM)
	return p
}

// replace writes new contents to p's files by rename, as certbot does.
func replace(t *testing.T, p Pair, certPEM, keyPEM []byte) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{p.CertFile, certPEM}, {p.KeyFile, keyPEM}} {
		tmp := f.name + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFilesChoosesBySNI(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	def := ca.Server(t, "default.test")
	api := ca.Server(t, "api.example.com", "127.0.0.2")
	wild := ca.Server(t, "*.example.com")
	ip := ca.Server(t, "127.0.0.1")
	f, err := NewFiles(pairFiles(t, dir, "def", def), pairFiles(t, dir, "api", api),
		pairFiles(t, dir, "wild", wild), pairFiles(t, dir, "ip", ip))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sni  string
		want *testpki.Leaf
	}{
		{"api.example.com", api},
		{"API.Example.COM", api},
		{"web.example.com", wild},
		{"a.b.example.com", def}, // a wildcard covers one label only
		{"other.test", def},
		{"", ip}, // no SNI: the certificate for the address connected to
	} {
		if got := served(t, f, tc.sni); !got.Equal(tc.want.Cert) {
			t.Errorf("SNI %q: served %v, want %v", tc.sni, got.DNSNames, tc.want.Cert.DNSNames)
		}
	}
}

func TestFilesPrefersWhatTheClientSupports(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	ecdsa := ca.Server(t, "gw.test")
	rsaLeaf := rsaServer(t, ca, "gw.test")
	f, err := NewFiles(pairFiles(t, dir, "rsa", rsaLeaf), pairFiles(t, dir, "ecdsa", ecdsa))
	if err != nil {
		t.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{
		ServerName:        "gw.test",
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedPoints:   []uint8{0},
		SupportedVersions: []uint16{tls.VersionTLS12},
	}
	c, err := f.GetCertificate(hello)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.Equal(ecdsa.Cert) {
		t.Error("an ECDSA-only client got the RSA certificate")
	}
}

func TestFilesReload(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	old := ca.Server(t, "gw.test")
	p := pairFiles(t, dir, "gw", old)
	f, err := NewFiles(p)
	if err != nil {
		t.Fatal(err)
	}

	// A broken replacement is rejected whole; the old pair stays.
	fresh := ca.Server(t, "gw.test")
	expired := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "gw.test"}, DNSNames: []string{"gw.test"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for _, tc := range []struct {
		name          string
		cert, key     []byte
		wantErrSubstr string
	}{
		{"truncated certificate", fresh.CertPEM[:len(fresh.CertPEM)/2], fresh.KeyPEM, "gw.pem"},
		{"key of another certificate", fresh.CertPEM, old.KeyPEM, "private key does not match public key"},
		{"not PEM", []byte("hello"), fresh.KeyPEM, "gw.pem"},
		{"expired", expired.CertPEM, expired.KeyPEM, "certificate expired"},
	} {
		replace(t, p, tc.cert, tc.key)
		err := f.Reload()
		if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
			t.Errorf("%s: Reload error %v, want one containing %q", tc.name, err, tc.wantErrSubstr)
		}
		if got := served(t, f, "gw.test"); !got.Equal(old.Cert) {
			t.Errorf("%s: the old certificate is no longer served", tc.name)
		}
	}

	replace(t, p, fresh.CertPEM, fresh.KeyPEM)
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(t, f, "gw.test"); !got.Equal(fresh.Cert) {
		t.Error("the new certificate is not served after Reload")
	}
	if l := f.Leaves(); len(l) != 1 || !l[0].Equal(fresh.Cert) {
		t.Error("Leaves does not report the new certificate")
	}
}

func TestNewFilesErrors(t *testing.T) {
	t.Parallel()
	if _, err := NewFiles(); err == nil {
		t.Error("NewFiles() with no pairs succeeded")
	}
	_, err := NewFiles(Pair{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/c.pem") {
		t.Errorf("missing files: error %v, want one naming the file", err)
	}
}

func TestWatcherSeesChanges(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "a.pem")
	if err := os.WriteFile(file, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(file, filepath.Join(dir, "missing.pem"))
	if w.Changed() {
		t.Fatal("Changed with nothing changed")
	}
	for _, step := range []struct {
		what   string
		change func() error
	}{
		{"rename over it, same size", func() error {
			if err := os.WriteFile(file+".tmp", []byte("two"), 0o600); err != nil {
				return err
			}
			return os.Rename(file+".tmp", file)
		}},
		{"write in place", func() error { return os.WriteFile(file, []byte("three!"), 0o600) }},
		{"touch", func() error {
			return os.Chtimes(file, time.Now(), time.Now().Add(time.Hour))
		}},
		{"remove", func() error { return os.Remove(file) }},
		{"come back", func() error { return os.WriteFile(file, []byte("back"), 0o600) }},
		{"a missing file appears", func() error {
			return os.WriteFile(filepath.Join(dir, "missing.pem"), nil, 0o600)
		}},
	} {
		if err := step.change(); err != nil {
			t.Fatal(err)
		}
		if !w.Changed() {
			t.Errorf("%s: no change seen", step.what)
		}
		if w.Changed() {
			t.Errorf("%s: change seen twice", step.what)
		}
	}
}

func TestStatic(t *testing.T) {
	t.Parallel()
	l := testpki.NewCA(t).Server(t)
	s := Static(l.TLS)
	if got := served(t, &s, "anything"); !got.Equal(l.Cert) {
		t.Error("Static served another certificate")
	}
}

// rsaServer issues an RSA server certificate: testpki makes ECDSA only.
func rsaServer(t *testing.T, ca *testpki.CA, host string) *testpki.Leaf {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testpki.Leaf{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}
}

func BenchmarkFilesGetCertificate(b *testing.B) {
	ca := testpki.NewCA(b)
	dir := b.TempDir()
	var pairs []Pair
	for i := range 20 {
		l := ca.Server(b, fmt.Sprintf("host%d.example.com", i))
		p := Pair{CertFile: filepath.Join(dir, fmt.Sprintf("%d.pem", i)), KeyFile: filepath.Join(dir, fmt.Sprintf("%d-key.pem", i))}
		if err := os.WriteFile(p.CertFile, l.CertPEM, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p.KeyFile, l.KeyPEM, 0o600); err != nil {
			b.Fatal(err)
		}
		pairs = append(pairs, p)
	}
	f, err := NewFiles(pairs...)
	if err != nil {
		b.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "host17.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.GetCertificate(hello); err != nil {
			b.Fatal(err)
		}
	}
}
