// Package tlsalert reads what crypto/tls reports but does not export: the
// alert a TLS peer sent, found in an error, and which alerts refuse a
// certificate. Both sides use it: tlsterm to name why a client's handshake
// failed, smqdial to tell a broker that refused the gateway's certificate
// from other TLS failures.
package tlsalert

import (
	"crypto/tls"
	"net"
	"reflect"
)

// TLS alert numbers (RFC 8446 section 6, RFC 5246 section 7.2, RFC 7301).
const (
	HandshakeFailure       tls.AlertError = 40
	BadCertificate         tls.AlertError = 42
	UnsupportedCertificate tls.AlertError = 43
	CertificateRevoked     tls.AlertError = 44
	CertificateExpired     tls.AlertError = 45
	CertificateUnknown     tls.AlertError = 46
	UnknownCA              tls.AlertError = 48
	AccessDenied           tls.AlertError = 49
	ProtocolVersion        tls.AlertError = 70
	InsufficientSecurity   tls.AlertError = 71
	CertificateRequired    tls.AlertError = 116
	NoApplicationProtocol  tls.AlertError = 120
)

// RefusesCertificate reports whether a peer's alert refuses a certificate.
func RefusesCertificate(a tls.AlertError) bool {
	switch a {
	case BadCertificate, UnsupportedCertificate, CertificateRevoked, CertificateExpired,
		CertificateUnknown, UnknownCA, AccessDenied, CertificateRequired:
		return true
	}
	return false
}

// Received finds in err's tree the TLS alert the peer sent, as a
// tls.AlertError (its Error is the alert's description). crypto/tls
// reports a received alert as a *net.OpError with Op "remote error" around
// a value of its unexported alert type, a uint8; it reports one it sent
// the same way with Op "local error", and a tls.AlertError found in an
// error is one the local side sent, so neither counts.
func Received(err error) (tls.AlertError, bool) {
	switch e := err.(type) {
	case nil:
		return 0, false
	case *net.OpError:
		if e.Op == "remote error" && e.Err != nil {
			if v := reflect.ValueOf(e.Err); isAlert(v.Type()) {
				return tls.AlertError(v.Uint()), true
			}
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return Received(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if a, ok := Received(e); ok {
				return a, true
			}
		}
	}
	return 0, false
}

// isAlert reports whether t is crypto/tls's unexported alert type.
func isAlert(t reflect.Type) bool {
	return t.Kind() == reflect.Uint8 && t.PkgPath() == "crypto/tls" && t.Name() == "alert"
}
