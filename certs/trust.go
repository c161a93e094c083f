package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// LoadCAs loads CA bundles: PEM files of one or more CERTIFICATE blocks,
// such as the client_ca files of a route. It returns a pool of every
// certificate for tls.Config or tlsterm.PolicyConfig, and the certificates
// themselves in file order. No files returns a nil pool and no error. The
// certificates are not required to be CAs: like crypto/x509, a pool
// trusts whatever it holds.
//
// Text around the PEM blocks (comments in a bundle) is ignored, but any
// other PEM block is an error naming its type: a private key or a CSR in a
// CA file is a mistake worth hearing about, not something to skip. So are an
// empty file, a malformed block and a DER file (with a hint to convert it).
// Each file's error names the file; the errors of all files are joined.
func LoadCAs(files ...string) (*x509.CertPool, []*x509.Certificate, error) {
	var (
		pool  *x509.CertPool
		certs []*x509.Certificate
		errs  []error
	)
	for _, f := range files {
		cs, err := loadCAFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("certs: CA file %q: %w", f, err))
			continue
		}
		if pool == nil {
			pool = x509.NewCertPool()
		}
		for _, c := range cs {
			pool.AddCert(c)
		}
		certs = append(certs, cs...)
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return pool, certs, nil
}

func loadCAFile(name string) ([]*x509.Certificate, error) {
	data, err := readTrustFile(name)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty: no PEM certificate in it")
	}
	if !looksPEM(data) {
		if _, err := x509.ParseCertificate(data); err == nil {
			return nil, fmt.Errorf("a DER certificate, not PEM: convert it with openssl x509 -inform der -in %s -out %s.pem", name, name)
		}
		return nil, errors.New("no PEM certificate in it")
	}
	blocks, err := decodePEMBlocks(data)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for i, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil, wrongPEMBlock(i, b.Type, "CERTIFICATE")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// LoadCRLs loads certificate revocation lists, such as the client_crl files
// of a route. Each file is PEM, one or more "X509 CRL" blocks, or DER, a
// single CRL: a file without a "-----BEGIN" line is taken for DER. As in
// LoadCAs, other PEM blocks are errors, each file's error names the file, and
// the errors of all files are joined.
//
// LoadCRLs checks the form, not the content: the signature is checked
// against the issuing CA when a chain is verified (see tlsterm.PolicyConfig),
// and an expired CRL still loads; see CRLWarnings.
func LoadCRLs(files ...string) ([]*x509.RevocationList, error) {
	var (
		crls []*x509.RevocationList
		errs []error
	)
	for _, f := range files {
		ls, err := loadCRLFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("certs: CRL file %q: %w", f, err))
			continue
		}
		crls = append(crls, ls...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return crls, nil
}

func loadCRLFile(name string) ([]*x509.RevocationList, error) {
	data, err := readTrustFile(name)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty: no CRL in it")
	}
	if !looksPEM(data) {
		l, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor a DER CRL: %w", err)
		}
		return []*x509.RevocationList{l}, nil
	}
	blocks, err := decodePEMBlocks(data)
	if err != nil {
		return nil, err
	}
	var crls []*x509.RevocationList
	for i, b := range blocks {
		if b.Type != "X509 CRL" {
			return nil, wrongPEMBlock(i, b.Type, "X509 CRL")
		}
		l, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CRL %d: %w", i+1, err)
		}
		crls = append(crls, l)
	}
	return crls, nil
}

// CRLWarnings returns a warning, fit for a log line, for each CRL that is
// out of date at now: past its NextUpdate, or not yet valid (a clock that is
// wrong, here or at the CA). Such CRLs are still applied; the warning says
// so. No warnings return nil.
func CRLWarnings(crls []*x509.RevocationList, now time.Time) []string {
	var ws []string
	for _, l := range crls {
		from := "CRL from " + l.Issuer.String()
		switch {
		case !l.NextUpdate.IsZero() && now.After(l.NextUpdate):
			ws = append(ws, from+" expired "+l.NextUpdate.UTC().Format(time.DateOnly)+
				" (next update was due): still applied")
		case now.Before(l.ThisUpdate):
			ws = append(ws, from+" not valid before "+l.ThisUpdate.UTC().Format(time.RFC3339)+
				" (is a clock wrong?): still applied")
		}
	}
	return ws
}

// readTrustFile reads name, returning only the file system's complaint as
// the error: the caller names the file. It still matches fs.ErrNotExist and
// the like.
func readTrustFile(name string) ([]byte, error) {
	data, err := os.ReadFile(name)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, pe.Err
	}
	return data, err
}

var pemBeginLine = []byte("-----BEGIN ")

// looksPEM reports whether data has a PEM begin line.
func looksPEM(data []byte) bool {
	return bytes.HasPrefix(data, pemBeginLine) || bytes.Contains(data, []byte("\n-----BEGIN "))
}

// decodePEMBlocks decodes every PEM block in data, ignoring text around
// them. A begin line whose block does not decode (bad base64, no end line)
// is an error, where pem.Decode would skip it silently. No blocks is an
// error.
func decodePEMBlocks(data []byte) ([]*pem.Block, error) {
	var starts []int // offset of each begin line
	for off := 0; ; {
		i := bytes.Index(data[off:], pemBeginLine)
		if i < 0 {
			break
		}
		if at := off + i; at == 0 || data[at-1] == '\n' {
			starts = append(starts, at)
		}
		off += i + len(pemBeginLine)
	}
	if len(starts) == 0 {
		return nil, errors.New("no PEM block in it")
	}
	blocks := make([]*pem.Block, 0, len(starts))
	for n, at := range starts {
		b, rest := pem.Decode(data[at:])
		end := len(data) - len(rest) // just past the decoded block
		if b == nil || n+1 < len(starts) && end > starts[n+1] {
			return nil, fmt.Errorf("PEM block %d is malformed", n+1)
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// wrongPEMBlock is the error for PEM block i (from 0) of type typ where want
// was expected, with a hint for the usual mistake. It names only the type:
// the block may be a key.
func wrongPEMBlock(i int, typ, want string) error {
	hint := ""
	if strings.HasSuffix(typ, "PRIVATE KEY") {
		hint = " (a private key: wrong file?)"
	}
	return fmt.Errorf("PEM block %d is %q, not %q%s", i+1, typ, want, hint)
}
