package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/smqgw/smqgw/upstream"
)

// handshakeListener accepts TCP connections and completes their TLS
// handshakes before handing them to the HTTP server, each in its own
// goroutine under the handshake timeout, so that every handshake is
// counted and every failure has a reason. The HTTP server then finds the
// handshake done. A client that speaks plain HTTP gets a 400 saying so.
type handshakeListener struct {
	net.Listener
	config   func() *tls.Config // the listener's configuration in force
	timeout  func() time.Duration
	m        *Metrics
	log      *slog.Logger
	listener string

	ready     chan accepted // unbuffered: Accept takes what is ready
	done      chan struct{}
	ctx       context.Context // ends with Close: handshakes in progress stop
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type accepted struct {
	c   net.Conn
	err error
}

func newHandshakeListener(ln net.Listener, listener string, config func() *tls.Config, timeout func() time.Duration,
	m *Metrics, log *slog.Logger) *handshakeListener {
	l := &handshakeListener{Listener: ln, config: config, timeout: timeout, m: m, log: log, listener: listener,
		ready: make(chan accepted), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Go(l.acceptLoop)
	return l
}

func (l *handshakeListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// The HTTP server backs off on temporary errors and stops on
			// others; after a permanent one there is nothing more to accept.
			select {
			case l.ready <- accepted{err: err}:
			case <-l.done:
				return
			}
			if ne, ok := err.(interface{ Temporary() bool }); ok && ne.Temporary() {
				continue
			}
			return
		}
		l.wg.Go(func() { l.handshake(c) })
	}
}

// handshake runs one TLS handshake and passes the connection on.
func (l *handshakeListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.config())
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout())
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil && l.ctx.Err() != nil { // closed: not the client's failure
		_ = c.Close()
		return
	}
	if err != nil {
		reason := handshakeFailure(err)
		l.m.tlsFailures.WithLabelValues(l.listener, reason).Inc()
		if reason == "timeout" {
			l.m.limit(l.listener, "handshake_timeout")
		}
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader) {
			_ = rhe.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(rhe.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n"+
				"smqgw: this port speaks TLS: use https:// or wss://\n")
		}
		l.log.Debug("TLS handshake failed", "listener", l.listener, "client", c.RemoteAddr().String(),
			"reason", reason, "err", err)
		_ = c.Close()
		return
	}
	l.m.handshakes.WithLabelValues(l.listener).Inc()
	select {
	case l.ready <- accepted{c: tc}:
	case <-l.done:
		_ = tc.Close()
	}
}

// Accept returns the next connection whose handshake is done.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.ready:
		return a.c, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, ends the handshakes in progress, and returns
// once their goroutines have.
func (l *handshakeListener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

// looksLikeHTTP reports whether a TLS record header is the start of an
// HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// errNoCertificate marks a certificate source's failure to find a
// certificate for a handshake (an unknown server name, an ACME name not
// obtained yet).
var errNoCertificate = errors.New("no certificate for this server name")

// handshakeFailure names why a TLS handshake failed, as a metric label.
func handshakeFailure(err error) string {
	var rhe tls.RecordHeaderError
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.As(err, &rhe):
		return "not_tls"
	case errors.Is(err, errNoCertificate):
		return "no_certificate"
	case errors.Is(err, proxyproto.ErrNoProxyProtocol), strings.Contains(err.Error(), "proxyproto: "):
		return "proxy_protocol" // a missing or malformed PROXY header
	case closedByPeer(err):
		return "client_closed"
	}
	if a, ok := upstream.RemoteAlert(err); ok {
		if upstream.CertificateAlert(a) {
			return "client_rejected_certificate" // unknown_ca, certificate_unknown, ...
		}
		return "client_alert"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "no cipher suite"),
		strings.Contains(msg, "no mutually supported"), strings.Contains(msg, "no application protocol"):
		return "no_common_parameters"
	}
	return "other"
}
