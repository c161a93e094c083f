package gateway

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smqgw/smqgw/upstream"
)

// Readiness tuning: a URL that worked this recently needs no probe; a
// probe's result is reused this long; a probe gets this long.
const (
	readyRecent   = time.Minute
	readyCacheFor = 5 * time.Second
	readyProbeMax = 3 * time.Second
)

// AdminHandler serves the admin endpoints: /metrics (Prometheus text
// format), /healthz (the process is alive), /readyz (it can take
// sessions: listeners up, an upstream reachable for every route,
// certificates in date; 503 and one line per problem otherwise) and the
// Go profiles under /debug/pprof/.
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.m.reg, promhttp.HandlerOpts{ErrorLog: log.New(io.Discard, "", 0)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		problems := g.Ready(r.Context())
		if len(problems) == 0 {
			io.WriteString(w, "ready\n")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready:\n")
		for _, p := range problems {
			io.WriteString(w, "  "+p+"\n")
		}
	})
	// Profiles for performance work: go tool pprof http://ADMIN/debug/pprof/profile
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "smqgw admin: /metrics /healthz /readyz /debug/pprof/\n")
	})
	return mux
}

// Ready reports what keeps the gateway from taking sessions, nothing when
// it is ready: it is shutting down or not started; a route none of whose
// upstream URLs is reachable (from recent sessions' dials, else a TCP
// probe, kept for a few seconds); a certificate set missing a certificate
// or holding an expired one.
func (g *Gateway) Ready(ctx context.Context) []string {
	g.mu.Lock()
	started, closed := g.started, g.closed
	var routes []routeRef
	var problems []string
	for _, ll := range g.lns {
		if ll.ln == nil {
			continue
		}
		if err := ll.failed.Load(); err != nil {
			problems = append(problems, fmt.Sprintf("listener %q stopped accepting: %v", ll.name, *err))
		}
		for _, r := range ll.state.Load().def.Routes {
			routes = append(routes, routeRef{ll.name, r})
		}
	}
	g.mu.Unlock()
	switch {
	case closed:
		return []string{"shutting down"}
	case !started:
		return []string{"not started: no listener is open"}
	}
	// Each upstream once, all at the same time.
	checked := map[upstream.Upstream]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, rr := range routes {
		up := rr.route.Upstream
		mu.Lock()
		_, dup := checked[up]
		checked[up] = ""
		mu.Unlock()
		if !dup {
			wg.Go(func() {
				why := g.probes.reachable(ctx, up)
				mu.Lock()
				checked[up] = why
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, rr := range routes {
		if why := checked[rr.route.Upstream]; why != "" {
			problems = append(problems, fmt.Sprintf("listener %q route %q: %s", rr.listener, rr.route.Path, why))
		}
	}
	now := time.Now()
	for _, set := range *g.certs.Load() {
		leaves := set.Certs.Leaves()
		if want := set.Certs.Want(); len(leaves) < want {
			problems = append(problems, fmt.Sprintf("%s: %d of %d certificates obtained", set.Name, len(leaves), want))
		}
		for _, l := range leaves {
			switch {
			case now.After(l.NotAfter):
				problems = append(problems, fmt.Sprintf("%s: certificate %q expired at %s", set.Name, certName(l),
					l.NotAfter.UTC().Format(time.RFC3339)))
			case now.Before(l.NotBefore):
				problems = append(problems, fmt.Sprintf("%s: certificate %q is not valid before %s", set.Name, certName(l),
					l.NotBefore.UTC().Format(time.RFC3339)))
			}
		}
	}
	return problems
}

type routeRef struct {
	listener string
	route    *Route
}

// prober decides whether upstreams are reachable, caching its probes.
type prober struct {
	mu    sync.Mutex
	cache map[*upstream.Dialer]probeResult
}

type probeResult struct {
	at  time.Time
	why string
}

// reachable returns "" when up is reachable, else why not.
func (p *prober) reachable(ctx context.Context, up upstream.Upstream) string {
	d, ok := up.(*upstream.Dialer)
	if !ok {
		return "" // the embedded broker, or one that cannot be probed
	}
	now := time.Now()
	for _, st := range d.State() {
		if st.Err == nil && now.Sub(st.LastOK) < readyRecent {
			return ""
		}
	}
	p.mu.Lock()
	if r, ok := p.cache[d]; ok && now.Sub(r.at) < readyCacheFor {
		p.mu.Unlock()
		return r.why
	}
	p.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, readyProbeMax)
	defer cancel()
	why := ""
	if err := d.Probe(pctx); err != nil {
		why = upstream.Reason(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cache == nil {
		p.cache = map[*upstream.Dialer]probeResult{}
	}
	// Forget dialers a reload replaced.
	for k, r := range p.cache {
		if now.Sub(r.at) > readyRecent {
			delete(p.cache, k)
		}
	}
	p.cache[d] = probeResult{now, why}
	return why
}

// StartAdmin serves AdminHandler on addr (host:port) until Shutdown has
// ended every session: /readyz says "shutting down" while the sessions
// drain.
func (g *Gateway) StartAdmin(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("gateway: admin endpoint: %w", err)
	}
	srv := &http.Server{Handler: g.AdminHandler(), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	g.mu.Lock()
	g.admin, g.adminLn = srv, ln
	g.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	g.log.Info("admin endpoint", "address", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return nil
}

// AdminAddr returns the admin endpoint's address, nil when it is off.
func (g *Gateway) AdminAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.adminLn == nil {
		return nil
	}
	return g.adminLn.Addr()
}
