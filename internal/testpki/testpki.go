// Package testpki makes throwaway X.509 certificates for tests: a CA, server
// certificates for loopback hosts and client certificates, each available as
// a tls.Certificate, as parsed certificates and as PEM files in the test's
// temporary directory. It exists so every package that tests TLS (client,
// gateway, cmd) generates its certificates the same way instead of checking
// any in.
//
// Keys are ECDSA P-256: fast to generate and accepted everywhere.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a self-signed certificate authority that lives for one test.
type CA struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPEM  []byte
	CertFile string         // CertPEM written to the test's temporary directory
	Pool     *x509.CertPool // holds only Cert: use as RootCAs or ClientCAs
}

// Leaf is a certificate issued by a CA, with its private key.
type Leaf struct {
	TLS      tls.Certificate // chain of Cert only; TLS.Leaf is set
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPEM  []byte
	KeyPEM   []byte // PKCS #8
	CertFile string // CertPEM in the test's temporary directory
	KeyFile  string // KeyPEM in the test's temporary directory
}

// NewCA returns a new CA, valid from an hour ago for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "smqgw test CA", Organization: []string{"smqgw tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testpki: creating CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parsing CA: %v", err)
	}
	ca := &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), Pool: x509.NewCertPool()}
	ca.Pool.AddCert(cert)
	ca.CertFile = writeFile(t, "ca-*.pem", ca.CertPEM)
	return ca
}

// Server issues a server certificate for hosts: IP addresses become IP SANs,
// anything else DNS SANs. No hosts means "127.0.0.1", "::1" and "localhost".
func (ca *CA) Server(t testing.TB, hosts ...string) *Leaf {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.Issue(t, tmpl)
}

// Client issues a client certificate (clientAuth EKU) with common name cn.
func (ca *CA) Client(t testing.TB, cn string) *Leaf {
	t.Helper()
	return ca.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// Issue signs tmpl with a fresh key, for tests that need an unusual
// certificate (expired, wrong key usage, extra SANs). Zero fields get
// defaults: a random serial, validity from an hour ago for a day, and
// KeyUsageDigitalSignature. tmpl is not modified.
func (ca *CA) Issue(t testing.TB, tmpl *x509.Certificate) *Leaf {
	t.Helper()
	c := *tmpl
	if c.SerialNumber == nil {
		c.SerialNumber = serial(t)
	}
	now := time.Now()
	if c.NotBefore.IsZero() {
		c.NotBefore = now.Add(-time.Hour)
	}
	if c.NotAfter.IsZero() {
		c.NotAfter = now.Add(24 * time.Hour)
	}
	if c.KeyUsage == 0 {
		c.KeyUsage = x509.KeyUsageDigitalSignature
	}
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, &c, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("testpki: issuing %q: %v", c.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parsing %q: %v", c.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: encoding key: %v", err)
	}
	l := &Leaf{
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
		Cert:    cert,
		Key:     key,
		CertPEM: pemBlock("CERTIFICATE", der),
		KeyPEM:  pemBlock("PRIVATE KEY", keyDER),
	}
	l.CertFile = writeFile(t, "cert-*.pem", l.CertPEM)
	l.KeyFile = writeFile(t, "key-*.pem", l.KeyPEM)
	return l
}

// ServerConfig returns a TLS server configuration presenting l. With
// clientCAs it requires and verifies client certificates against them;
// without, it does not ask for any.
func (l *Leaf) ServerConfig(clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{l.TLS}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: generating key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testpki: serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1)) // never zero
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(t testing.TB, pattern string, data []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), pattern)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	name := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		t.Fatalf("testpki: writing %s: %v", filepath.Base(name), err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("testpki: writing %s: %v", filepath.Base(name), err)
	}
	return name
}
