package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// memRun is one idle-sessions run: the proxy's resident memory before,
// at its peak while the sessions connected, and held (a while after the
// last one connected, all still open); for smqgw, its Go runtime's view
// before and held.
type memRun struct {
	Sessions    int           `json:"sessions"`
	ConnectTime time.Duration `json:"connect_ns"`
	Before      int64         `json:"rss_before_bytes"`
	Peak        int64         `json:"rss_peak_bytes"`
	Held        int64         `json:"rss_held_bytes"`
	GoBefore    *goMemory     `json:"go_before,omitempty"`
	GoHeld      *goMemory     `json:"go_held,omitempty"`
}

// memoryResults are the idle runs: by session count, by target.
type memoryResults struct {
	sizes   []int
	targets []string
	runs    map[int]map[string]*memRun
}

// runMemory opens n idle sessions through each path, each time on fresh
// processes: what earlier runs left in their heaps does not count.
func runMemory(s *suite) error {
	r := &memoryResults{sizes: []int{1000, 5000, 9000}, runs: map[int]map[string]*memRun{}}
	if s.quick {
		r.sizes = []int{200, 1000}
	}
	targets := s.e.pick(direct, lanWSS, lanRaw, embedded, nginxWSS)
	for _, t := range targets {
		r.targets = append(r.targets, t.name)
	}
	for _, n := range r.sizes {
		r.runs[n] = map[string]*memRun{}
		for _, t := range targets {
			if err := s.e.restart(); err != nil {
				return err
			}
			t = s.e.targets[t.name] // new ports
			m, err := s.idleMemory(t, n)
			s.check(fmt.Sprintf("%d idle sessions via %s", n, t.name), &output{}, err)
			if err == nil {
				r.runs[n][t.name] = m
			}
		}
	}
	// Leave fresh processes to the sections after this one.
	if err := s.e.restart(); err != nil {
		return err
	}
	s.mem = r
	s.json["memory"] = r.runs
	return nil
}

// idleMemory holds n idle sessions through t and measures the proxy.
func (s *suite) idleMemory(t target, n int) (*memRun, error) {
	e := s.e
	heldAfter := 3 * time.Second
	if s.quick {
		heldAfter = 2 * time.Second
	}
	args := e.benchArgs(t, "-mode", "idle", "-conns", strconv.Itoa(n), "-duration", (heldAfter + time.Second).String(),
		"-connect-parallel", "32")
	fmt.Fprintf(e.log, "bench: %s: smq %s\n", t.name, strings.Join(args, " "))
	pids := e.pids[t.proc]
	m := &memRun{Sessions: n, Before: rss(pids())}
	if t.admin != "" {
		g, err := scrapeMemory(t.admin)
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		m.GoBefore = g
	}
	var stdout bytes.Buffer
	var stderr strings.Builder
	cmd := exec.Command(e.smq, args...)
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	opened := make(chan struct{}) // smq bench says its sessions are open
	done := make(chan error, 1)
	go func() {
		open := opened
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "sessions open") && open != nil {
				close(open)
				open = nil
			}
			stderr.WriteString(sc.Text() + "\n")
		}
		done <- cmd.Wait()
	}()
	var heldAt <-chan time.Time
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-opened:
			opened = nil
			heldAt = time.After(heldAfter)
		case <-heldAt:
			heldAt = nil
			m.Held = rss(pids())
			m.Peak = max(m.Peak, m.Held)
			if t.admin != "" {
				g, err := scrapeMemory(t.admin)
				if err != nil {
					return nil, fmt.Errorf("metrics: %w", err)
				}
				m.GoHeld = g
			}
		case <-tick.C:
			if m.Held == 0 { // the peak while connecting and settling
				m.Peak = max(m.Peak, rss(pids()))
			}
		case err := <-done:
			if err != nil {
				return nil, fmt.Errorf("smq bench: %v: %s", err, strings.TrimSpace(stderr.String()))
			}
			var o output
			if err := json.Unmarshal(stdout.Bytes(), &o); err != nil {
				return nil, fmt.Errorf("smq bench -json: %w", err)
			}
			m.ConnectTime = o.ConnectTime
			if o.Connections != n || len(o.Errors) > 0 {
				return nil, fmt.Errorf("%d of %d sessions opened, errors %v", o.Connections, n, o.Errors)
			}
			if m.Held == 0 {
				return nil, fmt.Errorf("the sessions closed before they were held %s", heldAfter)
			}
			return m, nil
		}
	}
}

func reportMemory(s *suite, w io.Writer) {
	r := s.mem
	kib := func(b float64, n int) float64 { return b / float64(n) / 1024 }
	fmt.Fprintln(w, "\nIdle sessions: resident memory of the proxy process(es) divided by the sessions (KiB), at the peak while they connected / held (a few seconds after the last one connected, all open); fresh processes for each cell; nginx: master and workers:")
	fmt.Fprintln(w)
	head, sep := "| sessions |", "|---|"
	for _, t := range r.targets {
		head += " " + t + " |"
		sep += "---:|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, n := range r.sizes {
		line := fmt.Sprintf("| %d |", n)
		for _, t := range r.targets {
			if m := r.runs[n][t]; m != nil {
				line += fmt.Sprintf(" %.1f / %.1f |", kib(float64(m.Peak), n), kib(float64(m.Held), n))
			} else {
				line += " failed |"
			}
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "\nWhere smqgw's memory goes (LAN path), held, per session (KiB): what grew since before the sessions, from its /metrics (go_memstats_*):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | sessions | RSS ÷ sessions | RSS grown | heap in use | stacks | heap free, kept from the OS | goroutines per session |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range []string{lanWSS, lanRaw} {
		for _, n := range r.sizes {
			m := r.runs[n][t]
			if m == nil || m.GoBefore == nil || m.GoHeld == nil {
				continue
			}
			b, h := m.GoBefore, m.GoHeld
			kept := func(g *goMemory) float64 { return g.HeapIdle - g.HeapReleased }
			fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", t, n,
				kib(float64(m.Held), n), kib(float64(m.Held-m.Before), n), kib(h.HeapInuse-b.HeapInuse, n),
				kib(h.StackInuse-b.StackInuse, n), kib(kept(h)-kept(b), n), (h.Goroutines-b.Goroutines)/float64(n))
		}
	}
	n := r.sizes[len(r.sizes)-1]
	for _, t := range []string{lanWSS, lanRaw} {
		m := r.runs[n][t]
		if m == nil {
			s.goal(fmt.Sprintf("idle memory ≤ 30 KiB per session at %d sessions (%s)", n, t), false, "failed")
			continue
		}
		held, peak := kib(float64(m.Held), n), kib(float64(m.Peak), n)
		s.goal(fmt.Sprintf("idle memory ≤ 30 KiB per session at %d sessions, held (%s)", n, t), held <= 30,
			"%.1f KiB held, %.1f KiB at the peak (RSS ÷ sessions)", held, peak)
	}
}
