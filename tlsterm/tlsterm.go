// Package tlsterm is the server side of TLS for smqgw: a hardened tls.Config,
// a listener that completes handshakes under a timeout and classifies their
// failures, and the client-certificate policy, decided per connection from
// tls.ConnectionState.
//
// The handshake only requests a client certificate and never fails over it;
// the decision comes afterwards from Policy.Check, so a refused client can be
// told why inside SMQ (Connack 0x04 or 0x05) instead of seeing a TLS alert.
package tlsterm

import (
	"crypto/tls"
	"fmt"
)

// cipherSuites are the TLS 1.2 suites ServerConfig allows: Go's secure
// defaults trimmed to ECDHE key exchange with AEAD ciphers. TLS 1.3 suites are
// not configurable and all AEAD.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig returns a new hardened server configuration that takes its
// certificate from getCert, wrapping its errors in ErrNoCertificate so
// that FailureReason names them: TLS 1.2 or later, ECDHE+AEAD suites only for
// TLS 1.2, ALPN "http/1.1", session tickets on, and client certificates
// requested but not verified (tls.RequestClientCert). The handshake never
// fails over the client certificate; decide with Policy.Check afterwards.
// (Go still refuses a certificate it cannot parse, or a client that cannot
// prove it holds the key.)
//
// The result is the caller's to extend before use, for example by appending
// "acme-tls/1" to NextProtos where ACME TLS-ALPN challenges are answered.
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	var get func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if getCert != nil {
		get = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := getCert(hello)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrNoCertificate, err)
			}
			return c, nil
		}
	}
	return &tls.Config{
		GetCertificate: get,
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   append([]uint16(nil), cipherSuites...),
		NextProtos:     []string{"http/1.1"},
		ClientAuth:     tls.RequestClientCert,
	}
}
