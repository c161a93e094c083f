// Package gateway is smqgw's core: listeners, routing by path, and the
// session pipeline that takes a client from its TLS connection and HTTP
// bootstrap (WebSocket or raw SMQ) through the client-certificate decision to
// an upstream broker, relaying SMQ messages both ways with the edge's checks,
// liveness and one close reason per session.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/tlsterm"
)

// Gateway relays SMQ sessions from its listeners to upstream brokers.
type Gateway struct {
	log   *slog.Logger
	m     *Metrics
	lim   atomic.Pointer[limits.Limits]
	certs atomic.Pointer[[]CertSet]
	perIP *ipLimiter
	// clients are the connected sessions' ETIDs, for one_to_one "any";
	// denyLog rate-limits the access-denied log lines.
	clients clientSet
	denyLog logLimiter
	// tickets are the session ticket keys of every TLS listener; they
	// outlive reloads (tickets.go).
	tickets ticketKeys
	// conns counts connections per client address (admission.go);
	// admitLog rate-limits the log lines of its refusals.
	conns    connLimiter
	admitLog logLimiter
	// rates are the message rates of client addresses (message_rate_per_ip).
	rates rateTable

	mu       sync.Mutex
	started  bool
	closed   bool
	lns      []*liveListener
	sessions map[*session]struct{}
	wg       sync.WaitGroup // sessions
	serveWG  sync.WaitGroup // http.Server.Serve loops
	probes   prober
	admin    *http.Server // StartAdmin
	adminLn  net.Listener
}

// liveListener is one listener as it runs: what a reload may replace is
// in state; its socket, server and session count stay.
type liveListener struct {
	name    string
	addr    string // as configured
	tls     bool
	handler bool // a plain HTTP listener (ACME HTTP-01)
	proxied bool // PROXY protocol
	state   atomic.Pointer[listenerState]
	active  atomic.Int64 // sessions
	// pendingN counts admitted connections that are not sessions
	// (max_pending); pendingG is its gauge, once looked up.
	pendingN atomic.Int64
	pendingG atomic.Pointer[prometheus.Gauge]
	failed   atomic.Pointer[error] // why it stopped accepting, if it did
	// pending holds when each connection without a request yet was
	// accepted (net.Conn → time.Time), to count request timeouts.
	pending sync.Map
	srv     *http.Server
	ln      net.Listener // once started
}

// listenerState is the part of a listener a reload replaces.
type listenerState struct {
	def     Listener
	handler http.Handler // the route mux, or the listener's Handler
	tls     *tls.Config  // nil for a plain listener
	// auth caches the TLS configuration its routes' client-certificate
	// policies call for (clientauth.go), with the gateway's tickets.
	auth      atomic.Pointer[clientAuth]
	tickets   *ticketKeys
	proxyFrom []netip.Prefix
}

// New checks cfg and returns a gateway; Start begins serving.
func New(cfg Config) (*Gateway, error) {
	if err := check(cfg); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	g := &Gateway{log: cfg.Logger, m: cfg.Metrics, sessions: make(map[*session]struct{}),
		perIP:   newIPLimiter(cfg.Limits.MaxSessionsPerIP, float64(cfg.Limits.SessionRatePerIP)),
		denyLog: logLimiter{perSecond: denyLogRate}, admitLog: logLimiter{perSecond: denyLogRate}}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.m == nil {
		g.m = NewMetrics()
	}
	g.lim.Store(&cfg.Limits)
	g.m.setLimits(cfg.Limits)
	g.setCerts(cfg.Certs)
	g.tickets.set(cfg.SessionTicketKeys, time.Now())
	for _, l := range cfg.Listeners {
		ll := &liveListener{name: l.Name, addr: l.Addr, tls: l.Certs != nil, handler: l.Handler != nil,
			proxied: len(l.ProxyProtocolFrom) > 0}
		ll.state.Store(g.newState(ll, l))
		ll.srv = g.server(ll)
		g.lns = append(g.lns, ll)
	}
	return g, nil
}

// check validates a configuration, reporting every problem.
func check(cfg Config) error {
	var errs []error
	names := map[string]bool{}
	for _, l := range cfg.Listeners {
		if names[l.Name] {
			errs = append(errs, fmt.Errorf("gateway: listener %q defined twice", l.Name))
		}
		names[l.Name] = true
		switch {
		case l.Handler != nil && (len(l.Routes) > 0 || l.Certs != nil):
			errs = append(errs, fmt.Errorf("gateway: listener %q: a Handler listener has no routes and no certificates", l.Name))
		case l.Handler == nil && len(l.Routes) == 0:
			errs = append(errs, fmt.Errorf("gateway: listener %q has no routes", l.Name))
		}
		paths := map[string]bool{}
		for _, r := range l.Routes {
			if paths[r.Path] {
				errs = append(errs, fmt.Errorf("gateway: listener %q: route %q defined twice", l.Name, r.Path))
			}
			paths[r.Path] = true
			if r.Upstream == nil {
				errs = append(errs, fmt.Errorf("gateway: listener %q route %q has no upstream", l.Name, r.Path))
			}
			if !strings.HasPrefix(r.Path, "/") {
				errs = append(errs, fmt.Errorf("gateway: listener %q: invalid route path %q: must start with /", l.Name, r.Path))
			}
		}
	}
	if len(cfg.Listeners) == 0 {
		errs = append(errs, errors.New("gateway: no listeners"))
	}
	return errors.Join(errs...)
}

// limits returns the limits in force.
func (g *Gateway) limits() *limits.Limits { return g.lim.Load() }

// descriptorsOut returns what fdGuard does for each connection it refuses
// for want of descriptors on listener.
func (g *Gateway) descriptorsOut(listener string) func() {
	return func() {
		g.m.limit(listener, "descriptors")
		if suppressed, ok := g.admitLog.allow(time.Now(), false); ok {
			g.log.Warn("connection refused: out of file descriptors (raise LimitNOFILE / ulimit -n)",
				"listener", listener, "suppressed_before", suppressed)
		}
	}
}

// Metrics returns the gateway's metrics.
func (g *Gateway) Metrics() *Metrics { return g.m }

// Start listens on every listener and serves in the background. On error
// nothing is left listening.
func (g *Gateway) Start() error {
	var opened []net.Listener
	for _, ll := range g.lns {
		st := ll.state.Load()
		ln := st.def.Listener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", ll.addr); err != nil {
				for _, o := range opened {
					o.Close()
				}
				if errors.Is(err, syscall.EACCES) {
					err = fmt.Errorf("%w (a port below 1024 needs CAP_NET_BIND_SERVICE: setcap cap_net_bind_service=+ep on the binary, or AmbientCapabilities=CAP_NET_BIND_SERVICE under systemd)", err)
				}
				return fmt.Errorf("gateway: listener %q: %w", ll.name, err)
			}
		}
		opened = append(opened, ln)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.started {
		for _, o := range opened {
			o.Close()
		}
		return errors.New("gateway: Start after Start or Shutdown")
	}
	g.started = true
	for i, ll := range g.lns {
		ln := net.Listener(newFDGuard(opened[i], g.descriptorsOut(ll.name)))
		if ll.proxied {
			ln = proxyProtoListener(ln, func() []netip.Prefix { return ll.state.Load().proxyFrom },
				func() time.Duration { return g.limits().HandshakeTimeout }, g.log, g.m, ll.name)
		}
		ln = &admitListener{Listener: ln, g: g, ll: ll}
		if ll.tls {
			ln = tlsterm.NewListener(ln, tlsterm.ListenerConfig{
				Admit:       admitConn,
				Config:      func() *tls.Config { return ll.state.Load().tls },
				Timeout:     func() time.Duration { return g.limits().HandshakeTimeout },
				OnHandshake: g.handshakeDone(ll.name),
			})
		}
		ll.ln = ln
		g.serveWG.Add(1)
		go func() {
			defer g.serveWG.Done()
			if err := ll.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				ll.failed.Store(&err)
				g.log.Error("listener stopped accepting", "listener", ll.name, "err", err)
			}
		}()
		g.log.Info("listening", "listener", ll.name, "address", ln.Addr().String(), "tls", ll.tls)
	}
	return nil
}

// handshakeDone counts the TLS handshakes of a listener, and logs their
// failures with the reason that labels the metric.
func (g *Gateway) handshakeDone(listener string) func(net.Conn, error) {
	return func(c net.Conn, err error) {
		if err == nil {
			g.m.handshakes.WithLabelValues(listener).Inc()
			return
		}
		reason := tlsterm.FailureReason(err)
		g.m.tlsFailures.WithLabelValues(listener, reason.String()).Inc()
		if reason == tlsterm.FailureTimeout {
			g.m.limit(listener, "handshake_timeout")
		}
		g.log.Debug("TLS handshake failed", "listener", listener, "client", c.RemoteAddr().String(),
			"reason", reason.String(), "err", err)
	}
}

// Addr returns the address the named listener listens on, nil before Start.
func (g *Gateway) Addr(listener string) net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ll := range g.lns {
		if ll.name == listener && ll.ln != nil {
			return ll.ln.Addr()
		}
	}
	return nil
}

// isClosed reports whether Shutdown has begun.
func (g *Gateway) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// track counts s among the sessions in progress, unless Shutdown has begun.
// Sessions counts it until untrack; Shutdown waits for it until its
// server goroutine calls g.wg.Done.
func (g *Gateway) track(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.sessions[s] = struct{}{}
	g.wg.Add(1)
	return true
}

func (g *Gateway) untrack(s *session) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
}

// Sessions returns the number of sessions in progress.
func (g *Gateway) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// Shutdown stops accepting, ends every session without an SMQ refusal (a
// raw client sees the end of the stream, a WebSocket one close 1001
// "shutdown"; a route with RefuseTemporary sends Disconnect "shutdown"
// first), and waits for the sessions to end until ctx is done, when it
// closes the rest.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	var servers []*http.Server
	if g.started {
		for _, ll := range g.lns {
			servers = append(servers, ll.srv)
		}
		g.started = false
	}
	sessions := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Close() // hijacked connections are the sessions', not the server's
	}
	g.serveWG.Wait()
	// In parallel: each end may wait on a slow client up to the linger.
	var ending sync.WaitGroup
	for _, s := range sessions {
		ending.Go(func() { s.end(ReasonShutdown, "") })
	}
	done := make(chan struct{})
	go func() { ending.Wait(); g.wg.Wait(); close(done) }()
	defer g.closeAdmin()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		for s := range g.sessions {
			s.abort()
		}
		g.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// closeAdmin closes the admin endpoint, if it is open.
func (g *Gateway) closeAdmin() {
	g.mu.Lock()
	srv := g.admin
	g.admin = nil
	g.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}
