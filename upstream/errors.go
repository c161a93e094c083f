package upstream

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/smqgw/smqgw/smqdial"
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
	// Err is a *smqdial.Error: its Kind says what failed (errors.As finds
	// it), for the client in smqdial.Reason's words. It unwraps to a
	// *net.OpError with Op "dial", Net "tcp" and the URL's host:port as
	// Addr, whose text says what failed: the connect itself ("connect:
	// connection refused"), or a later stage ("tls handshake: ...",
	// "bootstrap: smq: bad bootstrap: broker answered \"404 Not Found\"",
	// "websocket upgrade: ...", "bootstrap: no answer within 5s").
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
// clients may prefer to send them less: smqdial.Reason words a dial's
// failure without them.
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

// CertificateRefused reports whether a failed Dial was the broker
// refusing the gateway's client certificate (or its absence) with a TLS
// alert, at any URL: a configuration problem of the gateway, not an
// outage.
func CertificateRefused(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	for _, a := range e.Attempts {
		var de *smqdial.Error
		if errors.As(a.Err, &de) && de.Kind == smqdial.CertificateRefused {
			return true
		}
	}
	return false
}
