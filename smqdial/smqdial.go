// Package smqdial opens SMQ connections to a broker: a TCP connection,
// directly or through a proxy dialer of package proxyclient, TLS for
// https:// and wss://, then the SMQ bootstrap — an HTTP request with the
// SimpleMQ header (http://, https://) or a WebSocket upgrade (ws://,
// wss://). The caller gets a wire.Conn whose next message is the broker's
// Init, or an *Error that says what failed. It is the one dialer of package
// client (the Go SMQ client) and package upstream (the gateway's dialer).
package smqdial

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// Dialer opens SMQ connections. The zero value dials directly with a
// net.Dialer, verifies TLS servers against the system roots and bounds a
// dial by its context alone. A Dialer is safe for concurrent use as long
// as its fields do not change.
type Dialer struct {
	// NetDialer opens the TCP connection: a *net.Dialer, or a proxy dialer
	// of package proxyclient (one from the environment picks its proxy by
	// the scheme of the URL dialled). Nil means a net.Dialer.
	NetDialer proxyclient.ContextDialer

	// TLSConfig configures https:// and wss://. Nil means the defaults:
	// the system roots, the URL's host as ServerName, ALPN http/1.1. A
	// configuration without a ServerName is cloned for each dial with the
	// URL's host name filled in; it is never modified. It is otherwise used
	// as is: the bootstrap is HTTP/1.1, so NextProtos should be empty or
	// offer "http/1.1" alone.
	TLSConfig *tls.Config

	// Timeout bounds each dial: connect, TLS handshake and bootstrap, up to
	// the broker's HTTP answer (raw) or upgrade (WebSocket). A dial that
	// runs out of it fails with Kind Timeout, its cause reading "no answer
	// within 5s". Zero means no bound but the context's.
	Timeout time.Duration
}

// Dial connects to u and bootstraps an SMQ session on it. u's scheme picks
// the transport: http:// and https:// for raw SMQ (the bootstrap request
// goes to u's path and query and asks for the broker's HTTP answer), ws://
// and wss:// for WebSocket.
//
// header holds extra headers for the bootstrap request or the upgrade, such
// as X-Forwarded-For. Those the bootstrap owns are dropped, whatever their
// case: Host, SimpleMQ, SendSmqHttpResponse, Upgrade, Connection,
// Sec-WebSocket-*, and the framing and hop-by-hop ones (Content-Length,
// Transfer-Encoding, TE, Trailer, Keep-Alive, Proxy-Connection). Nil is
// fine.
//
// ctx bounds the dial: its deadline is the connection's until the bootstrap
// is over, and its end aborts a connect, handshake or bootstrap in
// progress. A ctx that has ended dials nothing.
//
// On success the next message read from the Conn is the broker's Init
// (bytes of it that came with the broker's HTTP answer are read first), the
// Conn has no deadline, and neither ctx nor Timeout bound it any longer. A
// raw Conn is a *wire.Raw, a WebSocket one a *wire.WS (wire.ClientHandshake)
// reading messages of up to smq.MaxRawFrame bytes, as the reference broker
// sends.
//
// A failed dial returns an *Error; a URL that cannot be dialled at all (nil,
// another scheme, no host) an error that says so, prefixed "smqdial: ".
func (d *Dialer) Dial(ctx context.Context, u *url.URL, header http.Header) (wire.Conn, error) {
	t, err := parse(u)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.bound(ctx)
	defer cancel()
	nc, conn, stop, err := d.open(ctx, t)
	if err != nil {
		return nil, err
	}
	return bootstrap(ctx, t, nc, conn, stop, bootstrapHeader(header))
}

// Connect opens the TCP connection a Dial to u starts with, directly or
// through the proxy, and stops there: no TLS, no bootstrap. It is for
// health checks. ctx and Timeout bound it as they bound Dial, and its
// errors are those of Dial's StageConnect.
func (d *Dialer) Connect(ctx context.Context, u *url.URL) (net.Conn, error) {
	t, err := parse(u)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.bound(ctx)
	defer cancel()
	return d.connect(ctx, t)
}

// bound applies Timeout to ctx.
func (d *Dialer) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d.Timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, d.Timeout, &timeoutError{d.Timeout})
}

// target is a URL to dial.
type target struct {
	u      *url.URL
	scheme string // u's, lower case
	addr   string // host:port to connect to
	ws     bool   // ws:// or wss://
	secure bool   // https:// or wss://
}

func parse(u *url.URL) (*target, error) {
	if u == nil {
		return nil, errors.New("smqdial: no url")
	}
	t := &target{u: u, scheme: strings.ToLower(u.Scheme)}
	port := "80"
	switch t.scheme {
	case "http":
	case "https":
		t.secure, port = true, "443"
	case "ws":
		t.ws = true
	case "wss":
		t.ws, t.secure, port = true, true, "443"
	default:
		return nil, fmt.Errorf("smqdial: invalid url %q: scheme must be http, https, ws or wss", u.Redacted())
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("smqdial: invalid url %q: no host", u.Redacted())
	}
	if p := u.Port(); p != "" {
		port = p
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	return t, nil
}

// reserved are the headers the bootstrap owns (canonical keys), besides
// Sec-Websocket-*.
var reserved = map[string]bool{
	"Host": true, "Simplemq": true, "Sendsmqhttpresponse": true, "Upgrade": true, "Connection": true,
	"Content-Length": true, "Transfer-Encoding": true, "Te": true, "Trailer": true,
	"Keep-Alive": true, "Proxy-Connection": true,
}

// ReservedHeader reports whether the bootstrap owns the header key, in any
// case: Dial drops such keys from the caller's headers (see Dial).
func ReservedHeader(key string) bool {
	ck := http.CanonicalHeaderKey(key)
	return reserved[ck] || strings.HasPrefix(ck, "Sec-Websocket-")
}

// bootstrapHeader returns h without the reserved headers: h itself when it
// holds none.
func bootstrapHeader(h http.Header) http.Header {
	clean := true
	for k := range h {
		if ReservedHeader(k) {
			clean = false
			break
		}
	}
	if clean {
		return h
	}
	c := make(http.Header, len(h))
	for k, vs := range h {
		if !ReservedHeader(k) {
			c[k] = vs
		}
	}
	return c
}

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return now.
var aLongTimeAgo = time.Unix(1, 0)

// Deadliner is a connection whose I/O deadlines can be set from any
// goroutine: a net.Conn, or a wire.Conn.
type Deadliner interface {
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// Guard bounds the I/O on c by ctx until stop is called: ctx's deadline
// becomes c's, and ctx's end sets a deadline in the past, which interrupts
// a blocked read or write. stop reports false if ctx ended first: c's
// deadlines may be in the past then, or about to be, and c is best closed.
// When stop reports true, c keeps ctx's deadline until the caller clears
// it. Dial guards its connections so; a caller's own handshake after Dial
// can be guarded the same way.
//
// A deadline set on c while it is guarded replaces the guard's for that
// direction, and with it, maybe, the deadline in the past of ctx's end.
func Guard(ctx context.Context, c Deadliner) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		setDeadline(c, d)
	}
	return context.AfterFunc(ctx, func() { setDeadline(c, aLongTimeAgo) })
}

func setDeadline(c Deadliner, t time.Time) {
	if nc, ok := c.(interface{ SetDeadline(time.Time) error }); ok {
		_ = nc.SetDeadline(t)
		return
	}
	_ = c.SetReadDeadline(t)
	_ = c.SetWriteDeadline(t)
}

// connect opens the TCP connection to t.
func (d *Dialer) connect(ctx context.Context, t *target) (net.Conn, error) {
	if ctx.Err() != nil {
		return nil, t.fail(ctx, StageConnect, context.Cause(ctx))
	}
	nd := d.NetDialer
	if nd == nil {
		nd = &net.Dialer{}
	}
	// A proxy dialer from the environment picks HTTPS_PROXY or HTTP_PROXY
	// by the URL's scheme.
	nc, err := nd.DialContext(proxyclient.WithScheme(ctx, t.scheme), "tcp", t.addr)
	if err != nil {
		return nil, t.fail(ctx, StageConnect, err)
	}
	return nc, nil
}

// open connects to t and, for https and wss, runs the TLS handshake, under
// ctx's Guard, which it leaves in place: stop ends it. conn is the
// connection to bootstrap on, nc the dialer's under it.
func (d *Dialer) open(ctx context.Context, t *target) (nc, conn net.Conn, stop func() bool, err error) {
	nc, err = d.connect(ctx, t)
	if err != nil {
		return nil, nil, nil, err
	}
	stop = Guard(ctx, nc)
	if !t.secure {
		return nc, nc, stop, nil
	}
	tc := tls.Client(nc, d.tlsConfig(t))
	if err := tc.HandshakeContext(ctx); err != nil {
		stop()
		_ = nc.Close()
		return nil, nil, nil, t.fail(ctx, StageTLS, err)
	}
	return nc, tc, stop, nil
}

// tlsConfig returns the TLS configuration for t.
func (d *Dialer) tlsConfig(t *target) *tls.Config {
	c := d.TLSConfig
	switch {
	case c == nil:
		return &tls.Config{ServerName: t.u.Hostname(), NextProtos: []string{"http/1.1"}}
	case c.ServerName == "":
		c = c.Clone()
		c.ServerName = t.u.Hostname()
	}
	return c
}

// bootstrap opens an SMQ session on conn, a connection to t: the raw
// bootstrap or the WebSocket upgrade, under the guard open set, which it
// ends. Init stays unread, for the Conn to read first.
func bootstrap(ctx context.Context, t *target, nc, conn net.Conn, stop func() bool, header http.Header) (wire.Conn, error) {
	stage, status := StageBootstrap, ""
	var wc wire.Conn
	var err error
	if t.ws {
		stage = StageUpgrade
		wc, status, err = upgrade(conn, t, header)
	} else {
		wc, err = bootstrapRaw(conn, t, header)
	}
	switch {
	case err != nil:
	case !stop():
		// ctx ended: its deadline in the past may be on the connection.
		err = context.Cause(ctx)
	default:
		err = nc.SetDeadline(time.Time{})
	}
	if err != nil {
		stop()
		_ = nc.Close()
		e := t.fail(ctx, stage, err)
		if e.Kind == Upgrade {
			e.Status = status
		}
		return nil, e
	}
	return wc, nil
}

// bootstrapRaw sends the raw bootstrap request, asking for the broker's
// HTTP answer, and reads that answer.
func bootstrapRaw(conn net.Conn, t *target, header http.Header) (wire.Conn, error) {
	req := smq.Request{Path: t.u.RequestURI(), Host: t.u.Host, SendHTTPResponse: true, Header: header}
	if _, err := conn.Write(req.Append(nil)); err != nil {
		return nil, err
	}
	// Big enough for any HTTP head ReadResponse accepts, so that a foreign
	// server's answer is reported by its status.
	br := bufio.NewReaderSize(conn, smq.MaxHeadSize)
	if _, err := smq.ReadResponse(br); err != nil {
		return nil, err
	}
	return wire.NewRaw(conn, br), nil // br goes: the session reads through its own small buffer
}

// upgrade runs the WebSocket upgrade. Its deadlines are the guard's alone:
// nothing else may set any while the guard is on (see Guard). status is
// the server's answer to a refused upgrade.
func upgrade(conn net.Conn, t *target, header http.Header) (wc wire.Conn, status string, err error) {
	// The reference broker sends at most 65,535-byte messages; so may ours.
	ws, _, err := wire.ClientHandshake(conn, t.u, header, smq.MaxRawFrame, time.Time{})
	var he *wire.HandshakeError
	if errors.As(err, &he) {
		status = he.Status
		if he.StatusCode != http.StatusSwitchingProtocols {
			err = &refusedError{he}
		}
	}
	if err != nil {
		return nil, status, err
	}
	return ws, "", nil
}

// refusedError is a refused upgrade: the server answered with another
// status than 101.
type refusedError struct{ he *wire.HandshakeError }

func (e *refusedError) Error() string { return fmt.Sprintf("broker answered %q", e.he.Status) }

// Unwrap returns the *wire.HandshakeError, which matches
// websocket.ErrBadHandshake.
func (e *refusedError) Unwrap() error { return e.he }
