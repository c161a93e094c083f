package certs

import (
	"crypto/tls"
	"net/http"
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

// Static is a Source that always serves one certificate.
type Static tls.Certificate

// GetCertificate returns the certificate.
func (s *Static) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return (*tls.Certificate)(s), nil
}
