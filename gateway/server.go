package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
)

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
	// A request, body included, must come within the request timeout: a
	// body that never comes must not hold a pending slot (net/http reads
	// what is left of it after the answer). A session's connection is
	// hijacked, and its deadlines are the session's from then on.
	srv.ReadTimeout = lim.RequestTimeout
	if ll.handler {
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
			if cc := countedOf(c); cc != nil {
				cc.toSession()
			}
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
		// No keep-alive: a connection that is no session should not stay.
		w.Header().Set("Connection", "close")
		http.Error(w, "smqgw: not an SMQ request (no SimpleMQ header, no WebSocket upgrade)", http.StatusNotFound)
		return
	}
	if boot.WebSocket && !h.originAllowed(r) {
		g.log.Warn("websocket refused: origin not allowed", "listener", h.ll.name, "route", h.route.Path,
			"origin", r.Header.Get("Origin"), "host", r.Host, "client", r.RemoteAddr)
		g.m.origins.WithLabelValues(h.ll.name, h.route.Path).Inc()
		w.Header().Set("Connection", "close")
		http.Error(w, "smqgw: origin not allowed", http.StatusForbidden)
		return
	}
	lim := g.limits()
	s := &session{g: g, lim: lim, listener: h.ll.name, route: h.route, clientIP: smq.HostIP(r.RemoteAddr), start: time.Now(),
		id: newSessionID(), remote: r.RemoteAddr}
	s.rate = msgRate{max: lim.MessageRate, start: s.start}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.clientHeader = r.Header // forwarded upstream, less ours and hop-by-hop ones
	s.host, s.overTLS = r.Host, r.TLS != nil
	s.bareRefusals = bootsLikeCClient(r, boot)
	if err := s.accept(w, r, boot); err != nil {
		s.stop()
		g.log.Debug("bootstrap failed", "client", r.RemoteAddr, "err", err)
		return
	}
	// The session goes on in a goroutine of its own, and this one returns:
	// net/http's connection, request and response (and the deep stack
	// that served them) are not kept for the session's lifetime.
	state := r.TLS
	go s.serve(h.ll, state)
}

// bootsLikeCClient reports whether a raw SMQ request comes from the
// reference C client, which sends "GET path HTTP/1.0" with "User-Agent:
// SimpleMQ/1" (SMQ-WIRE §2). Its Connack parser reads a reason text of 4
// bytes or more in place of the code (SMQ-WIRE §5).
func bootsLikeCClient(r *http.Request, boot smq.Bootstrap) bool {
	return !boot.WebSocket && r.ProtoMajor == 1 && r.ProtoMinor == 0 &&
		r.Header.Get("User-Agent") == "SimpleMQ/1"
}

// originAllowed applies the route's Origin allow-list to a WebSocket
// upgrade; without one, the page must come from the gateway itself (see
// servedOrigin).
func (h *handler) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	if allowed := h.route.AllowedOrigins; len(allowed) > 0 {
		for _, a := range allowed {
			if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
				return true
			}
		}
		return false
	}
	return h.servedOrigin(origin)
}

// servedOrigin reports whether origin is one of the listener's own: the
// listener's scheme (https on a TLS listener, http on a plain one), its
// port, and a host it really serves — on a TLS listener a name (or IP)
// its certificates are valid for, on a plain one an IP address it
// listens on, or "localhost" when that is a loopback or unspecified
// address. The request's Host header is not looked at: a DNS-rebinding
// page sends the Host it resolved.
func (h *handler) servedOrigin(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" && u.Path != "/" {
		return false
	}
	ln := h.ll.ln
	if ln == nil {
		return false
	}
	la, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return false
	}
	state := h.ll.state.Load()
	scheme, defPort := "http", "80"
	if state.tls != nil {
		scheme, defPort = "https", "443"
	}
	port := u.Port()
	if port == "" {
		port = defPort
	}
	host := strings.ToLower(u.Hostname())
	if !strings.EqualFold(u.Scheme, scheme) || port != strconv.Itoa(la.Port) {
		return false
	}
	if state.tls != nil {
		return certCovers(state.def.Certs, host)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host == "localhost" && (la.IP.IsLoopback() || la.IP.IsUnspecified())
	}
	lip, _ := netip.AddrFromSlice(la.IP)
	if ip.Unmap() == lip.Unmap() {
		return true
	}
	return la.IP.IsUnspecified() && isLocalAddr(ip)
}

// certCovers reports whether the certificates of src include one valid
// for host (a DNS name, wildcards as TLS checks them, or an IP address).
func certCovers(src certs.Source, host string) bool {
	var leaves []*x509.Certificate
	if inv, ok := src.(certs.Inventory); ok {
		leaves = inv.Leaves()
	} else if c, err := src.GetCertificate(&tls.ClientHelloInfo{ServerName: host}); err == nil && c != nil {
		leaf := c.Leaf
		if leaf == nil && len(c.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		if leaf != nil {
			leaves = []*x509.Certificate{leaf}
		}
	}
	for _, l := range leaves {
		if l.VerifyHostname(host) == nil {
			return true
		}
	}
	return false
}

// isLocalAddr reports whether ip is an address of this machine's
// interfaces.
func isLocalAddr(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if la, ok := netip.AddrFromSlice(n.IP); ok && la.Unmap() == ip.Unmap() {
				return true
			}
		}
	}
	return false
}
