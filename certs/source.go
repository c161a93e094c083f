package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"

	"golang.org/x/crypto/acme"
)

// Source supplies the server certificates of a TLS listener, chosen per
// handshake (by SNI, and by what the client supports). The gateway builds
// every TLS listener's configuration around one Source. Implementations
// must be safe for concurrent use; a Source that reloads swaps its
// certificates atomically, so a handshake sees the old set or the new one.
//
// *Files, *ACME, Static and *autocert.Manager are Sources.
type Source interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// ACMESource is a Source that proves control of its names to an ACME CA.
// The gateway answers TLS-ALPN-01 for it on its TLS listeners (it offers
// the "acme-tls/1" protocol; such handshakes get their challenge
// certificate and are closed, never reaching a session), and HTTPHandler
// answers HTTP-01 on a plain listener, passing every other request to
// fallback. *ACME and *autocert.Manager are ACMESources.
type ACMESource interface {
	Source
	HTTPHandler(fallback http.Handler) http.Handler
}

// Inventory is a certificate holder's account of what it presents, for
// the expiry metric and the readiness check. *Files, *ACME, *Static and
// *Reloading are Inventories.
type Inventory interface {
	// Leaves returns the leaf certificates in use now; an ACME source
	// without a certificate yet returns none.
	Leaves() []*x509.Certificate
	// Want is how many certificates the holder has when it is complete:
	// one per ACME domain, one per pair of files, 1 for the others.
	Want() int
}

// ALPNProto is the protocol of ACME TLS-ALPN-01 challenges ("acme-tls/1"):
// a TLS listener serving an ACMESource offers it.
const ALPNProto = acme.ALPNProto

// Static is a Source that always serves one certificate.
type Static tls.Certificate

// GetCertificate returns the certificate.
func (s *Static) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return (*tls.Certificate)(s), nil
}

// Leaves returns the certificate's leaf (parsed if need be), none if it
// has no certificate or an unparsable one.
func (s *Static) Leaves() []*x509.Certificate { return leafOf((*tls.Certificate)(s)) }

// Want is 1.
func (s *Static) Want() int { return 1 }

// leafOf returns a certificate's leaf, parsed if need be; none for nil.
func leafOf(c *tls.Certificate) []*x509.Certificate {
	switch {
	case c == nil || len(c.Certificate) == 0:
		return nil
	case c.Leaf != nil:
		return []*x509.Certificate{c.Leaf}
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return []*x509.Certificate{leaf}
}
