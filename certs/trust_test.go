package certs_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/internal/testpki"
)

// writeFile writes data to a new file in the test's temporary directory.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestLoadCAs(t *testing.T) {
	t.Parallel()
	ca1, ca2 := testpki.NewCA(t), testpki.NewRootCA(t)
	leaf := ca1.Client(t, "device-1")
	badB64 := []byte("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
	badDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})
	bundle := writeFile(t, "bundle.pem", cat([]byte("# first CA\n"), ca1.CertPEM, []byte("\n# second CA\n"), ca2.CertPEM))
	empty := writeFile(t, "empty.pem", nil)
	garbage := writeFile(t, "garbage.pem", []byte("hello, world\n"))
	der := writeFile(t, "ca.der", ca1.Cert.Raw)
	certAndKey := writeFile(t, "combined.pem", cat(ca1.CertPEM, leaf.KeyPEM))
	malformed := writeFile(t, "malformed.pem", cat(badB64, ca1.CertPEM))
	malformedLast := writeFile(t, "malformed-last.pem", cat(ca1.CertPEM, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n")))
	notCert := writeFile(t, "notcert.pem", badDER)
	missing := filepath.Join(t.TempDir(), "missing.pem")

	tests := []struct {
		name  string
		files []string
		want  []*x509.Certificate
		errs  []string // substrings of the error, in order
	}{
		{name: "no files"},
		{name: "one certificate", files: []string{ca1.CertFile}, want: []*x509.Certificate{ca1.Cert}},
		{name: "several certificates with comments", files: []string{bundle}, want: []*x509.Certificate{ca1.Cert, ca2.Cert}},
		{name: "several files", files: []string{ca2.CertFile, ca1.CertFile}, want: []*x509.Certificate{ca2.Cert, ca1.Cert}},
		{name: "empty file", files: []string{empty}, errs: []string{`certs: CA file "` + empty + `": empty: no PEM certificate in it`}},
		{name: "garbage", files: []string{garbage}, errs: []string{`certs: CA file "` + garbage + `": no PEM certificate in it`}},
		{name: "DER", files: []string{der}, errs: []string{`certs: CA file "` + der + `": a DER certificate, not PEM: convert it with openssl x509 -inform der -in ` + der}},
		{name: "key file by mistake", files: []string{leaf.KeyFile},
			errs: []string{`certs: CA file "` + leaf.KeyFile + `": PEM block 1 is "PRIVATE KEY", not "CERTIFICATE" (a private key: wrong file?)`}},
		{name: "certificate and key", files: []string{certAndKey},
			errs: []string{`": PEM block 2 is "PRIVATE KEY", not "CERTIFICATE" (a private key: wrong file?)`}},
		{name: "malformed block before a good one", files: []string{malformed}, errs: []string{`": PEM block 1 is malformed`}},
		{name: "malformed last block", files: []string{malformedLast}, errs: []string{`": PEM block 2 is malformed`}},
		{name: "not a certificate", files: []string{notCert}, errs: []string{`certs: CA file "` + notCert + `": certificate 1: x509: malformed certificate`}},
		{name: "missing file", files: []string{missing}, errs: []string{`certs: CA file "` + missing + `": no such file or directory`}},
		{name: "every bad file is named", files: []string{empty, ca1.CertFile, garbage},
			errs: []string{`CA file "` + empty + `": empty`, `CA file "` + garbage + `": no PEM`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, got, err := certs.LoadCAs(tt.files...)
			if len(tt.errs) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.errs)
				}
				msg := err.Error()
				for _, e := range tt.errs {
					i := strings.Index(msg, e)
					if i < 0 {
						t.Fatalf("error %q\nwant it to contain %q", err, e)
					}
					msg = msg[i+len(e):]
				}
				if pool != nil || got != nil {
					t.Error("certificates returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d certificates, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("certificate %d is %q", i, got[i].Subject)
				}
			}
			if len(tt.want) == 0 {
				if pool != nil {
					t.Error("pool without files")
				}
				return
			}
			for _, c := range tt.want {
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
					t.Errorf("pool lacks %q: %v", c.Subject, err)
				}
			}
		})
	}

	t.Run("pool verifies clients", func(t *testing.T) {
		pool, _, err := certs.LoadCAs(bundle)
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if _, err := leaf.Cert.Verify(opts); err != nil {
			t.Error(err)
		}
	})
	t.Run("missing file is fs.ErrNotExist", func(t *testing.T) {
		if _, _, err := certs.LoadCAs(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v is not fs.ErrNotExist", err)
		}
	})
}

func TestLoadCRLs(t *testing.T) {
	t.Parallel()
	root := testpki.NewRootCA(t)
	inter := root.Intermediate(t, nil)
	leaf := inter.Client(t, "device-1")
	rootCRL := root.CRL(t, inter.Cert)
	interCRL := inter.CRL(t, leaf.Cert)
	multi := writeFile(t, "crls.pem", cat([]byte("# root\n"), rootCRL.PEM, []byte("# intermediate\n"), interCRL.PEM))
	empty := writeFile(t, "empty.crl", nil)
	garbage := writeFile(t, "garbage.crl", []byte("hello, world\n"))
	truncated := writeFile(t, "truncated.crl", rootCRL.DER[:len(rootCRL.DER)-10])
	badDER := writeFile(t, "bad.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte("junk")}))
	missing := filepath.Join(t.TempDir(), "missing.crl")

	tests := []struct {
		name  string
		files []string
		want  []*x509.RevocationList
		err   string
	}{
		{name: "no files"},
		{name: "PEM", files: []string{rootCRL.PEMFile}, want: []*x509.RevocationList{rootCRL.List}},
		{name: "DER", files: []string{interCRL.DERFile}, want: []*x509.RevocationList{interCRL.List}},
		{name: "multi-block PEM", files: []string{multi}, want: []*x509.RevocationList{rootCRL.List, interCRL.List}},
		{name: "PEM and DER files", files: []string{interCRL.PEMFile, rootCRL.DERFile}, want: []*x509.RevocationList{interCRL.List, rootCRL.List}},
		{name: "empty file", files: []string{empty}, err: `certs: CRL file "` + empty + `": empty: no CRL in it`},
		{name: "garbage", files: []string{garbage}, err: `certs: CRL file "` + garbage + `": neither PEM nor a DER CRL: x509: `},
		{name: "truncated DER", files: []string{truncated}, err: `certs: CRL file "` + truncated + `": neither PEM nor a DER CRL: x509: `},
		{name: "certificate by mistake", files: []string{root.CertFile},
			err: `certs: CRL file "` + root.CertFile + `": PEM block 1 is "CERTIFICATE", not "X509 CRL"`},
		{name: "key by mistake", files: []string{leaf.KeyFile},
			err: `": PEM block 1 is "PRIVATE KEY", not "X509 CRL" (a private key: wrong file?)`},
		{name: "bad CRL in PEM", files: []string{rootCRL.PEMFile, badDER}, err: `certs: CRL file "` + badDER + `": CRL 1: x509: `},
		{name: "missing file", files: []string{missing}, err: `certs: CRL file "` + missing + `": no such file or directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := certs.LoadCRLs(tt.files...)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v\nwant it to contain %q", err, tt.err)
				}
				if got != nil {
					t.Error("CRLs returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d CRLs, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i].Raw, tt.want[i].Raw) {
					t.Errorf("CRL %d is not the one written", i)
				}
			}
		})
	}
}

func TestCRLWarnings(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	now := time.Now()
	fresh := ca.CRL(t)
	expired := ca.CRLAt(t, now.Add(-72*time.Hour), now.Add(-48*time.Hour))
	future := ca.CRLAt(t, now.Add(time.Hour), now.Add(48*time.Hour))
	lists := func(cs ...*testpki.CRL) []*x509.RevocationList {
		var ls []*x509.RevocationList
		for _, c := range cs {
			ls = append(ls, c.List)
		}
		return ls
	}
	tests := []struct {
		name string
		crls []*x509.RevocationList
		want []string
	}{
		{"none", nil, nil},
		{"fresh", lists(fresh), nil},
		{"expired", lists(fresh, expired), []string{
			"CRL from CN=smqgw test CA,O=smqgw tests expired " + expired.List.NextUpdate.UTC().Format(time.DateOnly) + " (next update was due): still applied",
		}},
		{"not yet valid", lists(future), []string{
			"CRL from CN=smqgw test CA,O=smqgw tests not valid before " + future.List.ThisUpdate.UTC().Format(time.RFC3339) + " (is a clock wrong?): still applied",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := certs.CRLWarnings(tt.crls, now); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CRLWarnings =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}
