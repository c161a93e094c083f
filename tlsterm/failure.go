package tlsterm

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/pires/go-proxyproto"

	"github.com/smqgw/smqgw/internal/tlsalert"
)

// Failure is why a TLS handshake failed, as FailureReason finds it from
// the error. Its String is the metric label and the log reason.
type Failure uint8

// The reasons a server handshake fails. The zero value is FailureOther.
const (
	FailureOther   Failure = iota // none of the below
	FailureTimeout                // the handshake timed out
	// FailureNotTLS: the client does not speak TLS (a plain HTTP request,
	// say: Listener answers that with a 400).
	FailureNotTLS
	// FailureNoCertificate: the server has no certificate for the name
	// the client asked for; see ErrNoCertificate.
	FailureNoCertificate
	// FailureProxyProtocol: the PROXY protocol header that a trusted
	// sender must send first was missing or malformed.
	FailureProxyProtocol
	// FailureClientClosed: the client went away (EOF, reset).
	FailureClientClosed
	// FailureClientRejectedCertificate: the client refused the server's
	// certificate with a TLS alert (bad_certificate, unknown_ca, ...).
	FailureClientRejectedCertificate
	// FailureClientAlert: the client ended the handshake with another
	// TLS alert.
	FailureClientAlert
	// FailureNoCommonParameters: the client offers no TLS version, cipher
	// suite, key exchange or application protocol (ALPN) the server
	// accepts.
	FailureNoCommonParameters
)

var failureNames = [...]string{
	FailureOther:                     "other",
	FailureTimeout:                   "timeout",
	FailureNotTLS:                    "not_tls",
	FailureNoCertificate:             "no_certificate",
	FailureProxyProtocol:             "proxy_protocol",
	FailureClientClosed:              "client_closed",
	FailureClientRejectedCertificate: "client_rejected_certificate",
	FailureClientAlert:               "client_alert",
	FailureNoCommonParameters:        "no_common_parameters",
}

// String returns the reason as a metric label: "timeout", "not_tls", ...
func (f Failure) String() string {
	if int(f) < len(failureNames) {
		return failureNames[f]
	}
	return "other"
}

// ErrNoCertificate marks a failure to find a certificate for a handshake
// (an unknown server name, an ACME name not obtained yet). The
// configurations of ServerConfig wrap every error of their certificate
// function in it.
//
// Its text has no package prefix: it starts the error the gateway has
// always logged for such a handshake.
var ErrNoCertificate = errors.New("no certificate for this server name")

// FailureReason classifies the error of a failed server handshake, by the
// types of the errors in err's tree and by TLS alerts, never by error
// text. It is meant for the errors Listener reports, which also carry the
// alert the server refused the ClientHello with (a tls.AlertError); a bare
// tls.Conn error lacks it, so a mismatch of parameters is FailureOther.
func FailureReason(err error) Failure {
	var rhe tls.RecordHeaderError
	switch {
	case isTimeout(err):
		return FailureTimeout
	case errors.As(err, &rhe):
		return FailureNotTLS
	case errors.Is(err, ErrNoCertificate):
		return FailureNoCertificate
	case isProxyProtocol(err):
		return FailureProxyProtocol
	case closedByPeer(err):
		return FailureClientClosed
	}
	if a, ok := tlsalert.Received(err); ok {
		if tlsalert.RefusesCertificate(a) {
			return FailureClientRejectedCertificate
		}
		return FailureClientAlert
	}
	if sent, ok := errors.AsType[tls.AlertError](err); ok {
		switch sent {
		case tlsalert.HandshakeFailure, tlsalert.ProtocolVersion, tlsalert.InsufficientSecurity, tlsalert.NoApplicationProtocol:
			return FailureNoCommonParameters
		}
	}
	return FailureOther
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closedByPeer reports the ordinary ways a peer goes away.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// proxyProtocolErrors are the errors of github.com/pires/go-proxyproto
// for a PROXY protocol header that is missing or malformed, as its Conn
// returns them from the first Read.
var proxyProtocolErrors = []error{
	proxyproto.ErrNoProxyProtocol,
	proxyproto.ErrCantReadVersion1Header,
	proxyproto.ErrVersion1HeaderTooLong,
	proxyproto.ErrLineMustEndWithCrlf,
	proxyproto.ErrCantReadProtocolVersionAndCommand,
	proxyproto.ErrCantReadAddressFamilyAndProtocol,
	proxyproto.ErrCantReadLength,
	proxyproto.ErrCantResolveSourceUnixAddress,
	proxyproto.ErrCantResolveDestinationUnixAddress,
	proxyproto.ErrUnknownProxyProtocolVersion,
	proxyproto.ErrUnsupportedProtocolVersionAndCommand,
	proxyproto.ErrUnsupportedAddressFamilyAndProtocol,
	proxyproto.ErrInvalidLength,
	proxyproto.ErrInvalidAddress,
	proxyproto.ErrInvalidPortNumber,
	proxyproto.ErrSuperfluousProxyHeader,
	proxyproto.ErrTruncatedTLV,
	proxyproto.ErrMalformedTLV,
	proxyproto.ErrIncompatibleTLV,
}

func isProxyProtocol(err error) bool {
	for _, target := range proxyProtocolErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
