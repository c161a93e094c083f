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

	"github.com/smqgw/smqgw/smq"
)

// transport is one broker connection in one of the two framings. read is
// called by one goroutine only; write by one at a time.
type transport interface {
	// read returns the next message (type + body), valid until the next read.
	read() ([]byte, error)
	// write sends one message.
	write(m smq.Message, deadline time.Time) error
	// closeWrite tells the broker no more messages follow: a TCP half-close
	// on raw, a close frame on WebSocket.
	closeWrite(deadline time.Time) error
	setReadDeadline(t time.Time) error
	close() error
}

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
	tr   transport
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
	d.tr = &rawTransport{conn: conn, r: smq.NewReader(br)}
	return d, nil
}

// dialWS opens a WebSocket connection.
func (c *Client) dialWS(ctx context.Context) (*dialed, error) {
	d := &dialed{}
	var dialErr error
	wd := websocket.Dialer{
		NetDialContext: func(dctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := c.opts.dialer.DialContext(dctx, network, addr)
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
	wc.SetReadLimit(smq.MaxRawFrame)
	d.tr = &wsTransport{conn: wc}
	return d, nil
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	nc, err := c.opts.dialer.DialContext(ctx, "tcp", c.addr)
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

type rawTransport struct {
	conn net.Conn
	r    *smq.Reader
	wbuf []byte
}

func (t *rawTransport) read() ([]byte, error) { return t.r.Read() }

func (t *rawTransport) write(m smq.Message, deadline time.Time) error {
	b, err := smq.AppendRawMessage(t.wbuf[:0], m)
	if err != nil {
		return err
	}
	if cap(b) <= 4<<10 {
		t.wbuf = b // keep small buffers only
	}
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err = t.conn.Write(b)
	return err
}

func (t *rawTransport) closeWrite(deadline time.Time) error {
	_ = t.conn.SetWriteDeadline(deadline)
	if cw, ok := t.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (t *rawTransport) setReadDeadline(d time.Time) error { return t.conn.SetReadDeadline(d) }
func (t *rawTransport) close() error                      { return t.conn.Close() }

type wsTransport struct {
	conn       *websocket.Conn
	rbuf, wbuf []byte
}

func (t *wsTransport) read() ([]byte, error) {
	for {
		typ, r, err := t.conn.NextReader()
		if err != nil {
			return nil, err
		}
		if typ != websocket.BinaryMessage && typ != websocket.TextMessage {
			continue
		}
		t.rbuf, err = smq.ReadWS(r, t.rbuf, smq.MaxRawFrame)
		if err != nil {
			return nil, err
		}
		return t.rbuf, nil
	}
}

func (t *wsTransport) write(m smq.Message, deadline time.Time) error {
	b := m.Append(t.wbuf[:0])
	if cap(b) <= 4<<10 {
		t.wbuf = b
	}
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return t.conn.WriteMessage(websocket.BinaryMessage, b)
}

func (t *wsTransport) closeWrite(deadline time.Time) error {
	return t.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline)
}

func (t *wsTransport) setReadDeadline(d time.Time) error { return t.conn.SetReadDeadline(d) }
func (t *wsTransport) close() error                      { return t.conn.Close() }
