// Package testpki makes throwaway X.509 certificates for tests: a CA, server
// certificates for loopback hosts and client certificates, each available as
// a tls.Certificate, as parsed certificates and as PEM files in the test's
// temporary directory, and CRLs signed by a CA. It exists so every package
// that tests TLS (client, gateway, cmd) generates its certificates the same
// way instead of checking any in.
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
	Pool     *x509.CertPool // the trust anchor: Cert itself, or the root for an Intermediate; use as RootCAs or ClientCAs

	// Chain is the DER of this CA's certificate and the intermediates above
	// it, excluding the root: empty for a root CA. Leaves issued by the CA
	// carry it after their own certificate in Leaf.TLS, so a TLS peer sends
	// the whole path.
	Chain [][]byte
}

// Leaf is a certificate issued by a CA, with its private key.
type Leaf struct {
	TLS      tls.Certificate // Cert followed by the issuing CA's Chain (Cert only for a root CA); TLS.Leaf is set
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPEM  []byte
	KeyPEM   []byte // PKCS #8
	CertFile string // CertPEM in the test's temporary directory
	KeyFile  string // KeyPEM in the test's temporary directory
}

// NewCA returns a new CA, valid from an hour ago for a day. It cannot sign
// intermediate CAs (path length zero); see NewRootCA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	return newRoot(t, 0)
}

// NewRootCA is NewCA for a CA that may sign one level of intermediate CAs
// (see Intermediate).
func NewRootCA(t testing.TB) *CA {
	t.Helper()
	return newRoot(t, 1)
}

func newRoot(t testing.TB, maxPathLen int) *CA {
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
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
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

// Intermediate issues an intermediate CA signed by ca, which must come from
// NewRootCA. tmpl may be nil; its zero fields get the defaults of Issue and
// the subject "smqgw test intermediate CA"; the CA fields (IsCA, key usage,
// path length zero) are always set. The result's Pool holds ca's root, so
// leaves it issues verify against it.
func (ca *CA) Intermediate(t testing.TB, tmpl *x509.Certificate) *CA {
	t.Helper()
	var c x509.Certificate
	if tmpl != nil {
		c = *tmpl
	}
	if c.Subject.CommonName == "" {
		c.Subject.CommonName = "smqgw test intermediate CA"
	}
	c.BasicConstraintsValid = true
	c.IsCA = true
	c.MaxPathLen = 0
	c.MaxPathLenZero = true
	c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	l := ca.Issue(t, &c)
	return &CA{
		Cert:     l.Cert,
		Key:      l.Key,
		CertPEM:  l.CertPEM,
		CertFile: l.CertFile,
		Pool:     ca.Pool,
		Chain:    l.TLS.Certificate,
	}
}

// CRL is a certificate revocation list signed by a CA, in every form a test
// may need.
type CRL struct {
	List    *x509.RevocationList
	DER     []byte
	PEM     []byte // one "X509 CRL" block
	DERFile string // DER in the test's temporary directory
	PEMFile string // PEM in the test's temporary directory
}

// CRL returns a CRL signed by ca that revokes the given certificates (only
// their serial numbers are read, so an intermediate CA's Cert works too),
// valid from an hour ago for a day. No certificates makes an empty CRL.
func (ca *CA) CRL(t testing.TB, revoked ...*x509.Certificate) *CRL {
	t.Helper()
	now := time.Now()
	return ca.CRLAt(t, now.Add(-time.Hour), now.Add(24*time.Hour), revoked...)
}

// CRLAt is CRL with the given ThisUpdate and NextUpdate, such as a CRL
// whose NextUpdate has passed. Each entry's revocation time is thisUpdate.
func (ca *CA) CRLAt(t testing.TB, thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) *CRL {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     serial(t),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   c.SerialNumber,
			RevocationTime: thisUpdate,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatalf("testpki: creating CRL: %v", err)
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("testpki: parsing CRL: %v", err)
	}
	c := &CRL{List: list, DER: der, PEM: pemBlock("X509 CRL", der)}
	c.DERFile = writeFile(t, "crl-*.der", c.DER)
	c.PEMFile = writeFile(t, "crl-*.pem", c.PEM)
	return c
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
	return issue(t, tmpl, ca.Cert, ca.Key, ca.Chain)
}

// SelfSigned returns a self-signed certificate (not a CA) made from tmpl with
// the defaults of Issue, like a device that is known only by its key.
func SelfSigned(t testing.TB, tmpl *x509.Certificate) *Leaf {
	t.Helper()
	return issue(t, tmpl, nil, nil, nil)
}

// issue signs tmpl with parentKey as parent, or self-signs it when parent is
// nil, and appends chain to the TLS certificate.
func issue(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer, chain [][]byte) *Leaf {
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
	if parent == nil {
		parent, parentKey = &c, key
	}
	der, err := x509.CreateCertificate(rand.Reader, &c, parent, key.Public(), parentKey)
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
		TLS:     tls.Certificate{Certificate: append([][]byte{der}, chain...), PrivateKey: key, Leaf: cert},
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
