package testpki_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/testpki"
)

func TestFilesMatch(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Client(t, "device-1")
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil || string(pem) != string(ca.CertPEM) {
		t.Fatalf("CA file: %v", err)
	}
	pair, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(leaf.Cert) {
		t.Error("certificate file does not hold Cert")
	}
	if leaf.Cert.Subject.CommonName != "device-1" {
		t.Errorf("CN %q", leaf.Cert.Subject.CommonName)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Cert.Verify(opts); err != nil {
		t.Errorf("client certificate does not verify for clientAuth: %v", err)
	}
	opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if _, err := leaf.Cert.Verify(opts); err == nil {
		t.Error("client certificate verifies for serverAuth")
	}
}

// TestHandshake runs a real mutual-TLS handshake over loopback with the
// server and client certificates.
func TestHandshake(t *testing.T) {
	ca := testpki.NewCA(t)
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		t.Run(host, func(t *testing.T) {
			srv := ca.Server(t)
			cli := ca.Client(t, "device-2")
			l, err := tls.Listen("tcp", "127.0.0.1:0", srv.ServerConfig(ca.Pool))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			peer := make(chan string, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					peer <- err.Error()
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					peer <- err.Error()
					return
				}
				peer <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
				io.Copy(io.Discard, c)
			}()
			nc, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(nc, &tls.Config{RootCAs: ca.Pool, ServerName: host, Certificates: []tls.Certificate{cli.TLS}})
			defer c.Close()
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			if got := <-peer; got != "device-2" {
				t.Errorf("server saw %q", got)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca := testpki.NewCA(t)
	expired := ca.Issue(t, &x509.Certificate{
		NotBefore:   ca.Cert.NotBefore,
		NotAfter:    ca.Cert.NotBefore.Add(1),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	_, err := expired.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var ie x509.CertificateInvalidError
	if !errors.As(err, &ie) || ie.Reason != x509.Expired {
		t.Errorf("expired certificate: %v", err)
	}
}

func TestIntermediate(t *testing.T) {
	root := testpki.NewRootCA(t)
	inter := root.Intermediate(t, nil)
	leaf := inter.Client(t, "device-3")
	if n := len(leaf.TLS.Certificate); n != 2 {
		t.Fatalf("leaf chain has %d certificates, want 2", n)
	}
	mid := x509.NewCertPool()
	mid.AddCert(inter.Cert)
	opts := x509.VerifyOptions{Roots: inter.Pool, Intermediates: mid, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	chains, err := leaf.Cert.Verify(opts)
	if err != nil {
		t.Fatalf("leaf of intermediate does not verify: %v", err)
	}
	if got := len(chains[0]); got != 3 {
		t.Errorf("chain length %d, want 3", got)
	}
}

func TestSelfSigned(t *testing.T) {
	l := testpki.SelfSigned(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err := l.Cert.CheckSignatureFrom(l.Cert); err == nil {
		t.Error("self-signed leaf is a CA") // CheckSignatureFrom needs a CA parent
	}
	if err := l.Cert.CheckSignature(l.Cert.SignatureAlgorithm, l.Cert.RawTBSCertificate, l.Cert.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
}

func TestCRL(t *testing.T) {
	root := testpki.NewRootCA(t)
	inter := root.Intermediate(t, nil)
	leaf := root.Client(t, "device-4")
	kept := root.Client(t, "device-5")
	now := time.Now()
	crl := root.CRL(t, leaf.Cert, inter.Cert)

	for _, f := range []struct {
		name string
		file string
		want []byte
	}{{"DER", crl.DERFile, crl.DER}, {"PEM", crl.PEMFile, crl.PEM}} {
		data, err := os.ReadFile(f.file)
		if err != nil || !bytes.Equal(data, f.want) {
			t.Fatalf("%s file does not hold %s: %v", f.name, f.name, err)
		}
	}
	b, rest := pem.Decode(crl.PEM)
	if b == nil || b.Type != "X509 CRL" || !bytes.Equal(b.Bytes, crl.DER) || len(rest) != 0 {
		t.Fatalf("PEM is not one X509 CRL block of DER")
	}
	l, err := x509.ParseRevocationList(crl.DER)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.Raw, crl.List.Raw) {
		t.Error("List is not DER")
	}
	if err := l.CheckSignatureFrom(root.Cert); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	if !bytes.Equal(l.RawIssuer, root.Cert.RawSubject) || !bytes.Equal(l.AuthorityKeyId, root.Cert.SubjectKeyId) {
		t.Error("issuer or authority key ID is not the CA's")
	}
	if l.ThisUpdate.After(now.Add(-59*time.Minute)) || l.NextUpdate.Before(now.Add(23*time.Hour)) {
		t.Errorf("valid %v to %v, want from an hour ago for a day", l.ThisUpdate, l.NextUpdate)
	}
	revoked := map[string]bool{}
	for _, e := range l.RevokedCertificateEntries {
		revoked[e.SerialNumber.String()] = true
	}
	if len(revoked) != 2 || !revoked[leaf.Cert.SerialNumber.String()] || !revoked[inter.Cert.SerialNumber.String()] ||
		revoked[kept.Cert.SerialNumber.String()] {
		t.Errorf("revoked serials %v", revoked)
	}

	// An intermediate CA signs CRLs too, and CRLAt sets the dates.
	this, next := now.Add(-72*time.Hour), now.Add(-48*time.Hour)
	old := inter.CRLAt(t, this, next)
	if err := old.List.CheckSignatureFrom(inter.Cert); err != nil {
		t.Errorf("intermediate's CRL: %v", err)
	}
	if !old.List.ThisUpdate.Equal(this.Truncate(time.Second)) || !old.List.NextUpdate.Equal(next.Truncate(time.Second)) {
		t.Errorf("CRLAt dates %v to %v, want %v to %v", old.List.ThisUpdate, old.List.NextUpdate, this, next)
	}
	if n := len(old.List.RevokedCertificateEntries); n != 0 {
		t.Errorf("empty CRL has %d entries", n)
	}
}
