// Package loadstat holds the measurements of a load run (smq bench): a
// mergeable latency histogram and the result one process reports, merged
// across processes, with the derived figures (rates, percentiles, lost
// and reordered messages).
package loadstat

import (
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// subBuckets is the number of buckets per power of two: values are kept
// within about 3% (1/32).
const subBuckets = 32

// Histogram counts durations in log-linear buckets. The zero value is
// empty and ready; it is not safe for concurrent use.
type Histogram struct {
	// Counts maps a bucket index to its count (sparse, for JSON).
	Counts map[int]uint64 `json:"counts"`
	N      uint64         `json:"n"`
	Max    int64          `json:"max_ns"`
	Sum    float64        `json:"sum_ns"`
}

// bucket returns the index of the bucket holding v (≥ 0).
func bucket(v uint64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - 6 // v>>e is in [32, 64)
	return (e+1)*subBuckets + int(v>>e) - subBuckets
}

// upper returns the largest value of bucket i.
func upper(i int) int64 {
	if i < 2*subBuckets {
		return int64(i)
	}
	e := i/subBuckets - 1
	m := uint64(i%subBuckets + subBuckets)
	if e >= 57 { // (m+1)<<e would overflow
		return math.MaxInt64
	}
	return int64((m+1)<<e - 1)
}

// Record counts one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	if h.Counts == nil {
		h.Counts = make(map[int]uint64)
	}
	h.Counts[bucket(uint64(v))]++
	h.N++
	h.Sum += float64(v)
	h.Max = max(h.Max, v)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.N == 0 {
		return
	}
	if h.Counts == nil {
		h.Counts = make(map[int]uint64)
	}
	for i, n := range o.Counts {
		h.Counts[i] += n
	}
	h.N += o.N
	h.Sum += o.Sum
	h.Max = max(h.Max, o.Max)
}

// Quantile returns the duration below which a fraction q (0..1) of the
// values fall, by the upper bound of its bucket (never above Max); 0 when
// empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	rank := uint64(q*float64(h.N) + 0.5)
	rank = min(max(rank, 1), h.N)
	var seen uint64
	for _, i := range slices.Sorted(maps.Keys(h.Counts)) {
		seen += h.Counts[i]
		if seen >= rank {
			return time.Duration(min(upper(i), h.Max))
		}
	}
	return time.Duration(h.Max)
}

// Mean returns the average duration, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.N == 0 {
		return 0
	}
	return time.Duration(h.Sum / float64(h.N))
}

// Result is what one process of a run measured, or the merge of several.
type Result struct {
	Mode        string `json:"mode"`
	Publishers  int    `json:"publishers"`
	Subscribers int    `json:"subscribers"`
	Payload     int    `json:"payload_bytes"`
	// Rate is the messages per second each publisher was asked to send
	// (rr: the round trips each requester starts on its schedule, open
	// loop); 0 is flat out (rr: one at a time, closed loop).
	Rate float64 `json:"rate_per_client,omitempty"`

	// Connections opened and how long opening them all took.
	Connections  int           `json:"connections"`
	ConnectStart time.Time     `json:"connect_start"`
	ConnectTime  time.Duration `json:"connect_ns"`

	// The measured interval: from the go signal to the last message.
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`

	// Sent counts the messages each publisher sent (by publisher ID),
	// Received those each publisher's messages reached subscribers with
	// (summed over this process's subscribers).
	Sent     map[uint32]uint64 `json:"sent"`
	Received map[uint32]uint64 `json:"received"`
	// Reordered counts messages that arrived after a later one of the same
	// publisher (or again); ReorderedBy, by publisher ID.
	Reordered   uint64            `json:"reordered"`
	ReorderedBy map[uint32]uint64 `json:"reordered_by_publisher,omitempty"`
	// Latency is from publish to delivery (pub/sub), or the round trip
	// (rr).
	Latency Histogram `json:"latency"`
	// Errors counts failures by kind ("connect: ...", "disconnect: slow
	// consumer").
	Errors map[string]int `json:"errors"`
}

// NewResult returns an empty result of a mode.
func NewResult(mode string, payload int) *Result {
	return &Result{Mode: mode, Payload: payload, Sent: map[uint32]uint64{}, Received: map[uint32]uint64{},
		Errors: map[string]int{}}
}

// Error counts one failure of a kind.
func (r *Result) Error(kind string) { r.Errors[kind]++ }

// Merge adds another process's result to r.
func (r *Result) Merge(o *Result) {
	r.Rate = max(r.Rate, o.Rate)
	r.Publishers += o.Publishers
	r.Subscribers += o.Subscribers
	r.Connections += o.Connections
	if r.ConnectStart.IsZero() || (!o.ConnectStart.IsZero() && o.ConnectStart.Before(r.ConnectStart)) {
		end := r.ConnectStart.Add(r.ConnectTime)
		r.ConnectStart = o.ConnectStart
		r.ConnectTime = end.Sub(r.ConnectStart)
	}
	if end := o.ConnectStart.Add(o.ConnectTime); end.Sub(r.ConnectStart) > r.ConnectTime {
		r.ConnectTime = end.Sub(r.ConnectStart)
	}
	if r.Start.IsZero() || (!o.Start.IsZero() && o.Start.Before(r.Start)) {
		end := r.Start.Add(r.Duration)
		r.Start = o.Start
		r.Duration = max(end.Sub(r.Start), 0)
	}
	if end := o.Start.Add(o.Duration); end.Sub(r.Start) > r.Duration {
		r.Duration = end.Sub(r.Start)
	}
	for id, n := range o.Sent {
		r.Sent[id] += n
	}
	for id, n := range o.Received {
		r.Received[id] += n
	}
	r.Reordered += o.Reordered
	for id, n := range o.ReorderedBy {
		if r.ReorderedBy == nil {
			r.ReorderedBy = map[uint32]uint64{}
		}
		r.ReorderedBy[id] += n
	}
	r.Latency.Merge(&o.Latency)
	for k, n := range o.Errors {
		r.Errors[k] += n
	}
}

// Totals are the figures derived from a merged result.
type Totals struct {
	Sent, Delivered, Lost uint64
	// LostBy counts the lost deliveries by publisher ID, for those that
	// lost any.
	LostBy         map[uint32]uint64 `json:",omitempty"`
	SentRate, Rate float64           // messages per second
	MBps           float64           // delivered payload, 10^6 bytes per second
	ConnectRate    float64           // connections per second
}

// Totals derives the run's figures. Lost counts the deliveries that did
// not happen: each subscriber should get every message of every publisher
// (pubsub); each request its answer (rr).
func (r *Result) Totals() Totals {
	var t Totals
	for _, n := range r.Sent {
		t.Sent += n
	}
	for _, n := range r.Received {
		t.Delivered += n
	}
	for id, sent := range r.Sent {
		want := sent
		if r.Mode == "pubsub" {
			want = sent * uint64(r.Subscribers)
		}
		if got := r.Received[id]; want > got {
			if t.LostBy == nil {
				t.LostBy = map[uint32]uint64{}
			}
			t.LostBy[id] = want - got
			t.Lost += want - got
		}
	}
	if s := r.Duration.Seconds(); s > 0 {
		t.SentRate = float64(t.Sent) / s
		t.Rate = float64(t.Delivered) / s
		t.MBps = t.Rate * float64(r.Payload) / 1e6
	}
	if s := r.ConnectTime.Seconds(); s > 0 {
		t.ConnectRate = float64(r.Connections) / s
	}
	return t
}

// Summary writes the result for a person.
func (r *Result) Summary(w io.Writer) {
	t := r.Totals()
	switch r.Mode {
	case "idle":
		fmt.Fprintf(w, "smq bench: idle, %d sessions held %.1fs\n", r.Connections, r.Duration.Seconds())
	case "rr":
		loop := "closed loop"
		if r.Rate > 0 {
			loop = fmt.Sprintf("open loop at %g/s each", r.Rate)
		}
		fmt.Fprintf(w, "smq bench: rr, %d requesters (%s), 1 responder, %d-byte payload, %.1fs\n",
			r.Publishers, loop, r.Payload, r.Duration.Seconds())
	default:
		fmt.Fprintf(w, "smq bench: %s, %d publishers, %d subscribers, %d-byte payload, %.1fs\n",
			r.Mode, r.Publishers, r.Subscribers, r.Payload, r.Duration.Seconds())
	}
	if r.Mode != "idle" {
		fmt.Fprintf(w, "  sent        %d msgs (%.0f/s)\n", t.Sent, t.SentRate)
		what := "delivered"
		if r.Mode == "rr" {
			what = "answered"
		}
		fmt.Fprintf(w, "  %-10s  %d msgs (%.0f/s, %.2f MB/s)\n", what, t.Delivered, t.Rate, t.MBps)
		h := &r.Latency
		fmt.Fprintf(w, "  latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
			ms(h.Quantile(.5)), ms(h.Quantile(.9)), ms(h.Quantile(.99)), ms(h.Quantile(.999)), ms(time.Duration(h.Max)))
		fmt.Fprintf(w, "  lost        %d   reordered %d", t.Lost, r.Reordered)
		if len(t.LostBy)+len(r.ReorderedBy) > 0 {
			fmt.Fprintf(w, "   (by publisher: lost %v, reordered %v)", t.LostBy, r.ReorderedBy)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  connections %d in %.2fs (%.0f/s)\n", r.Connections, r.ConnectTime.Seconds(), t.ConnectRate)
	if len(r.Errors) == 0 {
		fmt.Fprintln(w, "  errors      none")
		return
	}
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		lines = append(lines, fmt.Sprintf("%d× %s", r.Errors[k], k))
	}
	fmt.Fprintf(w, "  errors      %s\n", strings.Join(lines, "; "))
}

// ms formats a duration in milliseconds with three decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }
