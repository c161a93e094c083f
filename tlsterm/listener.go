package tlsterm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smqgw/smqgw/limits"
)

// ListenerConfig configures a Listener. Only Config is required.
type ListenerConfig struct {
	// Config returns the TLS configuration for a new handshake. It is
	// called once per connection, so a reload that swaps what it returns
	// takes effect with the next connection. Required.
	Config func() *tls.Config

	// Timeout returns the limit on one handshake, read as the handshake
	// starts. Nil, or a result of zero or less:
	// limits.DefaultHandshakeTimeout.
	Timeout func() time.Duration

	// Admit, if set, decides whether to go on with a connection just
	// accepted, before any TLS work: the place for caps on connections in
	// handshake per listener and per client address. It returns nil to go
	// on, or an error to refuse: the connection is then closed at once,
	// and neither handshaken nor reported to OnHandshake, so Admit counts
	// and logs its own refusals. Nil admits every connection.
	//
	// It runs in the connection's own goroutine, so it may block without
	// holding up Accept: RemoteAddr on a PROXY protocol connection, for
	// one, reads the header to learn the client's address. Close ends it
	// by closing the connection. The handshake timeout starts after it.
	// A cap on handshakes in progress can count down in OnHandshake: each
	// admitted connection is reported there once, unless Close ends it.
	Admit func(net.Conn) error

	// OnHandshake, if set, is told of every handshake that ended, in the
	// connection's goroutine, before the connection is handed to Accept
	// or closed: conn is the accepted connection (below TLS), err nil for
	// a success, else the handshake's error, which FailureReason
	// classifies. Handshakes that Close ended are not reported: they are
	// nobody's failure.
	OnHandshake func(conn net.Conn, err error)
}

// Listener is a net.Listener that completes the TLS handshakes of the
// connections an inner listener accepts before it returns them from
// Accept: each handshake in its own goroutine, under a timeout, so that a
// slow or silent client holds up nobody else, every handshake is
// reported with a classified failure, and whoever serves the connections
// (net/http) finds the handshake done. A client that speaks plain HTTP
// gets a 400 saying this port speaks TLS.
//
// Accept returns *tls.Conn values. Make one with NewListener.
type Listener struct {
	inner net.Listener
	cfg   ListenerConfig

	ready     chan accepted // unbuffered: Accept takes what is ready
	done      chan struct{} // closed by Close
	ctx       context.Context
	cancel    context.CancelFunc // ends handshakes in progress
	closeOnce sync.Once
	wg        sync.WaitGroup // the accept loop and the handshakes

	gateMu sync.Mutex
	gated  [2]*tls.Config // the last Config() and its gated clone
}

// A handshake's CPU work (key exchange, the certificate's signature)
// starts when its ClientHello is in. Run thousands of them at once, as
// when every device reconnects after a restart, and each gets a sliver of
// the CPUs: all finish late, many after their clients gave up, and the
// work is wasted. So a handshake takes one of a few slots, process-wide,
// once its ClientHello is in, and gives it back as soon as it waits for
// the client again (its first read after its first write): the CPUs work
// on a few handshakes at a time, first come first served (a channel's
// waiting senders are served in order), and the rest wait, at no cost,
// under their handshake timeout. A client that sends nothing or stalls
// mid-handshake holds no slot.
var (
	handshakeSlots   = make(chan struct{}, max(4, 2*runtime.GOMAXPROCS(0)))
	handshakeWaiting atomic.Int64
)

// HandshakesWaiting is how many handshakes wait for a slot to compute in
// now, process-wide: above zero for long, the CPUs are short of what the
// clients ask.
func HandshakesWaiting() int64 { return handshakeWaiting.Load() }

type accepted struct {
	c   net.Conn
	err error
}

// NewListener returns a Listener over inner (a TCP listener, or a PROXY
// protocol listener around one), which it owns and closes. It starts
// accepting at once. It panics if cfg.Config is nil.
func NewListener(inner net.Listener, cfg ListenerConfig) *Listener {
	if cfg.Config == nil {
		panic("tlsterm: NewListener without ListenerConfig.Config")
	}
	l := &Listener{inner: inner, cfg: cfg, ready: make(chan accepted), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Go(l.acceptLoop)
	return l
}

func (l *Listener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
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
		l.wg.Go(func() { l.serve(c) })
	}
}

// serve admits c, runs its handshake, and hands it to Accept.
func (l *Listener) serve(c net.Conn) {
	if !l.admit(c) {
		_ = c.Close()
		return
	}
	sc := &sniffConn{Conn: c}
	tc := tls.Server(sc, l.config())
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout())
	err := tc.HandshakeContext(ctx)
	cancel()
	sc.release()
	if err != nil && l.ctx.Err() != nil { // closed: not the client's failure
		_ = c.Close()
		return
	}
	if err != nil {
		if sc.sentAlert {
			// Keep the text; add the alert for FailureReason, as crypto/tls
			// does for QUIC.
			err = fmt.Errorf("%w%.0w", err, sc.alert)
		}
		if l.cfg.OnHandshake != nil {
			l.cfg.OnHandshake(c, err)
		}
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader) {
			_ = rhe.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(rhe.Conn, notTLSResponse)
		}
		_ = c.Close()
		return
	}
	if l.cfg.OnHandshake != nil {
		l.cfg.OnHandshake(c, nil)
	}
	select {
	case l.ready <- accepted{c: tc}:
	case <-l.done:
		_ = tc.Close()
	}
}

// config returns cfg.Config() with the handshake slot taken in
// GetConfigForClient, which crypto/tls calls with the ClientHello in; the
// clone is made once for each configuration Config returns.
func (l *Listener) config() *tls.Config {
	orig := l.cfg.Config()
	l.gateMu.Lock()
	defer l.gateMu.Unlock()
	if l.gated[0] == orig {
		return l.gated[1]
	}
	g := orig.Clone()
	next := orig.GetConfigForClient
	g.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		if sc, ok := chi.Conn.(*sniffConn); ok {
			if err := sc.acquire(chi.Context()); err != nil {
				return nil, err
			}
		}
		if next != nil {
			return next(chi)
		}
		return nil, nil
	}
	l.gated = [2]*tls.Config{orig, g}
	return g
}

// admit asks Admit about c, and reports whether to go on.
func (l *Listener) admit(c net.Conn) bool {
	if l.cfg.Admit == nil {
		return true
	}
	closed := make(chan struct{})
	stop := context.AfterFunc(l.ctx, func() {
		_ = c.Close()
		close(closed)
	})
	err := l.cfg.Admit(c)
	if !stop() { // Close ended it
		<-closed // and Close waits for us
		return false
	}
	return err == nil
}

func (l *Listener) timeout() time.Duration {
	if l.cfg.Timeout != nil {
		if d := l.cfg.Timeout(); d > 0 {
			return d
		}
	}
	return limits.DefaultHandshakeTimeout
}

// Accept returns the next connection whose handshake is done, a
// *tls.Conn, or the inner listener's error.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case a := <-l.ready:
		return a.c, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, ends the handshakes in progress (and the Admit
// calls), and returns once their goroutines have. Connections already
// returned by Accept are the caller's.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
		err = l.inner.Close()
		l.wg.Wait()
	})
	return err
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// notTLSResponse answers a plain HTTP request on a TLS port.
const notTLSResponse = "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n" +
	"smqgw: this port speaks TLS: use https:// or wss://\n"

// looksLikeHTTP reports whether a TLS record header is the start of an
// HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// sniffConn notes the alert a server refuses a ClientHello with, which
// crypto/tls sends but does not report. Such an alert is the server's
// first write, one plaintext record (TLS 1.3 encrypts only what follows
// the ServerHello): content type 21, a version 3.x, length 2, level,
// description. Writes are serialized by the tls.Conn, and the first
// happens during the handshake, in the handshake's goroutine.
//
// It also holds the connection's handshake slot: taken when the
// ClientHello is in, given back at the first read after a write (the
// server's flight is out: it waits for the client) or when the handshake
// ends.
type sniffConn struct {
	net.Conn
	wrote     bool
	sentAlert bool           // the first write was an alert
	alert     tls.AlertError // the alert it was
	slot      bool           // holds a handshake slot
	slotWrote bool           // wrote since it took the slot
}

// acquire waits for a handshake slot, or until ctx (the handshake's) ends.
func (c *sniffConn) acquire(ctx context.Context) error {
	if c.slot {
		return nil
	}
	handshakeWaiting.Add(1)
	defer handshakeWaiting.Add(-1)
	select {
	case handshakeSlots <- struct{}{}:
		c.slot, c.slotWrote = true, false
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release gives the slot back, if it holds one.
func (c *sniffConn) release() {
	if c.slot {
		c.slot = false
		<-handshakeSlots
	}
}

func (c *sniffConn) Read(b []byte) (int, error) {
	if c.slot && c.slotWrote {
		c.release()
	}
	return c.Conn.Read(b)
}

// NetConn returns the connection underneath, for code that looks for its
// own wrapper under the *tls.Conn.
func (c *sniffConn) NetConn() net.Conn { return c.Conn }

func (c *sniffConn) Write(b []byte) (int, error) {
	if c.slot {
		c.slotWrote = true
	}
	if !c.wrote {
		c.wrote = true
		if len(b) == 7 && b[0] == 21 && b[1] == 3 && b[3] == 0 && b[4] == 2 {
			c.sentAlert, c.alert = true, tls.AlertError(b[6])
		}
	}
	return c.Conn.Write(b)
}
