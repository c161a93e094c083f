package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return now.
var aLongTimeAgo = time.Unix(1, 0)

// guard bounds the I/O on nc by ctx: ctx's deadline becomes nc's, and ctx's
// end sets a deadline in the past, which interrupts a blocked read or write.
// stop reports false if ctx ended first.
func guard(ctx context.Context, nc net.Conn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
}

// connect opens the TCP connection to t, through the configured dialer.
func (d *Dialer) connect(ctx context.Context, t *target) (net.Conn, error) {
	nc, err := d.dialer.DialContext(ctx, "tcp", t.addr)
	if err == nil {
		return nc, nil
	}
	if err = cause(ctx, err); ctx.Err() != nil {
		return nil, d.opErr(t, err)
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "dial" {
		return nil, oe // it names the address already
	}
	return nil, d.opErr(t, err)
}

// dialRaw opens a raw SMQ session: TCP, TLS for https://, the bootstrap
// request asking for the broker's HTTP answer, and that answer. Init stays
// unread, possibly already in the returned reader's buffer.
func (d *Dialer) dialRaw(ctx context.Context, t *target, hdr http.Header) (wire.Conn, error) {
	nc, err := d.connect(ctx, t)
	if err != nil {
		return nil, err
	}
	stop := guard(ctx, nc)
	fail := func(stage string, err error) (wire.Conn, error) {
		stop()
		_ = nc.Close()
		return nil, d.stageErr(ctx, t, stage, err)
	}
	conn := nc
	if t.tls != nil {
		tc := tls.Client(nc, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("tls handshake", err)
		}
		conn = tc
	}
	req := smq.Request{Path: t.u.RequestURI(), Host: t.u.Host, SendHTTPResponse: true, Header: hdr}
	if _, err := conn.Write(req.Append(nil)); err != nil {
		return fail("bootstrap", err)
	}
	// Big enough for any HTTP head ReadResponse accepts, so that a foreign
	// server's answer is reported by its status.
	br := bufio.NewReaderSize(conn, smq.MaxHeadSize)
	if _, err := smq.ReadResponse(br); err != nil {
		return fail("bootstrap", err)
	}
	if !stop() {
		return fail("bootstrap", context.Cause(ctx))
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return fail("bootstrap", err)
	}
	return wire.NewRaw(conn, br), nil // br goes: the session reads through its own small buffer
}

// dialWS opens a WebSocket session: TCP, TLS for wss://, the upgrade.
func (d *Dialer) dialWS(ctx context.Context, t *target, hdr http.Header) (wire.Conn, error) {
	var (
		stop    func() bool
		dialErr error
	)
	wd := websocket.Dialer{
		NetDialContext: func(context.Context, string, string) (net.Conn, error) {
			nc, err := d.connect(ctx, t)
			if err != nil {
				dialErr = err
				return nil, err
			}
			stop = guard(ctx, nc)
			return nc, nil
		},
		TLSClientConfig: t.tls,
		// No HandshakeTimeout, and a context without deadline or
		// cancellation for gorilla: guard puts ctx's deadline on the
		// connection, and gorilla would put its own there after guard's, over
		// a deadline in the past that ctx's end may have set already.
	}
	wc, resp, err := wd.DialContext(context.WithoutCancel(ctx), t.u.String(), hdr)
	if err != nil {
		if dialErr != nil {
			return nil, dialErr
		}
		if stop != nil {
			stop() // gorilla has closed the connection
		}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			err = fmt.Errorf("broker answered %q", resp.Status)
		}
		return nil, d.stageErr(ctx, t, "websocket upgrade", err)
	}
	// gorilla clears the deadlines once upgraded; if ctx ended before that,
	// the deadline its end set went with them.
	if !stop() {
		_ = wc.Close()
		return nil, d.stageErr(ctx, t, "websocket upgrade", context.Cause(ctx))
	}
	// The reference broker sends at most 65,535-byte messages; so may ours.
	return wire.NewWSClient(wc, smq.MaxRawFrame), nil
}

// stageErr is the error of a stage after connect. When ctx (the attempt's)
// has ended, its cause is the reason, whatever I/O error it provoked.
func (d *Dialer) stageErr(ctx context.Context, t *target, stage string, err error) error {
	return d.opErr(t, &stageError{stage: stage, err: cause(ctx, err)})
}

// cause returns ctx's cause if it has ended, err otherwise.
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

// opErr wraps err the way net and x/net/proxy report dial errors.
func (d *Dialer) opErr(t *target, err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: addr(t.addr), Err: err}
}

// addr is a host:port that was not resolved (or whose resolution the dialer
// kept to itself).
type addr string

func (addr) Network() string  { return "tcp" }
func (a addr) String() string { return string(a) }

// stageError is a failure after the TCP connect: "tls handshake: ...",
// "bootstrap: ...", "websocket upgrade: ...".
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// Timeout makes net.OpError.Timeout see through to the cause.
func (e *stageError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}
