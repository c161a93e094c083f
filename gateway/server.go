package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
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
