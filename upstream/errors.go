package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is the error of a Dial that got no session: for each URL tried, in
// order, why it failed. It unwraps to the per-URL errors, so errors.Is(err,
// context.Canceled) and errors.As(err, &netErr) work.
type Error struct {
	Upstream string // the upstream's name
	Attempts []Attempt
	// Aborted: the caller's context ended the dial (not the URLs' fault).
	Aborted bool
}

// Attempt is one URL's failure.
type Attempt struct {
	URL string // as configured
	// Err is a *net.OpError with Op "dial", Net "tcp" and the URL's
	// host:port as Addr. Its Err says what failed: the connect itself
	// ("connect: connection refused"), or a later stage ("tls handshake:
	// ...", "bootstrap: smq: bad bootstrap: broker answered \"404 Not
	// Found\"", "websocket upgrade: ...", "bootstrap: no answer within 5s").
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.what())
	for i, a := range e.Attempts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", a.URL, a.Err)
	}
	return b.String()
}

func (e *Error) what() string {
	if e.Aborted {
		return label(e.Upstream) + " dial aborted"
	}
	return label(e.Upstream) + " unreachable"
}

// Unwrap returns the per-URL errors.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Attempts))
	for i, a := range e.Attempts {
		errs[i] = a.Err
	}
	return errs
}

// Timeout reports whether every URL tried timed out.
func (e *Error) Timeout() bool {
	for _, a := range e.Attempts {
		var t interface{ Timeout() bool }
		if !errors.As(a.Err, &t) || !t.Timeout() {
			return false
		}
	}
	return len(e.Attempts) > 0
}

// MaxReason is the most bytes Reason returns.
const MaxReason = 200

// Reason returns a failed Dial's error as one short line for humans, such as
// the reason of a Connack 0x02: "upstream lan unreachable: dial tcp
// 10.0.0.5:80: connect: connection refused". The URLs are left out (their
// addresses stay); several URLs' errors are joined with "; ". It is at most
// MaxReason bytes.
//
// The reason names the upstream's addresses; a gateway facing untrusted
// clients may prefer to send them less.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var s string
	var e *Error
	if errors.As(err, &e) {
		parts := make([]string, len(e.Attempts))
		for i, a := range e.Attempts {
			parts[i] = a.Err.Error()
		}
		s = e.what() + ": " + strings.Join(parts, "; ")
	} else {
		s = err.Error()
	}
	s = strings.Join(strings.Fields(s), " ") // one line
	if len(s) > MaxReason {
		cut := MaxReason - len("...")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// timeoutError is the cause of an attempt that ran out of time.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("no answer within %v", e.d) }
func (e *timeoutError) Timeout() bool { return true }

// Is makes a timeout match os.ErrDeadlineExceeded and
// context.DeadlineExceeded.
func (e *timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded || target == context.DeadlineExceeded
}

// certAlerts are the TLS alerts a server sends when it does not accept
// the client's certificate (RFC 8446 and RFC 5246 alert numbers):
// bad_certificate, unsupported_certificate, certificate_revoked,
// certificate_expired, certificate_unknown, unknown_ca, access_denied and
// certificate_required.
var certAlerts = map[uint8]bool{42: true, 43: true, 44: true, 45: true, 46: true, 48: true, 49: true, 116: true}

// CertificateAlert reports whether a TLS alert number refuses the peer's
// certificate.
func CertificateAlert(a uint8) bool { return certAlerts[a] }

// CertificateRefused reports whether a failed Dial was the broker
// refusing the gateway's client certificate (or its absence) with a TLS
// alert: a configuration problem of the gateway, not an outage.
func CertificateRefused(err error) bool {
	a, ok := RemoteAlert(err)
	return ok && certAlerts[a]
}

// RemoteAlert finds the TLS alert a peer sent in err's tree. crypto/tls
// reports one as a *net.OpError with Op "remote error" around a value of
// its unexported alert type, a uint8; tls.AlertError is the exported
// form some paths use.
func RemoteAlert(err error) (uint8, bool) {
	switch e := err.(type) {
	case nil:
		return 0, false
	case tls.AlertError:
		return uint8(e), true
	case *net.OpError:
		if v := reflect.ValueOf(e.Err); e.Op == "remote error" && v.Kind() == reflect.Uint8 {
			return uint8(v.Uint()), true
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return RemoteAlert(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if a, ok := RemoteAlert(e); ok {
				return a, true
			}
		}
	}
	return 0, false
}
