package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

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
	g.m.setLimits(cfg.Limits)
	g.tickets.set(cfg.SessionTicketKeys, time.Now())
	g.perIP.set(cfg.Limits.MaxSessionsPerIP, float64(cfg.Limits.SessionRatePerIP))
	for _, sw := range swaps {
		sw.ll.state.Store(sw.st)
	}
	g.setCerts(cfg.Certs)
	return restart, nil
}

// newState makes what a listener serves from its definition: its route
// mux (or Handler) and TLS configuration.
func (g *Gateway) newState(ll *liveListener, l Listener) *listenerState {
	st := &listenerState{def: l, handler: l.Handler, proxyFrom: l.ProxyProtocolFrom}
	g.m.declare(l)
	if l.Certs != nil {
		st.tls = serverTLS(l.Certs)
		st.tls.GetConfigForClient = st.configForClient
		st.tickets = &g.tickets
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
			w.Header().Set("Connection", "close")
			http.Error(w, "smqgw: no SMQ route here", http.StatusNotFound)
		})
	}
	st.handler = mux
	return st
}

func (g *Gateway) setCerts(sets []CertSet) {
	g.certs.Store(&sets)
	g.m.setCerts(sets)
}
