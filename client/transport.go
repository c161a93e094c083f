package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// transport is one broker connection: a wire.Conn in either framing, with
// the client's write discipline on top (one message at a time, flushed at
// once, under a write deadline). read is called by one goroutine only; write
// and closeWrite by one at a time, under the write token.
type transport struct {
	wc wire.Conn
	// ws is the WebSocket under wc, nil on raw.
	ws *websocket.Conn
	// nc is the dialer's connection, under everything: read deadlines set
	// from outside the reading goroutine go there.
	nc net.Conn
	// halfClose: the raw connection can be half-closed. One that cannot is
	// left open after the Disconnect, for the broker to close.
	halfClose bool
	wbuf      []byte
}

func newRawTransport(nc, conn net.Conn, br *bufio.Reader) *transport {
	_, hc := conn.(interface{ CloseWrite() error })
	return &transport{wc: wire.NewRaw(conn, br), nc: nc, halfClose: hc}
}

func newWSTransport(nc net.Conn, wc *websocket.Conn) *transport {
	return &transport{wc: wire.NewWSClient(wc, smq.MaxRawFrame), ws: wc, nc: nc}
}

// read returns the next message (type + body), valid until the next read.
func (t *transport) read() ([]byte, error) { return t.wc.Read() }

// write sends one message and flushes it. A message too big for the framing
// fails with smq.ErrTooBig before anything is written.
func (t *transport) write(m smq.Message, deadline time.Time) error {
	b := m.Append(t.wbuf[:0])
	if cap(b) <= 4<<10 {
		t.wbuf = b // keep small buffers only
	}
	if err := t.wc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if err := t.wc.Write(b); err != nil {
		return err
	}
	return t.wc.Flush()
}

// writeAll sends messages and flushes once: one write to the socket for
// all of them when they fit its buffer.
func (t *transport) writeAll(ms []smq.Message, deadline time.Time) error {
	if err := t.wc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	for _, m := range ms {
		b := m.Append(t.wbuf[:0])
		if cap(b) <= 4<<10 {
			t.wbuf = b
		}
		if err := t.wc.Write(b); err != nil {
			return err
		}
	}
	return t.wc.Flush()
}

// closeWrite tells the broker no more messages follow: a TCP (or TLS)
// half-close on raw, a close frame on WebSocket.
func (t *transport) closeWrite(deadline time.Time) error {
	if t.ws == nil && !t.halfClose {
		// wire would close the connection; leave that to the broker, who
		// has our Disconnect.
		_ = t.wc.SetWriteDeadline(deadline)
		return t.wc.Flush()
	}
	return t.wc.CloseWrite(websocket.CloseNormalClosure, "", deadline)
}

// setReadDeadline may be called from any goroutine.
func (t *transport) setReadDeadline(d time.Time) error { return t.nc.SetReadDeadline(d) }
func (t *transport) close() error                      { return t.wc.Close() }

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return now.
var aLongTimeAgo = time.Unix(1, 0)

// guard makes ctx's end interrupt any I/O on nc. The returned stop reports
// false if ctx ended first.
func guard(ctx context.Context, nc net.Conn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
}

// dialed is a transport right after its bootstrap, with what it takes to
// finish the handshake under a context.
type dialed struct {
	tr   *transport
	nc   net.Conn    // the dialer's connection, under everything
	stop func() bool // see guard
}

// dialRaw opens a raw SMQ connection: TCP (or TLS), the bootstrap request
// asking for the HTTP answer, and that answer. Init is next on the stream.
func (c *Client) dialRaw(ctx context.Context) (*dialed, error) {
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	d := &dialed{nc: nc, stop: guard(ctx, nc)}
	conn := nc
	fail := func(stage string, err error) (*dialed, error) {
		d.stop()
		_ = nc.Close()
		return nil, c.stageErr(ctx, stage, err)
	}
	if c.tlsConf != nil {
		tc := tls.Client(nc, c.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("tls handshake with", err)
		}
		conn = tc
	}
	req := smq.Request{Path: c.url.RequestURI(), Host: c.url.Host, SendHTTPResponse: true, Header: c.opts.Header}
	if _, err := conn.Write(req.Append(nil)); err != nil {
		return fail("bootstrap with", err)
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	if _, err := smq.ReadResponse(br); err != nil {
		return fail("bootstrap with", err)
	}
	d.tr = newRawTransport(nc, conn, br)
	return d, nil
}

// dialWS opens a WebSocket connection.
func (c *Client) dialWS(ctx context.Context) (*dialed, error) {
	d := &dialed{}
	var dialErr error
	wd := websocket.Dialer{
		NetDialContext: func(dctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := c.opts.dialer.DialContext(proxyclient.WithScheme(dctx, c.url.Scheme), network, addr)
			if err != nil {
				dialErr = err
				return nil, err
			}
			d.nc, d.stop = nc, guard(ctx, nc)
			return nc, nil
		},
		TLSClientConfig: c.tlsConf,
	}
	h := http.Header{}
	for k, v := range c.opts.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version",
			"Sec-Websocket-Extensions", "Sec-Websocket-Protocol":
			continue
		}
		h[k] = v
	}
	wc, resp, err := wd.DialContext(ctx, c.url.String(), h)
	if err != nil {
		if d.stop != nil {
			d.stop()
		}
		switch {
		case dialErr != nil:
			return nil, c.dialErr(dialErr)
		case resp != nil && errors.Is(err, websocket.ErrBadHandshake):
			return nil, fmt.Errorf("client: websocket upgrade refused by %s: %s", c.url.Host, resp.Status)
		}
		return nil, c.stageErr(ctx, "websocket upgrade with", err)
	}
	if ctx.Err() != nil {
		// gorilla clears the deadlines it set; had ctx ended already, the
		// guard's deadline went with them.
		d.stop()
		_ = wc.Close()
		return nil, c.stageErr(ctx, "websocket upgrade with", ctx.Err())
	}
	d.tr = newWSTransport(d.nc, wc)
	return d, nil
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	nc, err := c.opts.dialer.DialContext(proxyclient.WithScheme(ctx, c.url.Scheme), "tcp", c.addr)
	if err != nil {
		return nil, c.dialErr(err)
	}
	return nc, nil
}

func (c *Client) dialErr(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) { // it names the address itself
		return fmt.Errorf("client: %w", err)
	}
	return fmt.Errorf("client: dial %s: %w", c.addr, err)
}

// stageErr describes an error in one stage of connecting. When ctx ended,
// that is the cause, whatever I/O error it provoked.
func (c *Client) stageErr(ctx context.Context, stage string, err error) error {
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return fmt.Errorf("client: %s %s: %w", stage, c.url.Host, err)
}
