// Package certs provides the certificates smqgw serves and trusts: the
// Source interface every TLS listener is built around, with its kinds —
// PEM files chosen by SNI and reloaded atomically (Files), ACME through
// autocert (ACME), a fixed certificate (Static) — a polling Watcher for
// reloads, loaders for client CA bundles and CRLs, and the development PKI
// (a local CA, a server certificate, client certificates with PKCS#12,
// cluster node certificates) that the zero-configuration demo and
// `smqgw certs` share.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Dev PKI file names inside its directory.
const (
	DevCAFile        = "ca.pem"
	DevCAKeyFile     = "ca-key.pem"
	DevServerFile    = "server.pem"
	DevServerKeyFile = "server-key.pem"
)

// devRenewBefore: a dev server certificate this close to expiry is replaced.
const devRenewBefore = 30 * 24 * time.Hour

// Dev is a development PKI on disk.
type Dev struct {
	Dir    string
	CAFile string // the CA certificate clients must trust
	Server tls.Certificate

	// CreatedCA and IssuedServer report what EnsureDev wrote: a new CA, a
	// new (or replaced) server certificate. Both false: everything reused.
	CreatedCA    bool
	IssuedServer bool
}

// EnsureDev loads the dev PKI in dir, creating what is missing: a CA (valid
// 10 years) and a server certificate for hosts (names and IP addresses,
// valid 1 year). A server certificate that does not cover hosts, or expires
// within 30 days, is replaced. Keys are written 0600, dir 0700.
func EnsureDev(dir string, hosts []string) (*Dev, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: dev pki: %w", err)
	}
	d := &Dev{Dir: dir, CAFile: filepath.Join(dir, DevCAFile)}
	caKeyFile := filepath.Join(dir, DevCAKeyFile)
	ca, caKey, err := loadPair(d.CAFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		// Half a CA is not replaced: a new CA would silently orphan every
		// certificate the old one issued.
		for _, f := range []string{d.CAFile, caKeyFile} {
			if _, serr := os.Stat(f); serr == nil {
				return nil, fmt.Errorf("certs: dev pki in %s: %s exists but %s is missing: restore it, or remove both to make a new CA",
					dir, filepath.Base(f), otherOf(f, d.CAFile, caKeyFile))
			}
		}
		ca, caKey, err = createCA(dir)
		d.CreatedCA = err == nil
	}
	if err != nil {
		return nil, fmt.Errorf("certs: dev pki in %s: %w", dir, err)
	}
	certFile, keyFile := filepath.Join(dir, DevServerFile), filepath.Join(dir, DevServerKeyFile)
	srv, _, err := loadPair(certFile, keyFile)
	if err != nil || !covers(srv, hosts) || time.Until(srv.NotAfter) < devRenewBefore ||
		srv.CheckSignatureFrom(ca) != nil {
		if err := createServer(certFile, keyFile, ca, caKey, hosts); err != nil {
			return nil, fmt.Errorf("certs: dev pki in %s: %w", dir, err)
		}
		d.IssuedServer = true
	}
	d.Server, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: dev pki in %s: %w", dir, err)
	}
	return d, nil
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(c.DNSNames, h) {
			return false
		}
	}
	return true
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s or %s: no PEM data", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return cert, key, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func createCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"smqgw development CA"}, CommonName: "smqgw dev CA " + host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(filepath.Join(dir, DevCAFile), filepath.Join(dir, DevCAKeyFile), der, key); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func createServer(certFile, keyFile string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string) error {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"smqgw development"}, CommonName: "smqgw dev server"},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	addHosts(tmpl, hosts)
	der, key, err := issue(tmpl, ca, caKey)
	if err != nil {
		return err
	}
	return writePair(certFile, keyFile, der, key)
}

// addHosts adds hosts to tmpl's subject alternative names: IP addresses
// as such, anything else as a DNS name.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}

// issue signs tmpl with the CA for a new ECDSA P-256 key, under a new
// random serial number, and returns the certificate (DER) and the key.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return der, key, nil
}

// writePair writes a certificate (0644) and its key (0600), each through a
// temporary file renamed into place.
func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// otherOf returns whichever of a and b is not f, as a base name.
func otherOf(f, a, b string) string {
	if f == a {
		return filepath.Base(b)
	}
	return filepath.Base(a)
}
