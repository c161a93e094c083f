package gateway_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"slices"
	"testing"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/tlsterm"
)

// TestCertificateRequest: a TLS listener asks for a client certificate
// only when one of its routes looks at certificates, and then names the
// CAs those routes accept (a browser with unrelated certificates asked
// its user to pick one on every listener before, the demo's included);
// a route with pins only accepts any issuer, so no CA is named; a
// reloaded CA bundle is named from the next handshake on.
func TestCertificateRequest(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	// CAs with names of their own (testpki's roots all share one).
	named := func(cn string) (*x509.Certificate, *x509.CertPool) {
		c := ca.Intermediate(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}).Cert
		pool := x509.NewCertPool()
		pool.AddCert(c)
		return c, pool
	}
	certA, poolA := named("fleet CA A")
	certB, poolB := named("fleet CA B")
	certC, poolC := named("fleet CA C")
	policy := func(pc tlsterm.PolicyConfig) *tlsterm.Policy {
		p, err := tlsterm.NewPolicy(pc)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	up := &countingUpstream{}
	reloaded := &gateway.Route{Path: "/b", Upstream: up,
		Policy: policy(tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: poolB})}
	pinned := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "pinned-device"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	listener := func(name string, routes ...*gateway.Route) gateway.Listener {
		return gateway.Listener{Name: name, Listener: smqtest.Listen(t), Certs: (*certs.Static)(&server.TLS), Routes: routes}
	}
	gw := runGateway(t, gateway.Config{Listeners: []gateway.Listener{
		listener("off", &gateway.Route{Path: "/", Upstream: up}),
		listener("cas", &gateway.Route{Path: "/", Upstream: up},
			&gateway.Route{Path: "/a", Upstream: up, Policy: policy(tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: poolA})},
			reloaded),
		listener("pins", &gateway.Route{Path: "/", Upstream: up,
			Policy: policy(tlsterm.PolicyConfig{Mode: tlsterm.Require, Pins: []string{tlsterm.SPKIPin(pinned.Cert)}})}),
	}})
	// requested handshakes with a listener and returns whether a
	// certificate was asked for, and the CA names asked for.
	requested := func(name string) (bool, [][]byte) {
		t.Helper()
		asked := false
		var cas [][]byte
		cfg := &tls.Config{RootCAs: ca.Pool, GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked, cas = true, cri.AcceptableCAs
			return &tls.Certificate{}, nil
		}}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: smqtest.WaitFor}, "tcp", gw.Addr(name).String(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close()
		return asked, cas
	}
	sorted := func(b ...[]byte) [][]byte { return slices.SortedFunc(slices.Values(b), bytes.Compare) }

	if asked, _ := requested("off"); asked {
		t.Error("a listener whose routes ignore certificates asked for one")
	}
	if asked, cas := requested("cas"); !asked || !slices.EqualFunc(sorted(cas...), sorted(certA.RawSubject, certB.RawSubject), bytes.Equal) {
		t.Errorf("asked %v for CAs %d, want CAs A and B", asked, len(cas))
	}
	if asked, cas := requested("pins"); !asked || len(cas) != 0 {
		t.Errorf("pins only: asked %v for %d CAs, want asked for none in particular", asked, len(cas))
	}
	reloaded.SetPolicy(policy(tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: poolC}))
	if _, cas := requested("cas"); !slices.EqualFunc(sorted(cas...), sorted(certA.RawSubject, certC.RawSubject), bytes.Equal) {
		t.Errorf("after the reload: %d CAs, want A and C", len(cas))
	}
}
