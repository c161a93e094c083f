package loadstat

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v += 1 + v/100 {
		b := bucket(v)
		if b < prev {
			t.Fatalf("bucket(%d) = %d < %d: not monotonic", v, b, prev)
		}
		prev = b
		if up := upper(b); int64(v) > up || float64(up-int64(v)) > float64(v)/16+1 {
			t.Fatalf("value %d in bucket %d with upper bound %d", v, b, up)
		}
	}
	if b := bucket(1 << 63); upper(b) < 1<<62 {
		t.Fatalf("bucket of 2^63: %d", b)
	}
}

// TestQuantiles compares the histogram's quantiles with exact ones over
// random durations: within the bucket precision.
func TestQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h, a, b Histogram
	var all []time.Duration
	for i := range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		all = append(all, d)
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(all)
	for _, q := range []float64{.5, .9, .99, .999, 1} {
		exact := all[int(q*float64(len(all)-1))]
		got := h.Quantile(q)
		if got < exact*97/100 || got > exact*104/100 {
			t.Errorf("q%v = %v, exact %v", q, got, exact)
		}
		if m := a.Quantile(q); m != got {
			t.Errorf("merged q%v = %v, whole %v", q, m, got)
		}
	}
	if h.Quantile(1) != all[len(all)-1] {
		t.Errorf("max %v, want %v", h.Quantile(1), all[len(all)-1])
	}
	var empty Histogram
	if empty.Quantile(.5) != 0 || empty.Mean() != 0 {
		t.Error("an empty histogram has values")
	}
}

// TestMergeAndTotals: two processes' results, one publishing and one
// subscribing, merge into the run's figures; a JSON round trip keeps them.
func TestMergeAndTotals(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pubs := NewResult("pubsub", 64)
	pubs.Publishers, pubs.Connections = 2, 2
	pubs.ConnectStart, pubs.ConnectTime = t0, time.Second
	pubs.Start, pubs.Duration = t0.Add(2*time.Second), 2*time.Second
	pubs.Sent[1], pubs.Sent[2] = 1000, 1000
	subs := NewResult("pubsub", 64)
	subs.Subscribers, subs.Connections = 2, 2
	subs.ConnectStart, subs.ConnectTime = t0.Add(time.Second), time.Second
	subs.Start, subs.Duration = t0.Add(2*time.Second), 4*time.Second
	subs.Received[1], subs.Received[2] = 2000, 1990 // 10 of publisher 2's lost by one subscriber
	subs.Reordered, subs.ReorderedBy = 3, map[uint32]uint64{1: 3}
	subs.Latency.Record(time.Millisecond)
	subs.Error("disconnect: slow consumer")

	js, err := json.Marshal(subs)
	if err != nil {
		t.Fatal(err)
	}
	back := NewResult("", 0)
	if err := json.Unmarshal(js, back); err != nil {
		t.Fatal(err)
	}
	run := NewResult("pubsub", 64)
	run.Merge(pubs)
	run.Merge(back)
	tot := run.Totals()
	if tot.Sent != 2000 || tot.Delivered != 3990 || tot.Lost != 10 || run.Reordered != 3 {
		t.Errorf("totals %+v, reordered %d", tot, run.Reordered)
	}
	if len(tot.LostBy) != 1 || tot.LostBy[2] != 10 || run.ReorderedBy[1] != 3 {
		t.Errorf("by publisher: lost %v, reordered %v", tot.LostBy, run.ReorderedBy)
	}
	if run.Connections != 4 || run.ConnectTime != 2*time.Second || tot.ConnectRate != 2 {
		t.Errorf("connections %d in %v (%v/s)", run.Connections, run.ConnectTime, tot.ConnectRate)
	}
	if run.Duration != 4*time.Second || tot.Rate != 3990.0/4 {
		t.Errorf("duration %v, rate %v", run.Duration, tot.Rate)
	}
	var sb strings.Builder
	run.Summary(&sb)
	for _, want := range []string{"2 publishers, 2 subscribers", "lost        10   reordered 3   (by publisher: lost map[2:10], reordered map[1:3])", "1× disconnect: slow consumer"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sb.String())
		}
	}
}

// TestOpenLoop: an open-loop rr result keeps its schedule's rate through
// JSON and a merge, and says so; a closed-loop one says that.
func TestOpenLoop(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want string
	}{{500, "8 requesters (open loop at 500/s each)"}, {0, "8 requesters (closed loop)"}} {
		w := NewResult("rr", 64)
		w.Publishers, w.Rate = 8, tc.rate
		js, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		back := NewResult("", 0)
		if err := json.Unmarshal(js, back); err != nil {
			t.Fatal(err)
		}
		run := NewResult("rr", 64)
		run.Merge(back)
		var sb strings.Builder
		run.Summary(&sb)
		if run.Rate != tc.rate || !strings.Contains(sb.String(), tc.want) {
			t.Errorf("rate %v, summary lacks %q:\n%s", run.Rate, tc.want, sb.String())
		}
	}
}
