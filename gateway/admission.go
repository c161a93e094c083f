package gateway

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Admission: every connection a listener accepts is counted before any
// TLS or HTTP work, so that no address can hold more than its share and
// nothing a stranger sends is costly before it is admitted:
//
//   - max_connections_per_ip: connections of one client address, of every
//     kind, across listeners;
//   - max_pending_per_ip and max_pending (per listener): connections that
//     are not sessions — in the TLS handshake, waiting for a request, or
//     between requests that are no SMQ bootstrap.
//
// A refused connection is closed at once, without a word (a passing
// condition: the reference clients retry). A connection turns from
// pending into a session when its request is hijacked (WebSocket upgrade,
// raw SMQ); it is no longer counted when it closes. At the descriptor
// limit, fdGuard accepts and closes the waiting connections rather than
// leaving them in the backlog.

// connLimiter counts the connections of each client address.
type connLimiter struct {
	mu sync.Mutex
	m  map[netip.Addr]*connCount
}

type connCount struct{ conns, pending int }

// admit counts a new pending connection from ip, or returns the limit that
// refuses it.
func (l *connLimiter) admit(ip netip.Addr, maxConns, maxPending int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[netip.Addr]*connCount{}
	}
	c := l.m[ip]
	if c == nil {
		c = &connCount{}
		l.m[ip] = c
	}
	switch {
	case c.conns >= maxConns:
		return "max_connections_per_ip"
	case c.pending >= maxPending:
		return "max_pending_per_ip"
	}
	c.conns++
	c.pending++
	return ""
}

// session records that a pending connection of ip became a session.
func (l *connLimiter) session(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.m[ip]; c != nil && c.pending > 0 {
		c.pending--
	}
}

// closed records that a connection of ip closed, pending or not.
func (l *connLimiter) closed(ip netip.Addr, pending bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.m[ip]
	if c == nil {
		return
	}
	c.conns--
	if pending && c.pending > 0 {
		c.pending--
	}
	if c.conns <= 0 {
		delete(l.m, ip)
	}
}

// counts returns ip's connections and pending ones, for tests.
func (l *connLimiter) counts(ip netip.Addr) (conns, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.m[ip]; c != nil {
		return c.conns, c.pending
	}
	return 0, 0
}

// The states of a countedConn.
const (
	connNew     int32 = iota // accepted, not admitted yet
	connPending              // admitted, not a session
	connSession              // hijacked: a session
	connClosed
	connRefused
)

// errRefused is what reading a connection that admission refused returns.
var errRefused = errors.New("smqgw: connection refused by a connection limit")

// countedConn is an accepted connection as admission counts it. It is
// admitted by the TLS listener's Admit hook, or on its first Read on a
// plain listener (both in the connection's own goroutine: RemoteAddr may
// read a PROXY protocol header).
type countedConn struct {
	net.Conn
	g     *Gateway
	ll    *liveListener
	state atomic.Int32
	ip    netip.Addr
	once  sync.Once // admission
	err   error
}

// admit applies the connection limits once, and reports the refusal.
func (c *countedConn) admit() error {
	c.once.Do(func() { c.err = c.doAdmit() })
	return c.err
}

func (c *countedConn) doAdmit() error {
	g, ll := c.g, c.ll
	ap, err := netip.ParseAddrPort(c.Conn.RemoteAddr().String())
	if err != nil {
		// No IP address (a PROXY v2 header from a Unix socket): one bucket
		// for all such connections.
		ap = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	c.ip = ap.Addr().Unmap()
	lim := g.limits()
	// The address's own limits first: an address over them never takes,
	// even for a moment, a listener slot another address needs; one
	// hammering at its session limits gets no TLS handshake for sessions
	// it could not start.
	limit := ""
	if g.perIP.hammering(c.ip, time.Now()) {
		limit = "session_rate_per_ip"
	} else {
		limit = g.conns.admit(c.ip, lim.MaxConnectionsPerIP, lim.MaxPendingPerIP)
	}
	if limit == "" && !g.takePending(ll, int64(lim.MaxPending)) {
		g.conns.closed(c.ip, true)
		limit = "max_pending"
	}
	if limit != "" {
		c.state.Store(connRefused)
		g.m.limit(ll.name, limit)
		if suppressed, ok := g.admitLog.allow(time.Now(), false); ok {
			attrs := []any{"listener", ll.name, "client", c.ip.String(), "limit", limit}
			if suppressed > 0 {
				attrs = append(attrs, "suppressed_before", suppressed)
			}
			g.log.Warn("connection refused: connection limit", attrs...)
		}
		return errRefused
	}
	if !c.state.CompareAndSwap(connNew, connPending) { // closed meanwhile
		c.release(connPending)
		return errRefused
	}
	return nil
}

// takePending counts one more pending connection on ll, unless it has
// max already.
func (g *Gateway) takePending(ll *liveListener, max int64) bool {
	for {
		n := ll.pendingN.Load()
		if n >= max {
			return false
		}
		if ll.pendingN.CompareAndSwap(n, n+1) {
			ll.pendingGauge(g).Inc()
			return true
		}
	}
}

// dropPending counts one pending connection of ll less.
func (g *Gateway) dropPending(ll *liveListener) {
	ll.pendingN.Add(-1)
	ll.pendingGauge(g).Dec()
}

// pendingGauge returns ll's smqgw_connections_pending gauge.
func (ll *liveListener) pendingGauge(g *Gateway) prometheus.Gauge {
	if p := ll.pendingG.Load(); p != nil {
		return *p
	}
	gauge := g.m.pending.WithLabelValues(ll.name)
	ll.pendingG.Store(&gauge)
	return gauge
}

// toSession records that the connection became a session.
func (c *countedConn) toSession() {
	if c.state.CompareAndSwap(connPending, connSession) {
		c.g.dropPending(c.ll)
		c.g.conns.session(c.ip)
	}
}

// release gives back what the connection counted in state st.
func (c *countedConn) release(st int32) {
	switch st {
	case connPending:
		c.g.dropPending(c.ll)
		c.g.conns.closed(c.ip, true)
	case connSession:
		c.g.conns.closed(c.ip, false)
	}
}

// Read admits the connection first, on a plain listener.
func (c *countedConn) Read(p []byte) (int, error) {
	if st := c.state.Load(); st == connNew || st == connRefused {
		if err := c.admit(); err != nil {
			// A read error net/http closes on without a word.
			return 0, &net.OpError{Op: "read", Net: "tcp", Addr: c.Conn.LocalAddr(), Err: err}
		}
	}
	return c.Conn.Read(p)
}

// Close closes the connection and gives back what it counted.
func (c *countedConn) Close() error {
	err := c.Conn.Close()
	for {
		st := c.state.Load()
		if st == connClosed || st == connRefused {
			return err
		}
		if c.state.CompareAndSwap(st, connClosed) {
			c.release(st)
			return err
		}
	}
}

// CloseWrite half-closes the connection underneath (a TCP connection),
// so that a raw session ends with the end of its stream while the
// client's last bytes are still read; one that cannot be half-closed (a
// PROXY protocol connection) is closed, as wire.Raw would.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// NetConn returns the connection underneath.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// countedOf finds the countedConn under c, a connection net/http serves
// (the countedConn itself, or a *tls.Conn over it).
func countedOf(c net.Conn) *countedConn {
	for range 4 {
		switch x := c.(type) {
		case *countedConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// admitListener wraps each accepted connection in a countedConn.
type admitListener struct {
	net.Listener
	g  *Gateway
	ll *liveListener
}

func (l *admitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, g: l.g, ll: l.ll}, nil
}

// admitConn is the TLS listener's Admit hook.
func admitConn(c net.Conn) error {
	if cc, ok := c.(*countedConn); ok {
		return cc.admit()
	}
	return nil
}

// fdGuard keeps a spare descriptor: when accepting fails for want of
// descriptors (EMFILE, ENFILE), it gives the spare up, accepts the
// waiting connection and closes it at once, and takes the spare back, so
// that new clients are refused fast instead of hanging in the backlog
// while net/http backs off.
type fdGuard struct {
	net.Listener
	mu      sync.Mutex
	spare   *os.File
	refused func() // counts and logs one refusal
}

func newFDGuard(ln net.Listener, refused func()) *fdGuard {
	spare, _ := os.Open(os.DevNull) // without one, it only passes errors on
	return &fdGuard{Listener: ln, spare: spare, refused: refused}
}

func (l *fdGuard) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err == nil || !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
			return c, err
		}
		l.mu.Lock()
		if l.spare == nil {
			l.spare, _ = os.Open(os.DevNull)
			l.mu.Unlock()
			return nil, err // net/http backs off and tries again
		}
		_ = l.spare.Close()
		l.spare = nil
		// EMFILE comes even when no client waits: accept with a short
		// deadline, so that neither this nor Close can block on it.
		dl, canDeadline := l.Listener.(interface{ SetDeadline(time.Time) error })
		if canDeadline {
			_ = dl.SetDeadline(time.Now().Add(spareWait))
		}
		c, err2 := l.Listener.Accept()
		if canDeadline {
			_ = dl.SetDeadline(time.Time{})
		}
		if err2 == nil {
			_ = c.Close() // before the spare is taken back: it frees the slot
			l.refused()
		}
		l.spare, _ = os.Open(os.DevNull)
		l.mu.Unlock()
		if err2 != nil {
			return nil, err
		}
	}
}

// spareWait bounds fdGuard's accept with the spare given up.
const spareWait = 50 * time.Millisecond

// Close closes the listener, then the spare: an Accept in progress ends
// first.
func (l *fdGuard) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	if l.spare != nil {
		_ = l.spare.Close()
		l.spare = nil
	}
	l.mu.Unlock()
	return err
}
