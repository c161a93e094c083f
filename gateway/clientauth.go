package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/smqgw/smqgw/tlsterm"
)

// A TLS listener asks clients for a certificate only when one of its
// routes looks at certificates (client_auth "optional" or "require"), and
// then names the CAs those routes accept, so that a browser offers only
// the certificates that can pass (and one with unrelated personal
// certificates asks its user nothing on a listener that never checks
// them). The routes' policies change at runtime (reloaded CA files), so
// the configuration is derived per handshake, from a cache kept while the
// policies stay the same. It carries the gateway's session ticket keys
// (tickets.go).

// clientAuth is a listener's TLS configuration for the policies it was
// made for.
type clientAuth struct {
	policies []*tlsterm.Policy
	tickets  uint64 // the generation of the session ticket keys it has
	cfg      *tls.Config
}

// configForClient is the listener's GetConfigForClient.
func (st *listenerState) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	routes := st.def.Routes
	keys, gen := st.tickets.current(time.Now())
	if c := st.auth.Load(); c != nil && c.tickets == gen && samePolicies(c.policies, routes) {
		return c.cfg, nil
	}
	c := &clientAuth{policies: make([]*tlsterm.Policy, len(routes)), tickets: gen}
	var subjects [][]byte
	request, anyCA := false, false
	for i, r := range routes {
		p := r.policy()
		c.policies[i] = p
		if p.Mode() == tlsterm.Off {
			continue
		}
		request = true
		if s := p.CASubjects(); s == nil {
			anyCA = true // pins only: any certificate may be the one
		} else {
			subjects = append(subjects, s...)
		}
	}
	c.cfg = st.tls.Clone()
	c.cfg.GetConfigForClient = nil
	c.cfg.SetSessionTicketKeys(keys)
	c.cfg.ClientAuth = tls.NoClientCert
	if request {
		c.cfg.ClientAuth = tls.RequestClientCert
		if !anyCA {
			c.cfg.ClientCAs = namesPool(subjects)
		}
	}
	st.auth.Store(c)
	return c.cfg, nil
}

// samePolicies reports whether routes have the policies ps, in order.
func samePolicies(ps []*tlsterm.Policy, routes []*Route) bool {
	if len(ps) != len(routes) {
		return false
	}
	for i, r := range routes {
		if r.policy() != ps[i] {
			return false
		}
	}
	return true
}

// namesPool is a pool of CA names only: crypto/tls lists the subjects of
// ClientCAs in its CertificateRequest, and verifies nothing against them
// with RequestClientCert (the routes' policies verify). Each entry is a
// certificate with just its raw subject (as Raw too, for the pool's
// de-duplication).
func namesPool(subjects [][]byte) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, s := range subjects {
		pool.AddCert(&x509.Certificate{Raw: s, RawSubject: s})
	}
	return pool
}
