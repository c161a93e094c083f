package tlsterm_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
)

var clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

func date(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// TestCheck runs every policy outcome over real TLS on loopback, with TLS 1.2
// and 1.3: the handshake always completes, and the decision comes from
// Policy.Check on the server's ConnectionState.
func TestCheck(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clients := testpki.NewCA(t)
	other := testpki.NewCA(t)
	root := testpki.NewRootCA(t)
	inter := root.Intermediate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "devices CA"}})
	oldInter := root.Intermediate(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "old devices CA"},
		NotBefore: now.Add(-72 * time.Hour),
		NotAfter:  now.Add(-48 * time.Hour),
	})

	device := clients.Client(t, "device-1")
	sensor := clients.Client(t, "sensor-1")
	stranger := other.Client(t, "device-1")
	expired := clients.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-old"},
		NotBefore:   now.Add(-72 * time.Hour),
		NotAfter:    now.Add(-24 * time.Hour),
		ExtKeyUsage: clientAuth,
	})
	future := clients.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-new"},
		NotBefore:   now.Add(24 * time.Hour),
		NotAfter:    now.Add(72 * time.Hour),
		ExtKeyUsage: clientAuth,
	})
	serverOnly := clients.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-srv"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	withOU := clients.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-2", OrganizationalUnit: []string{"lab", "field"}},
		ExtKeyUsage: clientAuth,
	})
	withDNS := clients.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-3"},
		DNSNames:    []string{"dev3.devices.example.com"},
		ExtKeyUsage: clientAuth,
	})
	spiffe, _ := url.Parse("spiffe://example.org/device/42")
	withURI := clients.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-4"},
		URIs:        []*url.URL{spiffe},
		ExtKeyUsage: clientAuth,
	})
	selfSigned := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "sensor-7"}})
	selfExpired := testpki.SelfSigned(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "sensor-8"},
		NotBefore: now.Add(-72 * time.Hour),
		NotAfter:  now.Add(-24 * time.Hour),
	})
	chained := inter.Client(t, "device-9")
	chainedBare := chained.TLS
	chainedBare.Certificate = chainedBare.Certificate[:1] // leaf only: the intermediate is missing
	oldChained := oldInter.Client(t, "device-10")

	require := func(cfg tlsterm.PolicyConfig) tlsterm.PolicyConfig {
		cfg.Mode = tlsterm.Require
		if cfg.ClientCAs == nil && cfg.Pins == nil {
			cfg.ClientCAs = clients.Pool
		}
		return cfg
	}

	tests := []struct {
		name   string
		cfg    tlsterm.PolicyConfig
		cert   *testpki.Leaf    // nil: the client sends none
		tlsc   *tls.Certificate // overrides cert's chain
		code   smq.ConnackCode
		reason string
		cn     string // identity CN when accepted with a certificate
	}{
		{name: "off/no cert", cfg: tlsterm.PolicyConfig{}, code: smq.CodeAccepted},
		{name: "off/ignores good cert", cfg: tlsterm.PolicyConfig{}, cert: device, code: smq.CodeAccepted},
		{name: "off/ignores bad cert", cfg: tlsterm.PolicyConfig{}, cert: expired, code: smq.CodeAccepted},

		{name: "optional/no cert", cfg: tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: clients.Pool}, code: smq.CodeAccepted},
		{name: "optional/good cert", cfg: tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: clients.Pool}, cert: device, code: smq.CodeAccepted, cn: "device-1"},
		{name: "optional/bad cert refused", cfg: tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: clients.Pool}, cert: stranger,
			code: smq.CodeCertNotAccepted, reason: "certificate signed by an unknown authority"},
		{name: "optional/CN not allowed", cfg: tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: clients.Pool, AllowCN: []string{"device-*"}}, cert: sensor,
			code: smq.CodeCertNotAccepted, reason: `CN "sensor-1" not allowed`},

		{name: "require/no cert", cfg: require(tlsterm.PolicyConfig{}), code: smq.CodeCertRequired, reason: "client certificate required"},
		{name: "require/good cert", cfg: require(tlsterm.PolicyConfig{}), cert: device, code: smq.CodeAccepted, cn: "device-1"},
		{name: "require/other CA", cfg: require(tlsterm.PolicyConfig{}), cert: stranger,
			code: smq.CodeCertNotAccepted, reason: "certificate signed by an unknown authority"},
		{name: "require/expired", cfg: require(tlsterm.PolicyConfig{}), cert: expired,
			code: smq.CodeCertNotAccepted, reason: "certificate expired " + date(expired.Cert.NotAfter)},
		{name: "require/not yet valid", cfg: require(tlsterm.PolicyConfig{}), cert: future,
			code: smq.CodeCertNotAccepted, reason: "certificate not valid before " + date(future.Cert.NotBefore)},
		{name: "require/serverAuth only", cfg: require(tlsterm.PolicyConfig{}), cert: serverOnly,
			code: smq.CodeCertNotAccepted, reason: "certificate not valid for client authentication"},

		{name: "CN/glob match", cfg: require(tlsterm.PolicyConfig{AllowCN: []string{"gateway", "device-*"}}), cert: device, code: smq.CodeAccepted, cn: "device-1"},
		{name: "CN/exact match", cfg: require(tlsterm.PolicyConfig{AllowCN: []string{"device-1"}}), cert: device, code: smq.CodeAccepted, cn: "device-1"},
		{name: "CN/glob mismatch", cfg: require(tlsterm.PolicyConfig{AllowCN: []string{"device-*"}}), cert: sensor,
			code: smq.CodeCertNotAccepted, reason: `CN "sensor-1" not allowed`},
		{name: "CN/exact mismatch", cfg: require(tlsterm.PolicyConfig{AllowCN: []string{"device-10"}}), cert: device,
			code: smq.CodeCertNotAccepted, reason: `CN "device-1" not allowed`},

		{name: "OU/one of several matches", cfg: require(tlsterm.PolicyConfig{AllowOU: []string{"fie*"}}), cert: withOU, code: smq.CodeAccepted, cn: "device-2"},
		{name: "OU/mismatch", cfg: require(tlsterm.PolicyConfig{AllowOU: []string{"office"}}), cert: withOU,
			code: smq.CodeCertNotAccepted, reason: `OUs "lab", "field" not allowed`},
		{name: "OU/none", cfg: require(tlsterm.PolicyConfig{AllowOU: []string{"lab"}}), cert: device,
			code: smq.CodeCertNotAccepted, reason: "certificate has no OU"},

		{name: "DNS/glob match", cfg: require(tlsterm.PolicyConfig{AllowDNS: []string{"*.devices.example.com"}}), cert: withDNS, code: smq.CodeAccepted, cn: "device-3"},
		{name: "DNS/case-insensitive", cfg: require(tlsterm.PolicyConfig{AllowDNS: []string{"DEV3.Devices.Example.COM"}}), cert: withDNS, code: smq.CodeAccepted, cn: "device-3"},
		{name: "DNS/mismatch", cfg: require(tlsterm.PolicyConfig{AllowDNS: []string{"*.gateways.example.com"}}), cert: withDNS,
			code: smq.CodeCertNotAccepted, reason: `DNS name "dev3.devices.example.com" not allowed`},
		{name: "DNS/none", cfg: require(tlsterm.PolicyConfig{AllowDNS: []string{"*"}}), cert: device,
			code: smq.CodeCertNotAccepted, reason: "certificate has no DNS name"},

		{name: "URI/SPIFFE glob match", cfg: require(tlsterm.PolicyConfig{AllowURI: []string{"spiffe://example.org/device/*"}}), cert: withURI, code: smq.CodeAccepted, cn: "device-4"},
		{name: "URI/exact match", cfg: require(tlsterm.PolicyConfig{AllowURI: []string{"spiffe://example.org/device/42"}}), cert: withURI, code: smq.CodeAccepted, cn: "device-4"},
		{name: "URI/mismatch", cfg: require(tlsterm.PolicyConfig{AllowURI: []string{"spiffe://example.org/gateway/*", "spiffe://example.org/device/4"}}), cert: withURI,
			code: smq.CodeCertNotAccepted, reason: `URI SAN "spiffe://example.org/device/42" not allowed`},
		{name: "URI/none", cfg: require(tlsterm.PolicyConfig{AllowURI: []string{"spiffe://*"}}), cert: device,
			code: smq.CodeCertNotAccepted, reason: "certificate has no URI SAN"},

		{name: "all lists pass", cfg: require(tlsterm.PolicyConfig{AllowCN: []string{"device-*"}, AllowURI: []string{"spiffe://example.org/*"}, Pins: []string{tlsterm.SPKIPin(withURI.Cert)}}),
			cert: withURI, code: smq.CodeAccepted, cn: "device-4"},
		{name: "one list fails", cfg: require(tlsterm.PolicyConfig{AllowCN: []string{"device-*"}, AllowDNS: []string{"*"}}), cert: withURI,
			code: smq.CodeCertNotAccepted, reason: "certificate has no DNS name"},

		{name: "pin/with CA match", cfg: require(tlsterm.PolicyConfig{ClientCAs: clients.Pool, Pins: []string{tlsterm.SPKIPin(sensor.Cert), tlsterm.SPKIPin(device.Cert)}}),
			cert: device, code: smq.CodeAccepted, cn: "device-1"},
		{name: "pin/with CA mismatch", cfg: require(tlsterm.PolicyConfig{ClientCAs: clients.Pool, Pins: []string{tlsterm.SPKIPin(sensor.Cert)}}), cert: device,
			code: smq.CodeCertNotAccepted, reason: "public key not pinned"},
		{name: "pin/with CA does not bypass chain", cfg: require(tlsterm.PolicyConfig{ClientCAs: clients.Pool, Pins: []string{tlsterm.SPKIPin(stranger.Cert)}}), cert: stranger,
			code: smq.CodeCertNotAccepted, reason: "certificate signed by an unknown authority"},
		{name: "pin/alone, self-signed match", cfg: require(tlsterm.PolicyConfig{Pins: []string{tlsterm.SPKIPin(selfSigned.Cert)}}), cert: selfSigned,
			code: smq.CodeAccepted, cn: "sensor-7"},
		{name: "pin/alone, mismatch", cfg: require(tlsterm.PolicyConfig{Pins: []string{tlsterm.SPKIPin(selfSigned.Cert)}}), cert: device,
			code: smq.CodeCertNotAccepted, reason: "public key not pinned"},
		{name: "pin/alone, expired", cfg: require(tlsterm.PolicyConfig{Pins: []string{tlsterm.SPKIPin(selfExpired.Cert)}}), cert: selfExpired,
			code: smq.CodeCertNotAccepted, reason: "certificate expired " + date(selfExpired.Cert.NotAfter)},
		{name: "pin/alone, with CN list", cfg: require(tlsterm.PolicyConfig{Pins: []string{tlsterm.SPKIPin(selfSigned.Cert)}, AllowCN: []string{"device-*"}}), cert: selfSigned,
			code: smq.CodeCertNotAccepted, reason: `CN "sensor-7" not allowed`},

		{name: "chain/intermediate sent", cfg: require(tlsterm.PolicyConfig{ClientCAs: root.Pool}), cert: chained, code: smq.CodeAccepted, cn: "device-9"},
		{name: "chain/intermediate missing", cfg: require(tlsterm.PolicyConfig{ClientCAs: root.Pool}), cert: chained, tlsc: &chainedBare,
			code: smq.CodeCertNotAccepted, reason: "certificate signed by an unknown authority"},
		{name: "chain/intermediate expired", cfg: require(tlsterm.PolicyConfig{ClientCAs: root.Pool}), cert: oldChained,
			code: smq.CodeCertNotAccepted, reason: `CA certificate "old devices CA" expired ` + date(oldInter.Cert.NotAfter)},
		{name: "chain/intermediate as root is another CA", cfg: require(tlsterm.PolicyConfig{}), cert: chained,
			code: smq.CodeCertNotAccepted, reason: "certificate signed by an unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, mustPolicy(t, tt.cfg))
			for _, v := range versions {
				t.Run(v.name, func(t *testing.T) {
					o := clientOpts{version: v.v}
					if tt.cert != nil {
						o.cert = &tt.cert.TLS
					}
					if tt.tlsc != nil {
						o.cert = tt.tlsc
					}
					code, _ := s.dial(t, o)
					r := s.next(t)
					if r.err != nil {
						t.Fatalf("server handshake: %v", r.err)
					}
					d := r.decision
					if code != tt.code || d.Code != tt.code || d.Reason != tt.reason {
						t.Fatalf("decision %v %q (client got %v), want %v %q", d.Code, d.Reason, code, tt.code, tt.reason)
					}
					switch {
					case tt.cn == "" && d.Identity != nil:
						t.Errorf("identity %+v, want none", d.Identity)
					case tt.cn != "" && d.Identity == nil:
						t.Errorf("no identity, want CN %q", tt.cn)
					case tt.cn != "" && d.Identity.CN != tt.cn:
						t.Errorf("identity CN %q, want %q", d.Identity.CN, tt.cn)
					}
				})
			}
		})
	}
}

// TestIdentity checks every field of an accepted identity against values
// computed independently from the certificate.
func TestIdentity(t *testing.T) {
	t.Parallel()
	clients := testpki.NewCA(t)
	u1, _ := url.Parse("spiffe://example.org/device/42")
	u2, _ := url.Parse("urn:uuid:2b7a6f4e-4f7e-4c8a-9d0e-3f1a2b3c4d5e")
	leaf := clients.Issue(t, &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         "device-42",
			OrganizationalUnit: []string{"lab", "field"},
			Organization:       []string{"Example, Inc."},
		},
		DNSNames:    []string{"dev42.devices.example.com"},
		URIs:        []*url.URL{u1, u2},
		ExtKeyUsage: clientAuth,
	})
	s := startServer(t, mustPolicy(t, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: clients.Pool}))
	s.dial(t, clientOpts{cert: &leaf.TLS})
	r := s.next(t)
	if r.err != nil || !r.decision.Accepted() {
		t.Fatalf("refused: %v %q %v", r.decision.Code, r.decision.Reason, r.err)
	}
	fp := sha256.Sum256(leaf.Cert.Raw)
	spkiDER, err := x509.MarshalPKIXPublicKey(leaf.Cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(spkiDER)
	want := &tlsterm.Identity{
		Subject:     `CN=device-42,OU=lab+OU=field,O=Example\, Inc.`,
		CN:          "device-42",
		OU:          []string{"lab", "field"},
		DNSNames:    []string{"dev42.devices.example.com"},
		URIs:        []string{"spiffe://example.org/device/42", "urn:uuid:2b7a6f4e-4f7e-4c8a-9d0e-3f1a2b3c4d5e"},
		Fingerprint: "sha256:" + hex.EncodeToString(fp[:]),
		SPKI:        "sha256:" + base64.StdEncoding.EncodeToString(spki[:]),
	}
	if got := r.decision.Identity; !reflect.DeepEqual(got, want) {
		t.Errorf("identity\n got %+v\nwant %+v", got, want)
	}
	if strings.ToLower(want.Fingerprint) != want.Fingerprint {
		t.Error("fingerprint is not lowercase")
	}
}

// TestSPKIPin checks the pin against the SubjectPublicKeyInfo re-encoded from
// the parsed key, and that it is the same for two certificates of one key.
func TestSPKIPin(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	leaf := ca.Client(t, "device-1")
	der, err := x509.MarshalPKIXPublicKey(leaf.Cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(der)
	want := "sha256:" + base64.StdEncoding.EncodeToString(d[:])
	if got := tlsterm.SPKIPin(leaf.Cert); got != want {
		t.Errorf("SPKIPin = %q, want %q", got, want)
	}
	// A second certificate for the same key has the same pin.
	tmpl := &x509.Certificate{SerialNumber: leaf.Cert.SerialNumber, Subject: pkix.Name{CommonName: "renewed"}}
	tmpl.NotBefore, tmpl.NotAfter = leaf.Cert.NotBefore, leaf.Cert.NotAfter
	renewedDER, err := x509.CreateCertificate(nil, tmpl, ca.Cert, leaf.Key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := x509.ParseCertificate(renewedDER)
	if err != nil {
		t.Fatal(err)
	}
	if got := tlsterm.SPKIPin(renewed); got != want {
		t.Errorf("renewed certificate pin %q, want %q", got, want)
	}
	if _, err := tlsterm.NewPolicy(tlsterm.PolicyConfig{Mode: tlsterm.Require, Pins: []string{want}}); err != nil {
		t.Errorf("NewPolicy rejects SPKIPin's output: %v", err)
	}
}

// TestResumption proves the policy runs on resumed sessions: a session
// resumed from the client's cache (DidResume on both ends) still carries the
// client certificate, and a stricter policy swapped in between the two
// connections refuses it; swapping back accepts it again, with its identity.
func TestResumption(t *testing.T) {
	t.Parallel()
	clients := testpki.NewCA(t)
	device := clients.Client(t, "device-1")
	lenient := mustPolicy(t, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: clients.Pool})
	strict := mustPolicy(t, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: clients.Pool, AllowCN: []string{"gateway-*"}})
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, lenient)
			o := clientOpts{cert: &device.TLS, version: v.v, cache: tls.NewLRUClientSessionCache(4)}

			steps := []struct {
				policy  *tlsterm.Policy
				resumed bool
				code    smq.ConnackCode
				reason  string
			}{
				{lenient, false, smq.CodeAccepted, ""},
				{strict, true, smq.CodeCertNotAccepted, `CN "device-1" not allowed`},
				{lenient, true, smq.CodeAccepted, ""},
			}
			for i, st := range steps {
				s.policy.Store(st.policy)
				code, cs := s.dial(t, o)
				r := s.next(t)
				if r.err != nil {
					t.Fatalf("connection %d: server handshake: %v", i, r.err)
				}
				if cs.DidResume != st.resumed || r.state.DidResume != st.resumed {
					t.Fatalf("connection %d: DidResume client %v server %v, want %v", i, cs.DidResume, r.state.DidResume, st.resumed)
				}
				if code != st.code || r.decision.Code != st.code || r.decision.Reason != st.reason {
					t.Fatalf("connection %d: decision %v %q (client got %v), want %v %q", i, r.decision.Code, r.decision.Reason, code, st.code, st.reason)
				}
				if st.code == smq.CodeAccepted && (r.decision.Identity == nil || r.decision.Identity.CN != "device-1") {
					t.Errorf("connection %d: identity %+v, want CN device-1", i, r.decision.Identity)
				}
			}
		})
	}
}

// TestHandshakeNeverFailsOnClientCert sends untrusted and unfit
// certificates to a server whose policy requires a trusted one: the
// handshake completes on both ends and the decision is 0x05.
func TestHandshakeNeverFailsOnClientCert(t *testing.T) {
	t.Parallel()
	clients := testpki.NewCA(t)
	other := testpki.NewCA(t)
	now := time.Now()
	bad := []struct {
		name   string
		leaf   *testpki.Leaf
		reason string
	}{
		{"other CA", other.Client(t, "device-1"), "certificate signed by an unknown authority"},
		{"self-signed", testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device-1"}}), "certificate signed by an unknown authority"},
		{"expired", clients.Issue(t, &x509.Certificate{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour), ExtKeyUsage: clientAuth}),
			"certificate expired " + date(now.Add(-24*time.Hour))},
		{"serverAuth", clients.Server(t, "device.example.com"), "certificate not valid for client authentication"},
		{"a CA", &testpki.Leaf{TLS: tls.Certificate{Certificate: [][]byte{other.Cert.Raw}, PrivateKey: other.Key}}, "certificate signed by an unknown authority"},
	}
	s := startServer(t, mustPolicy(t, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: clients.Pool}))
	for _, tt := range bad {
		for _, v := range versions {
			t.Run(tt.name+"/"+v.name, func(t *testing.T) {
				code, _ := s.dial(t, clientOpts{cert: &tt.leaf.TLS, version: v.v})
				r := s.next(t)
				if r.err != nil {
					t.Fatalf("server handshake failed: %v", r.err)
				}
				if code != smq.CodeCertNotAccepted || r.decision.Code != smq.CodeCertNotAccepted || r.decision.Reason != tt.reason {
					t.Errorf("decision %v %q (client got %v), want 0x05 %q", r.decision.Code, r.decision.Reason, code, tt.reason)
				}
			})
		}
	}
}

// TestCheckWithoutTLS covers what needs no connection: a nil or zero Policy
// is Off, a nil ConnectionState is "no certificate", and a zero time means
// now.
func TestCheckWithoutTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	leaf := ca.Client(t, "device-1")
	withCert := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
	require := mustPolicy(t, tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: ca.Pool})
	tests := []struct {
		name   string
		p      *tlsterm.Policy
		cs     *tls.ConnectionState
		now    time.Time
		code   smq.ConnackCode
		reason string
	}{
		{"nil policy", nil, withCert, time.Now(), smq.CodeAccepted, ""},
		{"zero policy", &tlsterm.Policy{}, withCert, time.Now(), smq.CodeAccepted, ""},
		{"nil state", require, nil, time.Now(), smq.CodeCertRequired, "client certificate required"},
		{"zero time is now", require, withCert, time.Time{}, smq.CodeAccepted, ""},
		{"checked at a later time", require, withCert, leaf.Cert.NotAfter.Add(time.Second), smq.CodeCertNotAccepted,
			"certificate expired " + date(leaf.Cert.NotAfter)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.p.Check(tt.cs, tt.now)
			if d.Code != tt.code || d.Reason != tt.reason {
				t.Errorf("Check = %v %q, want %v %q", d.Code, d.Reason, tt.code, tt.reason)
			}
		})
	}
	if m := (*tlsterm.Policy)(nil).Mode(); m != tlsterm.Off {
		t.Errorf("nil policy mode %v", m)
	}
}
