package proxyclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// connectDialer tunnels through an HTTP proxy with CONNECT (RFC 9110,
// section 9.3.6).
type connectDialer struct {
	proxy       string        // host:port of the proxy
	tls         *tls.Config   // nil: http://, else the TLS to the proxy
	forward     ContextDialer // reaches the proxy
	header      http.Header   // sent with every CONNECT; read-only
	credentials bool          // header has Proxy-Authorization
}

// connectHeader is the header of every CONNECT request to the proxy u.
func connectHeader(u *url.URL, extra http.Header) (h http.Header, credentials bool) {
	h = extra.Clone()
	if h == nil {
		h = http.Header{}
	}
	if h.Get("User-Agent") == "" {
		h.Set("User-Agent", DefaultUserAgent)
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pass))
		h.Set("Proxy-Authorization", "Basic "+cred)
	}
	return h, h.Get("Proxy-Authorization") != ""
}

// DialContext connects to the proxy, asks it for a tunnel to addr and
// returns the tunnel. ctx bounds the whole exchange: its deadline is the
// connection's until the proxy has answered, and its end aborts the
// exchange. The returned connection has no deadline.
func (d *connectDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkNetwork(network); err != nil {
		return nil, opError("proxyconnect", network, d.proxy, addr, err)
	}
	c, err := d.forward.DialContext(ctx, "tcp", d.proxy)
	if err != nil {
		return nil, opError("proxyconnect", network, d.proxy, addr, stepErr(ctx, stepDial, err))
	}
	conn, err := d.connect(ctx, c, addr)
	if err != nil {
		c.Close()
		return nil, opError("proxyconnect", network, d.proxy, addr, err)
	}
	return conn, nil
}

// connect runs the TLS handshake (https://) and the CONNECT exchange on c
// under ctx.
func (d *connectDialer) connect(ctx context.Context, c net.Conn, addr string) (_ net.Conn, err error) {
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	step := stepConnect
	defer func() {
		// stop fails once the past deadline is, or is about to be, set:
		// the exchange cannot be trusted to have ended by itself.
		if !stop() && err == nil {
			err = stepErr(ctx, step, ctx.Err())
		}
		if err == nil {
			c.SetDeadline(time.Time{})
		}
	}()

	conn := c
	if d.tls != nil {
		step = stepTLS
		tc := tls.Client(c, d.tls)
		if err := tc.Handshake(); err != nil {
			return nil, d.stepErr(ctx, step, "TLS handshake with the proxy", err)
		}
		conn = tc
		step = stepConnect
	}

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: d.header,
	}
	if err := req.Write(conn); err != nil {
		return nil, d.stepErr(ctx, step, "sending CONNECT", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, d.stepErr(ctx, step, "reading the proxy's answer to CONNECT", err)
	}
	// The body of a 2xx answer is the tunnel and is never read here; that
	// of a refusal is not worth waiting for.
	if resp.StatusCode/100 != 2 {
		return nil, &StatusError{
			StatusCode:      resp.StatusCode,
			Status:          statusLine(resp),
			CredentialsSent: d.credentials,
		}
	}
	if n := br.Buffered(); n > 0 {
		// The proxy, or the target through it, sent bytes right after
		// the answer: they were read with it and belong to the caller.
		early, _ := br.Peek(n)
		return &bufferedConn{Conn: conn, buf: bytes.Clone(early)}, nil
	}
	return conn, nil
}

// stepErr explains an error of step: the step's timeout or cancellation,
// or what went wrong while doing what.
func (d *connectDialer) stepErr(ctx context.Context, step, doing string, err error) error {
	if e := stepErr(ctx, step, err); e != err {
		return e
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// statusLine rebuilds the status line of resp, trimmed to a sane length.
func statusLine(resp *http.Response) string {
	s := resp.Proto + " " + resp.Status
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return s
}

// bufferedConn is a tunnel whose first reads return the bytes that arrived
// with the proxy's answer to CONNECT. Its Reads are not meant to run
// concurrently with each other (Writes, Close and deadlines may).
type bufferedConn struct {
	net.Conn
	buf []byte // early bytes not yet read
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	if len(c.buf) == 0 {
		c.buf = nil
	}
	return n, nil
}

// CloseWrite half-closes the tunnel when the connection to the proxy can
// (a TCP or TLS connection).
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.ErrUnsupported}
}
