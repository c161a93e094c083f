package main

import (
	"fmt"
	"io"
	"time"
)

// workload is one smq bench run, repeated on each target.
type workload struct {
	name string
	args []string
}

// throughputResults are the flat-out runs: by workload, by target, one
// result per repetition (nil where the run failed).
type throughputResults struct {
	work    []workload
	targets []string
	runs    map[string]map[string][]*output
}

func throughputWork() []workload {
	var work []workload
	for _, size := range []string{"64", "4096"} {
		work = append(work,
			workload{"fan-in " + size + " B (20 → 1)", []string{"-pubs", "20", "-subs", "1", "-size", size}},
			workload{"fan-out " + size + " B (1 → 20)", []string{"-pubs", "1", "-subs", "20", "-size", size}},
			workload{"request/response " + size + " B (8 clients)", []string{"-mode", "rr", "-pubs", "8", "-size", size}})
	}
	return work
}

// runThroughput runs every workload flat out through every path, in
// repetitions: each repetition runs every workload on every path before
// the next begins, so that a slow spell of the host spreads over all.
func runThroughput(s *suite) error {
	d := 4 * time.Second
	if s.quick {
		d = time.Second
	}
	r := &throughputResults{work: throughputWork(), runs: map[string]map[string][]*output{}}
	targets := s.e.pick(direct, lanWSS, lanOne, embedded, nginxWSS)
	for _, t := range targets {
		r.targets = append(r.targets, t.name)
	}
	for _, w := range r.work {
		r.runs[w.name] = map[string][]*output{}
		for _, t := range targets {
			r.runs[w.name][t.name] = make([]*output, s.reps)
		}
	}
	for rep := range s.reps {
		for _, w := range r.work {
			for _, t := range rotate(targets, rep) {
				o, err := s.e.bench(t, d, w.args...)
				s.check(fmt.Sprintf("%s via %s, repetition %d", w.name, t.name, rep+1), o, err)
				r.runs[w.name][t.name][rep] = o
			}
		}
	}
	s.thr = r
	s.json["throughput"] = r.runs
	return nil
}

// rate returns the messages (round trips) per second of each repetition.
func (r *throughputResults) rate(w, t string) spread {
	var v spread
	for _, o := range r.runs[w][t] {
		if o != nil {
			v = append(v, o.Totals.Rate)
		}
	}
	return v
}

// cpu returns the proxy's CPU time per message delivered (µs) of each
// repetition.
func (r *throughputResults) cpu(w, t string) spread {
	var v spread
	for _, o := range r.runs[w][t] {
		if o != nil && o.Totals.Delivered > 0 {
			v = append(v, float64(o.ProxyCPU.Microseconds())/float64(o.Totals.Delivered))
		}
	}
	return v
}

// ratio returns a/b per repetition: the runs of one repetition ran close
// together, so their ratio is less noisy than the ratio of medians.
func ratio(a, b []*output, f func(*output) float64) spread {
	var v spread
	for i := range min(len(a), len(b)) {
		if a[i] != nil && b[i] != nil && f(b[i]) > 0 {
			v = append(v, f(a[i])/f(b[i]))
		}
	}
	return v
}

func rateOf(o *output) float64 { return o.Totals.Rate }

func cpuOf(o *output) float64 {
	if o.Totals.Delivered == 0 {
		return 0
	}
	return float64(o.ProxyCPU.Nanoseconds()) / float64(o.Totals.Delivered)
}

func reportThroughput(s *suite, w io.Writer) {
	r := s.thr
	hasNginx := s.e.has(nginxWSS)
	head, sep := "| workload |", "|---|"
	for _, t := range r.targets {
		head += " " + t + " |"
		sep += "---:|"
	}
	head += " smqgw / direct | smqgw / nginx |"
	sep += "---:|---:|"
	ratioCell := func(w, a, b string, f func(*output) float64) string {
		if b == nginxWSS && !hasNginx {
			return "—"
		}
		return ratio(r.runs[w][a], r.runs[w][b], f).cell("%.2f")
	}
	fmt.Fprintf(w, "\nThroughput, flat out (messages delivered per second; request/response: round trips per second), median of %d repetitions (min–max); the ratios per repetition, median (min–max):\n\n", s.reps)
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, wl := range r.work {
		line := "| " + wl.name + " |"
		for _, t := range r.targets {
			line += " " + r.rate(wl.name, t).cell("%.0f") + " |"
		}
		line += fmt.Sprintf(" %s | %s |", ratioCell(wl.name, lanWSS, direct, rateOf), ratioCell(wl.name, lanWSS, nginxWSS, rateOf))
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "\nCPU time of the proxy process(es) per message delivered (µs; direct: the broker itself), median of the same runs:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, wl := range r.work {
		line := "| " + wl.name + " |"
		for _, t := range r.targets {
			line += fmt.Sprintf(" %.2f |", r.cpu(wl.name, t).median())
		}
		med := func(b string) string {
			if b == nginxWSS && !hasNginx {
				return "—"
			}
			return fmt.Sprintf("%.2f", ratio(r.runs[wl.name][lanWSS], r.runs[wl.name][b], cpuOf).median())
		}
		line += fmt.Sprintf(" %s | %s |", med(direct), med(nginxWSS))
		fmt.Fprintln(w, line)
	}
	if !hasNginx {
		s.goal("fan-in ≥ 1.3× nginx (LAN path)", false, "not measured: nginx not installed")
		s.goal("fan-out ≥ 1.0× nginx", false, "not measured: nginx not installed")
		return
	}
	vs := func(wl string) spread { return ratio(r.runs[wl][lanWSS], r.runs[wl][nginxWSS], rateOf) }
	in64, in4k := vs(r.work[0].name), vs(r.work[3].name)
	s.goal("fan-in 64 B ≥ 1.3× nginx (LAN path, wss)", in64.median() >= 1.3,
		"%s× (median of the repetitions' ratios, min–max); 4096 B: %s×", in64.cell("%.2f"), in4k.cell("%.2f"))
	out64, out4k := vs(r.work[1].name), vs(r.work[4].name)
	s.goal("fan-out ≥ 1.0× nginx (LAN path, wss; 64 B and 4096 B)", out64.median() >= 1 && out4k.median() >= 1,
		"64 B: %s× (%s); 4096 B: %s× (%s)", out64.cell("%.2f"), verdict(out64), out4k.cell("%.2f"), verdict(out4k))
}

// verdict says whether ratios below 1 are noise: the repetitions'
// ratios all above 1, all below, or on both sides.
func verdict(v spread) string {
	switch {
	case len(v) == 0:
		return "not measured"
	case v.min() >= 1:
		return fmt.Sprintf("at least even in all %d repetitions", len(v))
	case v.max() < 1:
		return fmt.Sprintf("below in all %d repetitions: real", len(v))
	default:
		return fmt.Sprintf("on both sides of 1 in %d repetitions: noise", len(v))
	}
}
