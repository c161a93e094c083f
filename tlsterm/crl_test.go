package tlsterm_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
)

// crlPKI is a small PKI with revocations: a CA that issued devices directly,
// and a root with two intermediates, one of them revoked.
type crlPKI struct {
	clients, root, inter, lab *testpki.CA

	device, kept      *testpki.Leaf // issued by clients; device is revoked
	chained, chained2 *testpki.Leaf // issued by inter (revoked by root); chained is also revoked by inter
	labDevice         *testpki.Leaf // issued by lab, nothing revoked

	clientsCRL, rootCRL, interCRL *testpki.CRL
	expiredCRL                    *testpki.CRL // clients', past its NextUpdate, revoking device
	impostorCRL                   *testpki.CRL // another CA of the same name, revoking device
	forgedCRL                     *x509.RevocationList
}

func newCRLPKI(t testing.TB) *crlPKI {
	t.Helper()
	now := time.Now()
	k := &crlPKI{clients: testpki.NewCA(t), root: testpki.NewRootCA(t)}
	k.inter = k.root.Intermediate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "devices CA"}})
	k.lab = k.root.Intermediate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "lab CA"}})
	k.device = k.clients.Client(t, "device-1")
	k.kept = k.clients.Client(t, "device-2")
	k.chained = k.inter.Client(t, "device-9")
	k.chained2 = k.inter.Client(t, "device-10")
	k.labDevice = k.lab.Client(t, "device-11")

	k.clientsCRL = k.clients.CRL(t, k.device.Cert)
	k.rootCRL = k.root.CRL(t, k.inter.Cert)
	k.interCRL = k.inter.CRL(t, k.chained.Cert)
	k.expiredCRL = k.clients.CRLAt(t, now.Add(-72*time.Hour), now.Add(-48*time.Hour), k.device.Cert)

	// NewCA always uses the same subject, so another CA's CRL claims the
	// same issuer name, with another authority key ID.
	impostor := testpki.NewCA(t)
	k.impostorCRL = impostor.CRL(t, k.device.Cert)
	// A forged CRL has the issuer name and the authority key ID of
	// clients, but impostor's signature.
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: now.Add(-time.Hour),
		NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: k.device.Cert.SerialNumber, RevocationTime: now.Add(-time.Hour)},
		},
	}, k.clients.Cert, impostor.Key)
	if err != nil {
		t.Fatal(err)
	}
	if k.forgedCRL, err = x509.ParseRevocationList(der); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCheckCRL runs revocation outcomes over real TLS on loopback, with TLS
// 1.2 and 1.3.
func TestCheckCRL(t *testing.T) {
	t.Parallel()
	k := newCRLPKI(t)
	fromFiles := func(files ...string) []*x509.RevocationList {
		t.Helper()
		crls, err := certs.LoadCRLs(files...)
		if err != nil {
			t.Fatal(err)
		}
		return crls
	}
	lists := func(cs ...*testpki.CRL) []*x509.RevocationList {
		var ls []*x509.RevocationList
		for _, c := range cs {
			ls = append(ls, c.List)
		}
		return ls
	}
	all := lists(k.clientsCRL, k.rootCRL, k.interCRL)
	both := x509.NewCertPool()
	both.AddCert(k.clients.Cert)
	both.AddCert(k.root.Cert)

	const revoked = "certificate revoked"
	tests := []struct {
		name   string
		mode   tlsterm.Mode
		crls   []*x509.RevocationList
		allow  []string // AllowCN
		cert   *testpki.Leaf
		reason string // "" when accepted
	}{
		{name: "revoked leaf", crls: lists(k.clientsCRL), cert: k.device, reason: revoked},
		{name: "revoked leaf, optional", mode: tlsterm.Optional, crls: lists(k.clientsCRL), cert: k.device, reason: revoked},
		{name: "revoked leaf, all CRLs", crls: all, cert: k.device, reason: revoked},
		{name: "revocation before allow-lists", crls: all, allow: []string{"nobody"}, cert: k.device, reason: revoked},
		{name: "unrevoked leaf of the same CA", crls: all, cert: k.kept},
		{name: "unrevoked leaf, empty CRL", crls: lists(k.clients.CRL(t)), cert: k.device},
		{name: "revoked intermediate", crls: lists(k.rootCRL), cert: k.chained2, reason: `CA certificate "devices CA" revoked`},
		{name: "revoked intermediate wins over revoked leaf", crls: lists(k.rootCRL, k.interCRL), cert: k.chained, reason: `CA certificate "devices CA" revoked`},
		{name: "leaf revoked by its intermediate", crls: lists(k.interCRL), cert: k.chained, reason: revoked},
		{name: "sibling of a revoked leaf", crls: lists(k.interCRL), cert: k.chained2},
		{name: "other intermediate of the same root", crls: all, cert: k.labDevice},
		{name: "CRL of another CA of the same name", crls: lists(k.impostorCRL), cert: k.device},
		{name: "CRL with a forged signature", crls: []*x509.RevocationList{k.forgedCRL}, cert: k.device},
		{name: "forged CRL beside a good one", crls: []*x509.RevocationList{k.forgedCRL, k.clientsCRL.List}, cert: k.device, reason: revoked},
		{name: "expired CRL still applied", crls: lists(k.expiredCRL), cert: k.device, reason: revoked},
		{name: "CRL loaded from DER", crls: fromFiles(k.clientsCRL.DERFile), cert: k.device, reason: revoked},
		{name: "CRL loaded from PEM", crls: fromFiles(k.clientsCRL.PEMFile), cert: k.device, reason: revoked},
		{name: "intermediate CRL loaded from PEM", crls: fromFiles(k.rootCRL.PEMFile, k.interCRL.DERFile), cert: k.chained, reason: `CA certificate "devices CA" revoked`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mode := tt.mode
			if mode == tlsterm.Off {
				mode = tlsterm.Require
			}
			s := startServer(t, mustPolicy(t, tlsterm.PolicyConfig{Mode: mode, ClientCAs: both, AllowCN: tt.allow, CRLs: tt.crls}))
			want := smq.CodeAccepted
			if tt.reason != "" {
				want = smq.CodeCertNotAccepted
			}
			for _, v := range versions {
				t.Run(v.name, func(t *testing.T) {
					code, _ := s.dial(t, clientOpts{cert: &tt.cert.TLS, version: v.v})
					r := s.next(t)
					if r.err != nil {
						t.Fatalf("server handshake: %v", r.err)
					}
					d := r.decision
					if code != want || d.Code != want || d.Reason != tt.reason {
						t.Fatalf("decision %v %q (client got %v), want %v %q", d.Code, d.Reason, code, want, tt.reason)
					}
					if d.Accepted() && (d.Identity == nil || d.Identity.CN != tt.cert.Cert.Subject.CommonName) {
						t.Errorf("identity %+v, want CN %q", d.Identity, tt.cert.Cert.Subject.CommonName)
					}
				})
			}
		})
	}
}

// TestCheckCRLConcurrent runs Check from many goroutines on one policy whose
// signature cache starts empty; run it with -race.
func TestCheckCRLConcurrent(t *testing.T) {
	t.Parallel()
	k := newCRLPKI(t)
	roots := x509.NewCertPool()
	roots.AddCert(k.clients.Cert)
	roots.AddCert(k.root.Cert)
	p := mustPolicy(t, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: roots,
		CRLs: []*x509.RevocationList{k.forgedCRL, k.impostorCRL.List, k.clientsCRL.List, k.rootCRL.List, k.interCRL.List}})
	cases := []struct {
		leaf   *testpki.Leaf
		reason string
	}{
		{k.device, "certificate revoked"},
		{k.kept, ""},
		{k.chained, `CA certificate "devices CA" revoked`},
		{k.labDevice, ""},
	}
	now := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				c := cases[(g+i)%len(cases)]
				if d := p.Check(stateOf(c.leaf), now); d.Reason != c.reason {
					t.Errorf("%s: reason %q, want %q", c.leaf.Cert.Subject.CommonName, d.Reason, c.reason)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestNewPolicyCRLErrors checks the configurations CRLs are not allowed in.
func TestNewPolicyCRLErrors(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	crl := ca.CRL(t).List
	pin := tlsterm.SPKIPin(ca.Client(t, "device-1").Cert)
	// An indirect CRL names another certificate issuer in an entry.
	issuerExt, err := asn1.Marshal([]asn1.RawValue{})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{
			SerialNumber:    big.NewInt(42),
			RevocationTime:  time.Now().Add(-time.Hour),
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 29}, Critical: true, Value: issuerExt}},
		}},
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	indirect, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  tlsterm.PolicyConfig
		want []string
	}{
		{"off with CRLs", tlsterm.PolicyConfig{CRLs: []*x509.RevocationList{crl}},
			[]string{`tlsterm: client_auth "off" ignores client certificates, but client_crl is set: use optional or require, or remove them`}},
		{"off with CAs and CRLs", tlsterm.PolicyConfig{ClientCAs: ca.Pool, CRLs: []*x509.RevocationList{crl}},
			[]string{`tlsterm: client_auth "off" ignores client certificates, but client_ca, client_crl are set: use optional or require, or remove them`}},
		{"pins only", tlsterm.PolicyConfig{Mode: tlsterm.Require, Pins: []string{pin}, CRLs: []*x509.RevocationList{crl}},
			[]string{`tlsterm: client_crl needs client_ca: a CRL revokes certificates a CA issued, and pinned keys have none (remove a revoked key from pins instead)`}},
		{"nil CRL", tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: ca.Pool, CRLs: []*x509.RevocationList{crl, nil}},
			[]string{`tlsterm: client_crl 2: no CRL (nil)`}},
		{"indirect CRL", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: ca.Pool, CRLs: []*x509.RevocationList{indirect}},
			[]string{`tlsterm: client_crl 1: CRL from "CN=smqgw test CA,O=smqgw tests" is indirect (it revokes certificates of other issuers): not supported`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tlsterm.NewPolicy(tt.cfg)
			if err == nil {
				t.Fatalf("NewPolicy accepted the configuration (%v)", p)
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("error\n got %s\nwant %s", got, want)
			}
		})
	}

	// A policy holds on to what it indexed: dropping the CRL from the
	// configuration afterwards changes nothing.
	revoking := ca.CRL(t, ca.Client(t, "device-3").Cert)
	cfg := tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: ca.Pool, CRLs: []*x509.RevocationList{revoking.List}}
	p := mustPolicy(t, cfg)
	cfg.CRLs[0] = crl
	leaf := ca.Issue(t, &x509.Certificate{SerialNumber: revoking.List.RevokedCertificateEntries[0].SerialNumber,
		Subject: pkix.Name{CommonName: "device-3"}, ExtKeyUsage: clientAuth})
	if d := p.Check(stateOf(leaf), time.Time{}); d.Reason != "certificate revoked" {
		t.Errorf("after changing the configuration: %v %q", d.Code, d.Reason)
	}
}

// BenchmarkCheckWithCRL measures Check on a handshake's peer certificates,
// without CRLs and with a CRL of 10,000 serial numbers. Check's own cost
// is dominated by chain verification; the CRL lookup adds a map access per
// certificate, and a revoked certificate's CRL signature is checked once.
func BenchmarkCheckWithCRL(b *testing.B) {
	ca := testpki.NewCA(b)
	leaf := ca.Client(b, "device-1")
	gone := ca.Client(b, "device-2")
	many := make([]*x509.Certificate, 10_000)
	for i := range many {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			b.Fatal(err)
		}
		many[i] = &x509.Certificate{SerialNumber: n}
	}
	big := ca.CRL(b, append(many, gone.Cert)...)

	for _, bb := range []struct {
		name   string
		crls   []*x509.RevocationList
		leaf   *testpki.Leaf
		reason string
	}{
		{"no CRL", nil, leaf, ""},
		{"10000 revoked, leaf not", []*x509.RevocationList{big.List}, leaf, ""},
		{"10000 revoked, leaf too", []*x509.RevocationList{big.List}, gone, "certificate revoked"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			p := mustPolicy(b, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: ca.Pool, CRLs: bb.crls})
			cs := stateOf(bb.leaf)
			now := time.Now()
			if d := p.Check(cs, now); d.Reason != bb.reason {
				b.Fatalf("reason %q, want %q", d.Reason, bb.reason)
			}
			b.ReportAllocs()
			for b.Loop() {
				p.Check(cs, now)
			}
		})
	}
}
