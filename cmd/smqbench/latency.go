package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// The open-loop latency workload: requesters sending round trips on a
// fixed schedule, at a rate far below what any path sustains, so that the
// latency is the path's and not the load generator's queueing.
const (
	latRequesters = 8
	latRate       = 500 // round trips per second per requester
	latSize       = 64
)

// latencyResults are the open-loop runs: by target, one per repetition.
type latencyResults struct {
	targets []string
	runs    map[string][]*output
}

// baseline is the direct path each path's added latency is counted over.
func baseline(t string) string {
	if t == lanRaw || t == directRaw || t == nginxRaw {
		return directRaw
	}
	return direct
}

// runLatency runs the open-loop round trips through every path, in
// repetitions that each go through every path.
func runLatency(s *suite) error {
	d := 10 * time.Second
	if s.quick {
		d = 2 * time.Second
	}
	r := &latencyResults{runs: map[string][]*output{}}
	targets := s.e.pick(direct, directRaw, lanWSS, lanRaw, lanOne, embedded, nginxWSS, nginxRaw)
	for _, t := range targets {
		r.targets = append(r.targets, t.name)
		r.runs[t.name] = make([]*output, s.reps)
	}
	args := []string{"-mode", "rr", "-pubs", fmt.Sprint(latRequesters), "-rate", fmt.Sprint(latRate), "-size", fmt.Sprint(latSize)}
	for rep := range s.reps {
		for _, t := range rotate(targets, rep) {
			o, err := s.e.bench(t, d, args...)
			s.check(fmt.Sprintf("open-loop latency via %s, repetition %d", t.name, rep+1), o, err)
			r.runs[t.name][rep] = o
		}
	}
	s.lat = r
	s.json["latency"] = map[string]any{"requesters": latRequesters, "rate_per_requester": latRate,
		"payload_bytes": latSize, "duration_ns": d, "runs": r.runs}
	return nil
}

// quantile returns a percentile ("p50", "p99") of each repetition, in ms.
func (r *latencyResults) quantile(t, p string) spread {
	var v spread
	for _, o := range r.runs[t] {
		if o != nil {
			v = append(v, float64(o.Percentiles[p])/1e6)
		}
	}
	return v
}

// added returns the median percentile of t minus its baseline's, in ms.
func (r *latencyResults) added(t, p string) float64 {
	return r.quantile(t, p).median() - r.quantile(baseline(t), p).median()
}

func reportLatency(s *suite, w io.Writer) {
	r := s.lat
	fmt.Fprintf(w, "\nLatency, open loop: %d requesters × %d round trips/s of %d B, each on its schedule whatever the answers (latency from when the request was due), %d repetitions interleaved; median (min–max), ms; added: median minus the direct path's (wss: direct ws://; raw TLS: direct raw http://):\n\n",
		latRequesters, latRate, latSize, s.reps)
	fmt.Fprintln(w, "| path | round trips/s | p50 | p99 | added p50 | added p99 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, t := range r.targets {
		var rate spread
		for _, o := range r.runs[t] {
			if o != nil {
				rate = append(rate, o.Totals.Rate)
			}
		}
		addP50, addP99 := "—", "—"
		if t != baseline(t) {
			addP50, addP99 = fmt.Sprintf("%+.3f", r.added(t, "p50")), fmt.Sprintf("%+.3f", r.added(t, "p99"))
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s |\n", t, rate.median(),
			r.quantile(t, "p50").cell("%.3f"), r.quantile(t, "p99").cell("%.3f"), addP50, addP99)
	}
	noise := r.noise()
	if noise != "" {
		fmt.Fprintf(w, "\nNoisy: %s; the host was busy, so the added latencies are not to be trusted from this run.\n", noise)
		noise = " — noisy: " + noise
	}
	if !s.e.has(nginxWSS) {
		s.goal("smqgw's added p99 ≤ nginx's", false, "not measured: nginx not installed")
		return
	}
	ng := r.added(nginxWSS, "p99")
	wss, raw := r.added(lanWSS, "p99"), r.added(lanRaw, "p99")
	s.goal("smqgw's added p99 ≤ nginx's, wss (LAN path)", wss <= ng,
		"%+.3f ms (nginx %+.3f ms; embedded broker %+.3f ms)%s", wss, ng, r.added(embedded, "p99"), noise)
	if !s.e.has(nginxRaw) {
		s.goal("smqgw's added p99 ≤ nginx's, raw TLS (LAN path)", raw <= ng,
			"%+.3f ms over direct raw (nginx, wss over direct ws: %+.3f ms; nginx's stream module is not installed)%s", raw, ng, noise)
		return
	}
	ngRaw := r.added(nginxRaw, "p99")
	s.goal("smqgw's added p99 ≤ nginx's, raw TLS (LAN path)", raw <= ngRaw,
		"%+.3f ms over direct raw (nginx raw TLS: %+.3f ms)%s", raw, ngRaw, noise)
}

// noise says which baselines' p99 varied more than twofold between the
// repetitions, or more than 10 ms: then the host, not the path, set it.
func (r *latencyResults) noise() string {
	var out []string
	for _, t := range []string{direct, directRaw} {
		v := r.quantile(t, "p99")
		if len(v) > 1 && (v.max() > 2*v.min() || v.max() > 10) {
			out = append(out, fmt.Sprintf("the %s path's p99 was %.3f–%.3f ms", t, v.min(), v.max()))
		}
	}
	return strings.Join(out, ", ")
}
