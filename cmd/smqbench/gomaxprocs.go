package main

import (
	"fmt"
	"io"
)

// reportGOMAXPROCS sets smqgw → LAN broker with GOMAXPROCS=1 beside the
// default (one per CPU): throughput, CPU per message and open-loop
// latency, from the runs of the other sections.
func reportGOMAXPROCS(s *suite, w io.Writer) {
	if s.thr == nil && s.lat == nil {
		return
	}
	fmt.Fprintln(w, "\nGOMAXPROCS: smqgw → LAN broker with GOMAXPROCS=1 / with the default (one per CPU), per repetition, median (min–max):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| workload | throughput | CPU per message | p50 | p99 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	if r := s.thr; r != nil {
		for _, wl := range r.work {
			a, b := r.runs[wl.name][lanOne], r.runs[wl.name][lanWSS]
			fmt.Fprintf(w, "| %s | %s | %s | — | — |\n", wl.name,
				ratio(a, b, rateOf).cell("%.2f"), ratio(a, b, cpuOf).cell("%.2f"))
		}
	}
	if r := s.lat; r != nil {
		a, b := r.runs[lanOne], r.runs[lanWSS]
		p := func(q string) func(*output) float64 {
			return func(o *output) float64 { return float64(o.Percentiles[q]) }
		}
		fmt.Fprintf(w, "| open-loop latency (%d × %d/s) | — | %s | %s | %s |\n", latRequesters, latRate,
			ratio(a, b, cpuOf).cell("%.2f"), ratio(a, b, p("p50")).cell("%.2f"), ratio(a, b, p("p99")).cell("%.2f"))
	}
}
