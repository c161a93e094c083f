// Package gateway is smqgw's core: listeners, routing by path, and the
// session pipeline that takes a client from its TLS connection and HTTP
// bootstrap (WebSocket or raw SMQ) through the client-certificate decision to
// an upstream broker, relaying SMQ messages both ways with the edge's checks,
// liveness and one close reason per session.
package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
	"github.com/smqgw/smqgw/wire"
)

// Route sends the SMQ sessions of one path to one upstream.
type Route struct {
	// Path is a net/http ServeMux pattern path: "/" matches every path, a
	// path ending in "/" its subtree, any other exactly.
	Path     string
	Upstream upstream.Upstream
	// Policy decides client certificates; nil means off (no certificate
	// is looked at). SetPolicy replaces it while serving.
	Policy *tlsterm.Policy
	// AllowedOrigins lists the Origin values ("https://app.example.com")
	// allowed to open a WebSocket; "*" allows any. Empty allows only the
	// gateway's own host (Origin host equal to the request's Host). Requests
	// without Origin (not from a browser) are allowed.
	AllowedOrigins []string
	// Console serves the web console (package web) on GET requests to
	// the route that are not an SMQ bootstrap.
	Console bool

	swapped atomic.Pointer[policyBox] // set by SetPolicy
}

type policyBox struct{ p *tlsterm.Policy }

// SetPolicy replaces the route's client-certificate policy for sessions
// that start from now on (a reloaded CA bundle or CRL); sessions already
// admitted are not judged again. Safe while the gateway serves.
func (r *Route) SetPolicy(p *tlsterm.Policy) { r.swapped.Store(&policyBox{p}) }

// policy returns the policy in force.
func (r *Route) policy() *tlsterm.Policy {
	if b := r.swapped.Load(); b != nil {
		return b.p
	}
	return r.Policy
}

// Listener is one address the gateway accepts clients on.
type Listener struct {
	Name string
	Addr string // host:port; ignored when Listener is set
	// Certs, when not nil, makes this a TLS listener serving its
	// certificates, with the hardened settings of tlsterm.ServerConfig. An
	// ACME source (certs.ACMESource) also gets its TLS-ALPN-01 probes
	// answered: they complete the handshake and are closed, never reaching
	// a session.
	Certs  certs.Source
	Routes []*Route
	// Handler, when not nil, makes this a plain HTTP listener serving it
	// instead of SMQ routes: the ACME HTTP-01 answerer and redirect to
	// https. Such a listener has no Routes and no Certs.
	Handler http.Handler
	// Listener, when not nil, is used instead of listening on Addr.
	Listener net.Listener
	// ProxyProtocolFrom, when not empty, makes the listener take the
	// client's address from a PROXY protocol header (v1 or v2), which every
	// connection from these sources must send; connections from elsewhere
	// are refused. For smqgw behind an L4 load balancer.
	ProxyProtocolFrom []netip.Prefix
}

// Config configures a Gateway.
type Config struct {
	Logger    *slog.Logger  // nil discards
	Limits    limits.Limits // zero fields take their defaults
	Listeners []Listener
	// Metrics receives the gateway's metrics; nil makes new ones.
	Metrics *Metrics
	// Certs are the certificate sets the gateway presents, for the expiry
	// metric and the readiness check.
	Certs []CertSet
}

// Gateway relays SMQ sessions from its listeners to upstream brokers.
type Gateway struct {
	log   *slog.Logger
	m     *Metrics
	lim   atomic.Pointer[limits.Limits]
	certs atomic.Pointer[[]CertSet]
	perIP *ipLimiter

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
	active  atomic.Int64          // sessions
	failed  atomic.Pointer[error] // why it stopped accepting, if it did
	// pending holds when each connection without a request yet was
	// accepted (net.Conn → time.Time), to count request timeouts.
	pending sync.Map
	srv     *http.Server
	ln      net.Listener // once started
}

// listenerState is the part of a listener a reload replaces.
type listenerState struct {
	def       Listener
	handler   http.Handler // the route mux, or the listener's Handler
	tls       *tls.Config  // nil for a plain listener
	proxyFrom []netip.Prefix
}

// New checks cfg and returns a gateway; Start begins serving.
func New(cfg Config) (*Gateway, error) {
	if err := check(cfg); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	g := &Gateway{log: cfg.Logger, m: cfg.Metrics, sessions: make(map[*session]struct{}),
		perIP: newIPLimiter(cfg.Limits.MaxSessionsPerIP, float64(cfg.Limits.SessionRatePerIP))}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.m == nil {
		g.m = NewMetrics()
	}
	g.lim.Store(&cfg.Limits)
	g.setCerts(cfg.Certs)
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

func (g *Gateway) setCerts(sets []CertSet) {
	g.certs.Store(&sets)
	g.m.setCerts(sets)
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
		ln := opened[i]
		if ll.proxied {
			ln = proxyProtoListener(ln, func() []netip.Prefix { return ll.state.Load().proxyFrom },
				func() time.Duration { return g.limits().HandshakeTimeout }, g.log, g.m, ll.name)
		}
		if ll.tls {
			ln = tlsterm.NewListener(ln, tlsterm.ListenerConfig{
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

// Apply puts cfg in force for the connections and sessions that start
// from now on, and leaves established sessions as they are: routes (with
// their upstreams, certificate policies and origin allow-lists),
// certificates, PROXY protocol senders, limits and the certificate sets.
// What cannot change while running is left as it was and named in the
// returned list, each to be applied by a restart: a listener added,
// removed or moved to another address, TLS or PROXY protocol turned on or
// off on a listener, the request timeout. A cfg that does not validate
// changes nothing. Safe while the gateway serves.
func (g *Gateway) Apply(cfg Config) (restart []string, err error) {
	if err := check(cfg); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("gateway: shut down")
	}
	if old := g.limits(); cfg.Limits.HandshakeTimeout != old.HandshakeTimeout {
		for _, ll := range g.lns {
			if ll.proxied {
				restart = append(restart, fmt.Sprintf("limits.handshake_timeout for the PROXY header of listener %q (still %v; TLS handshakes take the new one)",
					ll.name, old.HandshakeTimeout))
			}
		}
	}
	if old := g.limits(); cfg.Limits.RequestTimeout != old.RequestTimeout {
		restart = append(restart, fmt.Sprintf("limits.request_timeout %v (still %v)", cfg.Limits.RequestTimeout, old.RequestTimeout))
		cfg.Limits.RequestTimeout = old.RequestTimeout
	}
	byName := map[string]*liveListener{}
	for _, ll := range g.lns {
		byName[ll.name] = ll
	}
	type swap struct {
		ll *liveListener
		st *listenerState
	}
	var swaps []swap
	for _, l := range cfg.Listeners {
		ll := byName[l.Name]
		delete(byName, l.Name)
		switch {
		case ll == nil:
			restart = append(restart, fmt.Sprintf("listener %q is new: it opens on restart", l.Name))
			continue
		case (l.Certs != nil) != ll.tls || (l.Handler != nil) != ll.handler:
			restart = append(restart, fmt.Sprintf("listener %q: TLS turned on or off: the listener is left as it was", l.Name))
			continue
		case (len(l.ProxyProtocolFrom) > 0) != ll.proxied:
			restart = append(restart, fmt.Sprintf("listener %q: PROXY protocol turned on or off: the listener is left as it was", l.Name))
			continue
		}
		if l.Addr != ll.addr && l.Listener == nil {
			restart = append(restart, fmt.Sprintf("listener %q address %s (still %s)", l.Name, l.Addr, ll.addr))
		}
		swaps = append(swaps, swap{ll, g.newState(ll, l)})
	}
	for _, ll := range g.lns {
		if byName[ll.name] != nil {
			restart = append(restart, fmt.Sprintf("listener %q was removed: it serves as before until restart", ll.name))
		}
	}
	g.lim.Store(&cfg.Limits)
	g.perIP.set(cfg.Limits.MaxSessionsPerIP, float64(cfg.Limits.SessionRatePerIP))
	for _, sw := range swaps {
		sw.ll.state.Store(sw.st)
	}
	g.setCerts(cfg.Certs)
	return restart, nil
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

// serverTLS is the TLS configuration of a listener serving src.
func serverTLS(src certs.Source) *tls.Config {
	cfg := tlsterm.ServerConfig(src.GetCertificate)
	if _, ok := src.(certs.ACMESource); ok {
		// net/http closes a connection that negotiated a protocol it has
		// no TLSNextProto handler for, after the handshake: the probe got
		// its answer, and no session starts.
		cfg.NextProtos = append(cfg.NextProtos, certs.ALPNProto)
	}
	return cfg
}

// newState makes what a listener serves from its definition: its route
// mux (or Handler) and TLS configuration.
func (g *Gateway) newState(ll *liveListener, l Listener) *listenerState {
	st := &listenerState{def: l, handler: l.Handler, proxyFrom: l.ProxyProtocolFrom}
	g.m.declare(l)
	if l.Certs != nil {
		st.tls = serverTLS(l.Certs)
	}
	if l.Handler != nil {
		return st
	}
	mux := http.NewServeMux()
	catchAll := false
	for _, r := range l.Routes {
		mux.Handle(r.Path, &handler{g: g, ll: ll, route: r})
		catchAll = catchAll || r.Path == "/"
	}
	if !catchAll {
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "smqgw: no SMQ route here", http.StatusNotFound)
		})
	}
	st.handler = mux
	return st
}

// server makes the HTTP server of a listener: it serves whatever the
// listener's state holds at each request.
func (g *Gateway) server(ll *liveListener) *http.Server {
	lim := g.limits()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				ll.pending.Delete(c) // a request came in time
			}
			ll.state.Load().handler.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ReadHeaderTimeout: lim.RequestTimeout,
		IdleTimeout:       lim.RequestTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	if ll.handler {
		srv.ReadTimeout = lim.RequestTimeout
		srv.WriteTimeout = lim.RequestTimeout
	}
	// A connection closed before a whole request came, after (about) the
	// request timeout, was closed by it: silent, or sending its header too
	// slowly.
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			ll.pending.Store(c, time.Now())
		case http.StateHijacked:
			ll.pending.Delete(c)
		case http.StateClosed:
			at, ok := ll.pending.LoadAndDelete(c)
			if ok && time.Since(at.(time.Time)) >= lim.RequestTimeout*9/10 && !g.isClosed() {
				g.m.limit(ll.name, "request_timeout")
			}
		}
	}
	return srv
}

// connKey is the context key of a request's connection.
type connKey struct{}

// isClosed reports whether Shutdown has begun.
func (g *Gateway) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// handler serves one route.
type handler struct {
	g     *Gateway
	ll    *liveListener
	route *Route
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := h.g
	boot := smq.Classify(r.Header)
	if !boot.SMQ {
		if h.route.Console && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			serveConsole(w, r)
			return
		}
		http.Error(w, "smqgw: not an SMQ request (no SimpleMQ header, no WebSocket upgrade)", http.StatusNotFound)
		return
	}
	if boot.WebSocket && !originAllowed(r, h.route.AllowedOrigins) {
		g.log.Warn("websocket refused: origin not allowed", "listener", h.ll.name, "route", h.route.Path,
			"origin", r.Header.Get("Origin"), "host", r.Host, "client", r.RemoteAddr)
		g.m.origins.WithLabelValues(h.ll.name, h.route.Path).Inc()
		http.Error(w, "smqgw: origin not allowed", http.StatusForbidden)
		return
	}
	lim := g.limits()
	s := &session{g: g, lim: lim, listener: h.ll.name, route: h.route, clientIP: clientIP(r.RemoteAddr), start: time.Now()}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.clientHeader = r.Header // forwarded upstream, less ours and hop-by-hop ones
	if err := s.accept(w, r, boot); err != nil {
		s.stop()
		g.log.Debug("bootstrap failed", "client", r.RemoteAddr, "err", err)
		return
	}
	// The session goes on in a goroutine of its own, and this one returns:
	// net/http's connection, request and response (and the deep stack
	// that served them) are not kept for the session's lifetime.
	state := r.TLS
	go h.serve(s, state)
}

// serve runs an accepted session to its end.
//
// The session's log line comes last, after its counters and after every
// slot it held is released: whoever sees the line (an operator, a test)
// sees a gateway that has finished with the session.
func (h *handler) serve(s *session, state *tls.ConnectionState) {
	g, lim := h.g, s.lim
	tracked := g.track(s)
	defer func() {
		s.logEnd()
		if tracked {
			g.wg.Done() // Shutdown waits for the log line too
		}
	}()
	defer s.stop()
	transport := transportName(s.client)
	g.m.sessionsTotal.WithLabelValues(h.ll.name, h.route.Path, transport).Inc()
	open := g.m.sessionsOpen.WithLabelValues(h.ll.name, h.route.Path, transport)
	open.Inc()
	defer open.Dec()
	if !tracked {
		s.end(ReasonShutdown, "")
		s.close()
		return
	}
	defer g.untrack(s)
	if n := h.ll.active.Add(1); n > int64(lim.MaxSessions) {
		h.ll.active.Add(-1)
		g.m.limit(h.ll.name, "max_sessions")
		g.log.Warn("session refused: listener at max_sessions", "listener", h.ll.name, "client", s.clientIP,
			"max_sessions", lim.MaxSessions)
		s.refuse(smq.CodeServerUnavailable, "server busy: too many sessions", ReasonBusy, nil)
		s.close()
		return
	}
	defer h.ll.active.Add(-1)
	if ip, err := netip.ParseAddr(s.clientIP); err == nil {
		if limit, why := g.perIP.admit(ip, time.Now()); limit != "" {
			g.m.limit(h.ll.name, limit)
			g.log.Warn("session refused: per-address limit", "listener", h.ll.name, "client", s.clientIP,
				"limit", limit, "why", why)
			s.refuse(smq.CodeServerUnavailable, why, ReasonBusy, nil)
			s.close()
			return
		}
		defer g.perIP.release(ip)
	}

	decision := tlsterm.Decision{Code: smq.CodeAccepted}
	if p := h.route.policy(); p != nil {
		decision = p.Check(state, time.Now())
	}
	s.run(decision)
	s.close()
}

// accept completes the client's bootstrap: the WebSocket upgrade, or the
// hijack of a raw SMQ connection (with the HTTP answer if it asked for one).
func (s *session) accept(w http.ResponseWriter, r *http.Request, boot smq.Bootstrap) error {
	if boot.WebSocket {
		// ReadBufferSize 0: gorilla reads frames from the hijacked
		// reader, which hw keeps, so the relay can see what is buffered.
		hw := &hijackWatcher{ResponseWriter: w}
		up := websocket.Upgrader{
			HandshakeTimeout: s.lim.RequestTimeout,
			WriteBufferSize:  4096,
			WriteBufferPool:  wsWritePool,
			CheckOrigin:      func(*http.Request) bool { return true }, // checked by the handler
		}
		conn, err := up.Upgrade(hw, r, nil)
		if err != nil {
			return err
		}
		conn.SetPongHandler(func(string) error { s.clientSeen.Add(1); return nil })
		ws := wire.NewWS(conn, s.lim.MaxMessageSize)
		if hw.br != nil {
			ws.UseReader(hw.br)
		}
		s.client = ws
		return nil
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "smqgw: raw SMQ needs HTTP/1.x", http.StatusHTTPVersionNotSupported)
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	if err := smq.WriteResponse(conn, boot); err != nil {
		conn.Close()
		return err
	}
	raw := wire.NewRaw(conn, brw.Reader) // net/http's 4 KiB reader
	raw.SetMaxRead(s.lim.MaxMessageSize)
	s.client = raw
	return nil
}

// hijackWatcher keeps the buffered reader of a hijacked connection.
type hijackWatcher struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (h *hijackWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if brw != nil {
		h.br = brw.Reader
	}
	return conn, brw, err
}

// wsWritePool shares WebSocket write buffers between sessions: an idle
// session holds none.
var wsWritePool = &sync.Pool{}

// close waits out the session's end and closes both connections.
func (s *session) close() {
	// Drain the client until it closes or the linger deadline passes, so
	// our last message is not lost to a reset.
	if s.client != nil {
		for {
			if _, err := s.client.Read(); err != nil {
				break
			}
		}
		_ = s.client.Close()
	}
	if up := s.upstream(); up != nil {
		_ = up.Close()
	}
}

// logEnd counts the session's end and logs it.
func (s *session) logEnd() {
	attrs := []any{
		"listener", s.listener, "route", s.route.Path, "client", s.clientIP,
		"transport", transportName(s.client), "upstream", s.route.Upstream.Name(),
		"reason", s.reasonOf().String(),
		"msgs_in", s.inMsgs.Load(), "bytes_in", s.inBytes.Load(),
		"msgs_out", s.outMsgs.Load(), "bytes_out", s.outBytes.Load(),
		"duration", time.Since(s.start).Round(time.Millisecond).String(),
	}
	if d := s.detail(); d != "" {
		attrs = append(attrs, "detail", d)
	}
	if s.identity != nil {
		attrs = append(attrs, "identity", s.identity.Subject)
	}
	if n := s.dropped.Load(); n > 0 {
		attrs = append(attrs, "dropped_too_big", n)
	}
	s.g.m.closed.WithLabelValues(s.listener, s.route.Path, s.reasonOf().String()).Inc()
	if limit := s.reasonOf().limit(); limit != "" {
		s.g.m.limit(s.listener, limit)
	}
	s.g.log.Info("session", attrs...)
}

func transportName(c wire.Conn) string {
	if c != nil && c.WebSocket() {
		return "websocket"
	}
	return "raw"
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

// Shutdown stops accepting, tells every client Disconnect "shutdown"
// (WebSocket clients then get close 1001), and waits for the sessions to end
// until ctx is done, when it closes the rest.
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

// abort closes both connections at once.
func (s *session) abort() {
	s.stop()
	if s.client != nil {
		_ = s.client.Close()
	}
	if up := s.upstream(); up != nil {
		_ = up.Close()
	}
}

// originAllowed applies a route's Origin allow-list to a WebSocket upgrade.
func originAllowed(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	if len(allowed) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	return false
}

// clientIP returns the host part of a remote address, IPv4-mapped IPv6 as
// IPv4.
func clientIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

// Identity headers sent upstream for an accepted client certificate.
const (
	HeaderSubject     = "X-Smq-Client-Subject"
	HeaderCN          = "X-Smq-Client-Cn"
	HeaderSANURI      = "X-Smq-Client-San-Uri"
	HeaderFingerprint = "X-Smq-Client-Fingerprint"
)

// hopHeaders are never forwarded upstream: hop-by-hop headers, the
// WebSocket handshake, the bootstrap's own, and anything that would let a
// client pose as someone else.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true,
	"Sec-Websocket-Key": true, "Sec-Websocket-Version": true, "Sec-Websocket-Extensions": true,
	"Sec-Websocket-Protocol": true, "Simplemq": true, "Sendsmqhttpresponse": true,
	"X-Forwarded-For": true, "Forwarded": true, "X-Real-Ip": true,
}

// upstreamHeader is the bootstrap header set for the upstream: the client's
// own headers less hop-by-hop ones and any X-SMQ-Client-* copies, plus the
// verified identity. upstream adds X-Forwarded-For.
func (s *session) upstreamHeader() http.Header {
	h := make(http.Header, len(s.clientHeader)+4)
	for k, v := range s.clientHeader {
		ck := http.CanonicalHeaderKey(k)
		if hopHeaders[ck] || strings.HasPrefix(ck, "X-Smq-Client-") {
			continue
		}
		h[ck] = v
	}
	if id := s.identity; id != nil {
		h.Set(HeaderSubject, id.Subject)
		h.Set(HeaderCN, id.CN)
		for _, u := range id.URIs {
			h.Add(HeaderSANURI, u)
		}
		h.Set(HeaderFingerprint, id.Fingerprint)
	}
	return h
}
