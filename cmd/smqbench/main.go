// Command smqbench measures smqgw side by side with the direct path and
// nginx, on one machine, in one run:
//
//	go run ./cmd/smqbench                        the full run (about 15 minutes on 2 busy CPUs)
//	go run ./cmd/smqbench -quick                 every part, short (about 3 minutes)
//	go run ./cmd/smqbench -only latency,memory   some sections (throughput,
//	                                             latency, memory, storm)
//
// It builds smqgw and smq, makes a test PKI, and starts: a broker process
// (smqgw with only a plain listener and its embedded broker: the LAN
// broker), smqgw terminating TLS in front of it (raw SMQ upstream over
// loopback; wss:// and raw SMQ over TLS on one listener), the same with
// GOMAXPROCS=1, smqgw terminating wss:// with its in-process broker, and
// nginx terminating wss:// and proxying to the broker's WebSocket endpoint.
// Each section runs its workloads through them with smq bench, in
// repetitions that each go through every path (interleaved), and prints
// its tables; the targets come last, each met or not with its figure.
//
// nginx comes from Debian: apt-get install nginx. Without it the nginx
// column is left out.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// section is one part of the run: it measures (run), keeping its numbers
// in the suite, then prints its tables and adds its goals (report). A new
// section is one more entry in sections.
type section struct {
	name   string
	run    func(s *suite) error
	report func(s *suite, w io.Writer)
}

var sections = []section{
	{"throughput", runThroughput, reportThroughput},
	{"latency", runLatency, reportLatency},
	{"memory", runMemory, reportMemory},
	{"storm", runStorm, reportStorm},
}

// suite is one run of the bench: its settings, what it measured, and the
// goals and failures its sections found.
type suite struct {
	e     *env
	quick bool
	reps  int

	thr   *throughputResults
	lat   *latencyResults
	mem   *memoryResults
	storm *stormReport
	json  map[string]any // section name → its numbers, all repetitions

	goals    []goal
	failures []string // runs that lost, reordered or failed something
}

// goal is one target, met or not, with the figure.
type goal struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

func (s *suite) goal(target string, met bool, format string, args ...any) {
	s.goals = append(s.goals, goal{target, fmt.Sprintf(format, args...), met})
}

// check records a run that lost, reordered or failed something (o is nil
// when the run itself failed with err).
func (s *suite) check(what string, o *output, err error) {
	switch {
	case err != nil:
		s.failures = append(s.failures, fmt.Sprintf("%s: %v", what, err))
	case !o.clean():
		s.failures = append(s.failures, fmt.Sprintf("%s: %d lost, %d reordered, errors %v",
			what, o.Totals.Lost, o.Reordered, o.Errors))
	}
	if err != nil || !o.clean() {
		fmt.Fprintln(s.e.log, "bench: FAILED:", s.failures[len(s.failures)-1])
	}
}

func main() {
	quick := flag.Bool("quick", false, "every section, short: 1-2 s runs, 2 repetitions, fewer idle sessions")
	jsonOut := flag.String("json", "", "also write every measurement (all repetitions) to this `file` as JSON")
	only := flag.String("only", "", "run only these `sections`, comma-separated: "+names())
	reps := flag.Int("reps", 0, "repetitions of each measurement (default 3; -quick: 2)")
	flag.Parse()
	if err := run(*quick, *reps, *only, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "smqbench: error:", err)
		os.Exit(1)
	}
}

func names() string {
	var n []string
	for _, s := range sections {
		n = append(n, s.name)
	}
	return strings.Join(n, ",")
}

func run(quick bool, reps int, only, jsonOut string) error {
	chosen := sections
	if only != "" {
		chosen = nil
		for _, name := range strings.Split(only, ",") {
			i := slices.IndexFunc(sections, func(s section) bool { return s.name == strings.TrimSpace(name) })
			if i < 0 {
				return fmt.Errorf("-only: unknown section %q (have %s)", name, names())
			}
			chosen = append(chosen, sections[i])
		}
	}
	if reps <= 0 {
		reps = 3
		if quick {
			reps = 2
		}
	}
	dir, err := os.MkdirTemp("", "smqgw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s := &suite{e: &env{dir: dir, log: os.Stderr}, quick: quick, reps: reps, json: map[string]any{}}
	defer s.e.stopAll()
	began := time.Now()
	if err := s.e.build(); err != nil {
		return err
	}
	if err := s.e.start(); err != nil {
		return err
	}
	for _, sec := range chosen {
		t0 := time.Now()
		if err := sec.run(s); err != nil {
			return fmt.Errorf("%s: %w", sec.name, err)
		}
		fmt.Fprintf(s.e.log, "bench: %s took %s\n", sec.name, time.Since(t0).Round(time.Second))
	}
	w := os.Stdout
	for _, sec := range chosen {
		sec.report(s, w)
	}
	reportGOMAXPROCS(s, w)
	s.goal("no message lost or reordered, no error, in any run", len(s.failures) == 0, "%s", failuresText(s.failures))
	reportGoals(s, w)
	took := time.Since(began).Round(time.Second)
	fmt.Fprintf(w, "\n(%d repetitions; the run took %s)\n", s.reps, took)
	if jsonOut != "" {
		s.json["targets"] = s.goals
		s.json["failures"] = s.failures
		s.json["settings"] = map[string]any{"quick": quick, "repetitions": reps, "sections": only, "took_ns": took}
		js, err := json.MarshalIndent(s.json, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(jsonOut, js, 0o644)
	}
	return nil
}

func failuresText(f []string) string {
	if len(f) == 0 {
		return "0 lost, 0 reordered, no errors in every run"
	}
	return fmt.Sprintf("%d runs failed: %s", len(f), strings.Join(f, "; "))
}

// reportGoals prints the targets, each met or not, with its figure.
func reportGoals(s *suite, w io.Writer) {
	fmt.Fprintln(w, "\nAgainst the targets (issue 17), from this run:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, g := range s.goals {
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.Target, g.Measured, met(g.Met))
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// rotate returns ts started at its i-th element, so that no path always
// runs first (or right after the same other) in a repetition.
func rotate[T any](ts []T, i int) []T {
	if len(ts) == 0 {
		return ts
	}
	i %= len(ts)
	return append(slices.Clone(ts[i:]), ts[:i]...)
}

// spread is a value measured in each repetition.
type spread []float64

func (v spread) sorted() []float64 {
	return slices.Sorted(slices.Values(v))
}

// median returns the middle value (the mean of the middle two), 0 when
// there is none.
func (v spread) median() float64 {
	s := v.sorted()
	switch n := len(s); {
	case n == 0:
		return 0
	case n%2 == 1:
		return s[n/2]
	default:
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func (v spread) min() float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Min(v)
}

func (v spread) max() float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Max(v)
}

// cell formats the median and the range: "512799 (495000–530000)".
func (v spread) cell(format string) string {
	if len(v) == 0 {
		return "—"
	}
	if len(v) == 1 {
		return fmt.Sprintf(format, v[0])
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", v.median(), v.min(), v.max())
}
