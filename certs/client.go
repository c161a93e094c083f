package certs

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"software.sslmate.com/src/go-pkcs12"
)

// DefaultClientValidity is how long a dev client certificate is valid when
// ClientOptions.Validity is zero.
const DefaultClientValidity = 365 * 24 * time.Hour

// maxClientName is the longest client name: the upper bound of an X.509
// common name (RFC 5280, ub-common-name).
const maxClientName = 64

// p12Encoder encodes the PKCS#12 files: PBES2 with PBKDF2-HMAC-SHA-256 and
// AES-256-CBC for the key and certificates, an HMAC-SHA-256 MAC (OpenSSL 3's
// default). Firefox, Chromium and pk12util (NSS), Windows 10 1809+ and
// OpenSSL 1.1.1+ import it; macOS Keychain Access may not (it reads the
// legacy 3DES/RC2 files). Modern2026's PBMAC1 MAC is too new: NSS 3.87 and
// OpenSSL 3.0 reject it.
var p12Encoder = pkcs12.Modern2023

// ClientOptions are the options of IssueClient. The zero value is usable.
type ClientOptions struct {
	// Password protects the PKCS#12 file. Default "": a random password of
	// 16 characters (80 bits), returned in ClientFiles.Password.
	Password string
	// Validity is how long the certificate is valid, from now. Default
	// (zero): DefaultClientValidity, one year. It may not outlive the CA.
	Validity time.Duration
	// Force replaces the files of an existing client of the same name.
	// Default false: IssueClient refuses, so that a key in use is not lost
	// by mistake.
	Force bool
	// OU are the subject's organizational units, for routes whose
	// allow-lists or topic permissions select clients by OU
	// ("operators"). Default none.
	OU []string
}

// ClientFiles are the files IssueClient wrote for one client.
type ClientFiles struct {
	Name     string
	CertFile string // dir/NAME.pem: the certificate (PEM, mode 0644)
	KeyFile  string // dir/NAME-key.pem: its private key (PEM, mode 0600)
	P12File  string // dir/NAME.p12: key, certificate and CA for browsers (PKCS#12, mode 0600)
	CAFile   string // dir/ca.pem: the CA that issued the certificate
	// Password protects P12File; GeneratedPassword tells whether
	// IssueClient chose it.
	Password          string
	GeneratedPassword bool
	Certificate       *x509.Certificate
}

// IssueClient issues a client certificate for name from the dev CA in dir
// (made by EnsureDev): an ECDSA P-256 key, subject CN=name and O "smqgw
// development", key usage digitalSignature, extended key usage clientAuth
// only. It writes the certificate, the key and a PKCS#12 file holding both
// and the CA certificate (see ClientFiles). A name is 1 to 64 letters,
// digits, '.', '-', '_' and '@', starting with a letter or digit; it may
// not end in "-key" nor name a file of the dev PKI itself ("ca", "server").
func IssueClient(dir, name string, opts ClientOptions) (*ClientFiles, error) {
	if err := checkName("client", name); err != nil {
		return nil, err
	}
	for _, ou := range opts.OU {
		if ou == "" || len(ou) > maxClientName || !utf8.ValidString(ou) {
			return nil, fmt.Errorf("certs: invalid OU %q: want 1 to %d characters of UTF-8 text", ou, maxClientName)
		}
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("certs: invalid validity %v: must be positive", opts.Validity)
	}
	ca, caKey, err := loadDevCA(dir)
	if err != nil {
		return nil, err
	}
	f := &ClientFiles{
		Name:     name,
		CertFile: filepath.Join(dir, name+".pem"),
		KeyFile:  filepath.Join(dir, name+"-key.pem"),
		P12File:  filepath.Join(dir, name+".p12"),
		CAFile:   filepath.Join(dir, DevCAFile),
		Password: opts.Password,
	}
	if !opts.Force {
		if err := checkFree("client", name, dir, f.CertFile, f.KeyFile, f.P12File); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	notAfter, err := leafNotAfter(now, opts.Validity, DefaultClientValidity, ca, dir)
	if err != nil {
		return nil, err
	}
	if f.Password == "" {
		if f.Password, err = randomPassword(); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		f.GeneratedPassword = true
	}

	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"smqgw development"}, OrganizationalUnit: opts.OU, CommonName: name},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, key, err := issue(tmpl, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: client %q: %w", name, err)
	}
	if f.Certificate, err = x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("certs: client %q: %w", name, err)
	}
	p12, err := p12Encoder.Encode(key, f.Certificate, []*x509.Certificate{ca}, f.Password)
	if err != nil {
		return nil, fmt.Errorf("certs: client %q: pkcs12: %w", name, err)
	}
	if err := writePair(f.CertFile, f.KeyFile, der, key); err != nil {
		return nil, fmt.Errorf("certs: client %q: %w", name, err)
	}
	if err := writeAtomic(f.P12File, p12, 0o600); err != nil {
		return nil, fmt.Errorf("certs: client %q: %w", name, err)
	}
	return f, nil
}

// loadDevCA loads the dev CA in dir (made by EnsureDev) to issue a
// certificate with; a missing CA is an error with a hint to make one.
func loadDevCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ca, caKey, err := loadPair(filepath.Join(dir, DevCAFile), filepath.Join(dir, DevCAKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, &hintError{fmt.Sprintf("certs: no dev CA in %s: run `smqgw certs init -dir %s` first", dir, dir), err}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("certs: dev CA in %s: %w", dir, err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("certs: dev CA in %s: %s is not a CA certificate", dir, DevCAFile)
	}
	return ca, caKey, nil
}

// checkFree returns an error matching fs.ErrExist if any of files exists,
// so that the files of an existing client or node (kind) called name are
// not replaced by mistake.
func checkFree(kind, name, dir string, files ...string) error {
	for _, file := range files {
		if _, err := os.Lstat(file); err == nil {
			return &hintError{fmt.Sprintf("certs: %s %q exists in %s (%s): replace it with -force", kind, name, dir, filepath.Base(file)), fs.ErrExist}
		}
	}
	return nil
}

// leafNotAfter returns the end of a certificate valid for validity from
// now (def when zero), which may not outlive the CA.
func leafNotAfter(now time.Time, validity, def time.Duration, ca *x509.Certificate, dir string) (time.Time, error) {
	if validity == 0 {
		validity = def
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		return time.Time{}, fmt.Errorf("certs: validity %v outlives the dev CA in %s (valid until %s)",
			validity, dir, ca.NotAfter.Format(time.DateOnly))
	}
	return notAfter, nil
}

// checkName returns an error unless name, of a client or a node (kind),
// is usable both as a file name in the dev PKI directory and as a
// certificate's common name.
func checkName(kind, name string) error {
	bad := func(why string) error {
		return fmt.Errorf("certs: invalid %s name %q: %s", kind, name, why)
	}
	if name == "" {
		return bad("empty")
	}
	if len(name) > maxClientName {
		return bad(fmt.Sprintf("longer than %d characters", maxClientName))
	}
	for i, c := range name {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if i == 0 && !alnum {
			return bad("must start with a letter or a digit")
		}
		if !alnum && !strings.ContainsRune(".-_@", c) {
			return bad("use only letters, digits, '.', '-', '_' and '@'")
		}
	}
	if strings.HasSuffix(name, "-key") {
		return bad(`must not end in "-key", which names key files`)
	}
	for _, f := range []string{DevCAFile, DevServerFile} {
		if name+".pem" == f {
			return bad("names a file of the dev PKI itself")
		}
	}
	return nil
}

// randomPassword returns 16 random characters of lowercase base32 (80 bits).
func randomPassword() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return strings.ToLower(base32.StdEncoding.EncodeToString(b)), nil
}

// hintError is an error whose message says what to do, and that still
// matches its cause with errors.Is (fs.ErrNotExist, fs.ErrExist).
type hintError struct {
	msg string
	err error
}

func (e *hintError) Error() string { return e.msg }
func (e *hintError) Unwrap() error { return e.err }
