package smqdial

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/smqgw/smqgw/internal/tlsalert"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
)

// Kind is what made a dial fail.
type Kind uint8

// The kinds of failure. Timeout and Aborted say how the dial ended,
// whatever stage it was in; the others what failed.
const (
	// Connect: no TCP connection to the broker: refused, unreachable, no
	// such host.
	Connect Kind = iota + 1
	// Proxy: the proxy could not be reached, or failed its part of the
	// handshake (an answer that is neither HTTP nor SOCKS5, a failed TLS
	// handshake with an https:// proxy, a timeout of its own).
	Proxy
	// ProxyRefused: the proxy answered and refused the tunnel: an HTTP
	// status other than 2xx to CONNECT (*proxyclient.StatusError), a SOCKS5
	// reply other than "succeeded" (*proxyclient.SOCKSError), or wrong or
	// missing credentials (proxyclient.ErrProxyAuth).
	ProxyRefused
	// TLS: the TLS handshake with the broker failed: a certificate not
	// trusted or not valid for the name, nothing in common, a server that
	// does not speak TLS, or a TLS alert from the broker other than one
	// refusing the client's certificate.
	TLS
	// CertificateRefused: the broker sent a TLS alert refusing the client's
	// certificate, or its absence: bad_certificate, unsupported_certificate,
	// certificate_revoked, certificate_expired, certificate_unknown,
	// unknown_ca, access_denied or certificate_required. Under TLS 1.3 the
	// alert comes after the handshake: Stage is then StageBootstrap or
	// StageUpgrade.
	CertificateRefused
	// Bootstrap: the raw bootstrap failed: the server's answer is not an
	// SMQ broker's (smq.ErrBadBootstrap), or the connection broke.
	Bootstrap
	// Upgrade: the WebSocket upgrade failed: refused (Error.Status holds
	// the server's answer), or the connection broke.
	Upgrade
	// Timeout: the dial ran out of time: the context's deadline or
	// Dialer.Timeout (Stage says where), or a timeout of the dialer's own.
	Timeout
	// Aborted: the context was cancelled before the dial was over.
	Aborted
)

var kindNames = [...]string{
	Connect:            "connect",
	Proxy:              "proxy",
	ProxyRefused:       "proxy_refused",
	TLS:                "tls",
	CertificateRefused: "certificate_refused",
	Bootstrap:          "bootstrap",
	Upgrade:            "upgrade",
	Timeout:            "timeout",
	Aborted:            "aborted",
}

// String returns a name fit for a log field or a metric label:
// "connect", "proxy_refused", "certificate_refused", ...
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Stage is the step of a dial that failed.
type Stage uint8

// The stages of a dial, in order.
const (
	StageConnect   Stage = iota + 1 // the TCP connection, directly or through the proxy
	StageTLS                        // the TLS handshake with the broker (https, wss)
	StageBootstrap                  // the raw bootstrap request and the broker's HTTP answer
	StageUpgrade                    // the WebSocket upgrade
)

var stageNames = [...]string{
	StageConnect:   "connect",
	StageTLS:       "tls handshake",
	StageBootstrap: "bootstrap",
	StageUpgrade:   "websocket upgrade",
}

// String returns the stage as errors name it: "connect", "tls handshake",
// "bootstrap", "websocket upgrade".
func (s Stage) String() string {
	if int(s) < len(stageNames) && stageNames[s] != "" {
		return stageNames[s]
	}
	return fmt.Sprintf("Stage(%d)", uint8(s))
}

// Error is a failed dial. Kind says what failed and Stage where; Reason
// words it for a client.
//
// Its text is that of the *net.OpError it unwraps to, as net and
// x/net/proxy report dial errors (Op "dial", Net "tcp", Addr the address
// dialled), which callers prefix with their own name:
//
//	dial tcp 10.0.0.5:80: connect: connection refused
//	dial tcp 10.0.0.5:443: tls handshake: tls: failed to verify certificate: ...
//	dial tcp 10.0.0.5:80: bootstrap: smq: bad bootstrap: broker answered "404 Not Found"
//	dial tcp 10.0.0.5:80: websocket upgrade: no answer within 5s
//
// At StageConnect the dialer's own *net.OpError is the one, when its Op is
// "dial"; a proxy's ("proxyconnect", "socks connect") is wrapped. The chain
// goes on to the cause, so errors.Is and errors.As find
// syscall.ECONNREFUSED, x509.UnknownAuthorityError, smq.ErrBadBootstrap,
// proxyclient.ErrProxyAuth, context.Canceled and the like.
type Error struct {
	Kind  Kind
	Stage Stage
	// Addr is the host:port dialled.
	Addr string
	// Status is the status the server answered a refused WebSocket upgrade
	// with, such as "404 Not Found"; empty otherwise.
	Status string
	// Err is the cause: at StageConnect the dialer's error (a *net.OpError
	// of package net or proxyclient), after it the stage's; when the
	// context ended the dial, the context's cause (context.Canceled,
	// context.DeadlineExceeded, or Dialer.Timeout's "no answer within
	// 5s").
	Err error
}

func (e *Error) Error() string { return e.Unwrap().Error() }

// Unwrap returns the *net.OpError that reports e.
func (e *Error) Unwrap() error {
	if oe, ok := e.Err.(*net.OpError); ok && e.Stage == StageConnect && oe.Op == "dial" {
		return oe // it names the address already
	}
	err := e.Err
	if err == nil {
		err = errors.New(e.Kind.String())
	}
	if e.Stage != StageConnect {
		err = &stageError{stage: e.Stage, err: err}
	}
	return &net.OpError{Op: "dial", Net: "tcp", Addr: addr(e.Addr), Err: err}
}

// Timeout reports whether the dial ran out of time: Kind Timeout, or a
// proxy's step that timed out.
func (e *Error) Timeout() bool { return e.Kind == Timeout || isTimeout(e.Err) }

// Temporary is Timeout, for net.Error.
func (e *Error) Temporary() bool { return e.Timeout() }

// addr is a host:port that was not resolved (or whose resolution the
// dialer kept to itself).
type addr string

func (addr) Network() string  { return "tcp" }
func (a addr) String() string { return string(a) }

// stageError is a failure after the connect: "tls handshake: ...",
// "bootstrap: ...", "websocket upgrade: ...".
type stageError struct {
	stage Stage
	err   error
}

func (e *stageError) Error() string { return e.stage.String() + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// Timeout makes net.OpError.Timeout see through to the cause.
func (e *stageError) Timeout() bool { return isTimeout(e.err) }

// fail returns the *Error of err, which ended stage of a dial to t under
// ctx.
func (t *target) fail(ctx context.Context, stage Stage, err error) *Error {
	err = cause(ctx, err)
	return &Error{Kind: kindOf(ctx, stage, err), Stage: stage, Addr: t.addr, Err: err}
}

// cause returns ctx's cause if it has ended, err otherwise: when ctx ended,
// that is the reason, whatever I/O error it provoked.
func cause(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// The conn's deadline, which is ctx's, fired before ctx's own
			// timer: wait for it, it is due.
			<-ctx.Done()
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// kindOf classifies err, the cause of a failure in stage under ctx.
func kindOf(ctx context.Context, stage Stage, err error) Kind {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Timeout
		}
		return Aborted
	}
	if stage == StageConnect {
		if op := proxyOp(err); op != nil {
			if proxyRefused(op) {
				return ProxyRefused
			}
			return Proxy
		}
	} else if a, ok := tlsalert.Received(err); ok {
		if tlsalert.RefusesCertificate(a) {
			return CertificateRefused
		}
		return TLS
	}
	if isTimeout(err) {
		return Timeout
	}
	switch stage {
	case StageTLS:
		return TLS
	case StageBootstrap:
		return Bootstrap
	case StageUpgrade:
		return Upgrade
	}
	return Connect
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// proxyOp finds a proxy dialer's own error in err's tree: the *net.OpError
// whose Op is "proxyconnect" or "socks connect" (package proxyclient).
func proxyOp(err error) *net.OpError {
	if op, ok := err.(*net.OpError); ok && (op.Op == "proxyconnect" || op.Op == "socks connect") {
		return op
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return proxyOp(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if op := proxyOp(e); op != nil {
				return op
			}
		}
	}
	return nil
}

// proxyRefused reports whether a proxy dialer's error is the proxy
// refusing the tunnel.
func proxyRefused(op *net.OpError) bool {
	var se *proxyclient.StatusError
	var ke *proxyclient.SOCKSError
	return errors.As(op.Err, &ke) || errors.As(op.Err, &se) || errors.Is(op.Err, proxyclient.ErrProxyAuth)
}

// Reason words the failed dial in err's tree (the first *Error there) for
// a client, in one short line that names no address and holds no secret:
//
//	connect: connection refused
//	proxy authentication required (credentials rejected)
//	proxy refused CONNECT: HTTP/1.1 403 Forbidden
//	SOCKS proxy: connection not allowed by ruleset (SOCKS reply 0x02)
//	tls handshake: the server's certificate is not trusted
//	client certificate refused: tls: unknown certificate authority
//	bootstrap: smq: bad bootstrap: broker answered "404 Not Found"
//	websocket upgrade refused: 404 Not Found
//	bootstrap: timed out
//	dial aborted
//
// It returns "" when err holds no *Error.
func Reason(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	switch e.Kind {
	case Connect:
		return "connect: " + netProblem(e.Err)
	case Proxy:
		return "proxy: " + netProblem(e.Err)
	case ProxyRefused:
		op := proxyOp(e.Err)
		if op == nil {
			return "proxy refused the tunnel"
		}
		var ke *proxyclient.SOCKSError
		if errors.As(op.Err, &ke) {
			return "SOCKS proxy: " + ke.Error()
		}
		return op.Err.Error() // proxyclient's own words, without addresses
	case TLS:
		return "tls handshake: " + tlsProblem(e.Err)
	case CertificateRefused:
		a, _ := tlsalert.Received(e.Err)
		return "client certificate refused: " + tls.AlertError(a).Error()
	case Bootstrap:
		if errors.Is(e.Err, smq.ErrBadBootstrap) {
			return "bootstrap: " + e.Err.Error()
		}
		return "bootstrap: " + netProblem(e.Err)
	case Upgrade:
		if e.Status != "" {
			return "websocket upgrade refused: " + e.Status
		}
		return "websocket upgrade: " + netProblem(e.Err)
	case Timeout:
		return e.Stage.String() + ": timed out"
	case Aborted:
		return "dial aborted"
	}
	return "dial failed"
}

// netProblem words a network error without its addresses.
func netProblem(err error) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "no such host"
	case errors.As(err, &dns):
		return "name resolution failed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case isTimeout(err):
		return "timed out"
	}
	return "failed"
}

// tlsProblem words a failed TLS handshake without names or addresses.
func tlsProblem(err error) string {
	var (
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
		rh tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &ua):
		return "the server's certificate is not trusted"
	case errors.As(err, &he):
		return "the server's certificate is not valid for its name"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "the server's certificate has expired or is not yet valid"
	case errors.As(err, &ci):
		return "the server's certificate is not valid"
	case errors.As(err, &rh):
		return "the server does not speak TLS"
	}
	if a, ok := tlsalert.Received(err); ok {
		return "remote error: " + tls.AlertError(a).Error()
	}
	return netProblem(err)
}

// timeoutError is the cause of a dial that ran out of Dialer.Timeout.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("no answer within %v", e.d) }
func (e *timeoutError) Timeout() bool { return true }

// Is makes a timeout match os.ErrDeadlineExceeded and
// context.DeadlineExceeded.
func (e *timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded || target == context.DeadlineExceeded
}
