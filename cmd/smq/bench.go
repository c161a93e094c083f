package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/loadstat"
)

// headerLen is the bench header at the start of every payload: publisher
// ID (4 bytes), sequence number (8), send time in Unix nanoseconds (8).
const headerLen = 20

// benchCmd is smq bench: a load run of N publishers and M subscribers
// (pubsub), N requesters and a responder (rr), or N idle sessions (idle),
// split over several processes when asked.
type benchCmd struct {
	*common
	pubURL      string
	mode        string
	pubs        int
	subs        int
	conns       int
	size        int
	rate        float64
	duration    time.Duration
	drain       time.Duration
	procs       int
	window      int
	windowBytes int
	parallel    int
	jsonOut     bool
	topic       string
	fs          *flag.FlagSet // the parsed command line, passed on to workers
	stderr      io.Writer     // notes for whoever watches the run
	worker      bool
	pubBase     int
}

func (b *benchCmd) register(fs *flag.FlagSet) {
	fs.StringVar(&b.pubURL, "pub-url", "", "publishers' (requesters') broker `URL` (default: -url), for a different transport per side")
	fs.StringVar(&b.mode, "mode", "pubsub", "`workload`: pubsub (publishers → subscribers of one topic), rr (request/response round trips to one responder), idle (sessions that do nothing)")
	fs.IntVar(&b.pubs, "pubs", 1, "`N` publishers (rr: requesters)")
	fs.IntVar(&b.subs, "subs", 1, "`M` subscribers (rr: always 1 responder)")
	fs.IntVar(&b.conns, "conns", 1000, "`N` sessions to open (idle)")
	fs.IntVar(&b.size, "size", 64, "payload `bytes`, at least 20 (the bench header)")
	fs.Float64Var(&b.rate, "rate", 0, "messages per second per publisher (`R`; 0: flat out, as fast as the subscribers keep up); rr: round trips per second per requester, sent on a schedule whatever the answers do (open loop; 0: one at a time, closed loop)")
	fs.DurationVar(&b.duration, "duration", 5*time.Second, "how long publishers publish (idle: how long sessions stay open)")
	fs.DurationVar(&b.drain, "drain", 3*time.Second, "at most this long after publishing ends for the last messages to arrive")
	fs.IntVar(&b.procs, "procs", 1, "spread the clients over `K` processes (one process holds at most ~20k sockets)")
	fs.IntVar(&b.window, "window", 4096, "flat out in one process: at most `W` messages in flight (sent, not yet delivered to every subscriber), shared by the publishers, so that no broker queue overflows")
	fs.IntVar(&b.windowBytes, "window-bytes", 2<<20, "flat out in one process: at most this many payload `bytes` in flight")
	fs.IntVar(&b.parallel, "connect-parallel", 64, "open at most `P` connections at once")
	fs.BoolVar(&b.jsonOut, "json", false, "print the result as JSON instead of a summary")
	fs.StringVar(&b.topic, "topic", "", "`topic` to use (default: a fresh random one)")
	fs.BoolVar(&b.worker, "worker", false, "internal: run as a worker process of a -procs run")
	fs.IntVar(&b.pubBase, "worker-pub-base", 0, "internal: first publisher ID of this worker")
}

func (b *benchCmd) check() error {
	switch {
	case b.mode != "pubsub" && b.mode != "rr" && b.mode != "idle":
		return usagef("-mode must be pubsub, rr or idle, not %q", b.mode)
	case b.pubs < 0 || b.subs < 0 || b.conns < 0:
		return usagef("-pubs, -subs and -conns must not be negative")
	case b.mode == "pubsub" && (b.pubs == 0 || b.subs == 0) && !b.worker:
		return usagef("pubsub needs at least one publisher and one subscriber")
	case b.mode == "rr" && b.pubs == 0 && !b.worker:
		return usagef("rr needs at least one requester (-pubs)")
	case b.size < headerLen || b.size > client.MaxPayload:
		return usagef("-size must be between %d and %d", headerLen, client.MaxPayload)
	case b.rate < 0 || b.duration <= 0 || b.drain <= 0:
		return usagef("-rate must not be negative; -duration and -drain must be positive")
	case b.procs < 1 || b.parallel < 1 || b.window < 1 || b.windowBytes < 1:
		return usagef("-procs, -connect-parallel, -window and -window-bytes must be at least 1")
	}
	if b.mode == "rr" {
		b.subs = 1
	}
	if b.pubURL == "" {
		b.pubURL = b.url
	}
	if b.topic == "" {
		b.topic = fmt.Sprintf("smq-bench/%08x", rand.Uint32())
	}
	return nil
}

func (b *benchCmd) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := b.check(); err != nil {
		return err
	}
	b.stderr = stderr
	opts, err := b.options()
	if err != nil {
		return err
	}
	var res *loadstat.Result
	switch {
	case b.worker:
		res, err = b.local(ctx, opts, stdin, stdout)
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(res)
	case b.procs > 1:
		res, err = b.spread(ctx, stderr)
	default:
		res, err = b.local(ctx, opts, nil, nil)
	}
	if err != nil {
		return err
	}
	if b.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(benchJSON{Result: res, Totals: res.Totals(), Percentiles: percentiles(&res.Latency)})
	}
	res.Summary(stdout)
	return nil
}

// benchJSON is the -json output: the merged result with its derived
// figures.
type benchJSON struct {
	*loadstat.Result
	Totals      loadstat.Totals  `json:"totals"`
	Percentiles map[string]int64 `json:"latency_percentiles_ns"`
}

func percentiles(h *loadstat.Histogram) map[string]int64 {
	return map[string]int64{
		"p50": int64(h.Quantile(.5)), "p90": int64(h.Quantile(.9)), "p99": int64(h.Quantile(.99)),
		"p99.9": int64(h.Quantile(.999)), "max": h.Max,
	}
}

// share returns worker i's part of n split over k.
func share(n, k, i int) int {
	s := n / k
	if i < n%k {
		s++
	}
	return s
}

// spread runs the clients in -procs worker processes (this executable,
// "smq bench -worker"), starts them together once all are connected, and
// merges their results.
func (b *benchCmd) spread(ctx context.Context, stderr io.Writer) (*loadstat.Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	type worker struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var workers []*worker
	defer func() {
		for _, w := range workers {
			_ = w.cmd.Process.Kill()
			_ = w.cmd.Wait()
		}
	}()
	pubBase := 0
	for i := range b.procs {
		pubs, subs, conns := share(b.pubs, b.procs, i), share(b.subs, b.procs, i), share(b.conns, b.procs, i)
		if b.mode == "rr" {
			subs = 0
			if i == 0 {
				subs = 1 // the responder
			}
		}
		args := []string{"bench"}
		b.fs.Visit(func(f *flag.Flag) { args = append(args, "-"+f.Name+"="+f.Value.String()) })
		args = append(args, "-worker", "-procs=1", "-topic="+b.topic,
			"-pubs="+strconv.Itoa(pubs), "-subs="+strconv.Itoa(subs), "-conns="+strconv.Itoa(conns),
			"-worker-pub-base="+strconv.Itoa(pubBase))
		pubBase += pubs
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stderr = stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting worker %d: %w", i, err)
		}
		workers = append(workers, &worker{cmd, in, bufio.NewReader(out)})
	}
	for i, w := range workers {
		line, err := w.out.ReadString('\n')
		if err != nil || line != "ready\n" {
			return nil, fmt.Errorf("worker %d did not get ready: %q %v", i, line, err)
		}
	}
	for _, w := range workers {
		if _, err := io.WriteString(w.stdin, "go\n"); err != nil {
			return nil, err
		}
	}
	total := loadstat.NewResult(b.mode, b.size)
	for i, w := range workers {
		r := loadstat.NewResult(b.mode, b.size)
		if err := json.NewDecoder(w.out).Decode(r); err != nil {
			return nil, fmt.Errorf("worker %d result: %w", i, err)
		}
		total.Merge(r)
	}
	return total, nil
}

// local runs this process's clients. A worker (ready != nil) says "ready"
// once connected and waits for "go" on ctl.
func (b *benchCmd) local(ctx context.Context, opts client.Options, ctl io.Reader, ready io.Writer) (*loadstat.Result, error) {
	res := loadstat.NewResult(b.mode, b.size)
	res.Rate = b.rate
	res.ConnectStart = time.Now()
	r := &benchRun{b: b, opts: opts, res: res}
	r.connect(ctx)
	res.ConnectTime = time.Since(res.ConnectStart)
	res.Connections = int(r.connected.Load())
	res.Publishers, res.Subscribers = len(r.pubs), len(r.subs)
	if b.mode == "idle" {
		res.Publishers, res.Subscribers = 0, 0
		// For whoever watches the sessions' memory: from here on they are
		// all open (or failed) and held.
		fmt.Fprintf(b.stderr, "smq bench: %d sessions open, held for %s\n", res.Connections, b.duration)
	}
	defer r.closeAll()
	if ready != nil {
		if _, err := io.WriteString(ready, "ready\n"); err != nil {
			return nil, err
		}
		line, err := bufio.NewReader(ctl).ReadString('\n')
		if err != nil || line != "go\n" {
			return nil, fmt.Errorf("worker: no go signal: %q %v", line, err)
		}
	}
	r.measure(ctx)
	return res, nil
}

// benchRun is one process's part of a run.
type benchRun struct {
	b    *benchCmd
	opts client.Options
	res  *loadstat.Result

	mu        sync.Mutex // guards res.Errors
	connected atomic.Int64
	pubs      []*client.Client
	subs      []*subscriber
	idle      []*client.Client
	// recv[s][p] counts publisher p's messages subscriber s got, for the
	// flat-out window (one process only).
	recv [][]atomic.Uint64
}

// subscriber is one subscribing (or responding) client and what it saw.
type subscriber struct {
	c         *client.Client
	mu        sync.Mutex
	next      map[uint32]uint64 // next sequence expected per publisher
	got       map[uint32]uint64
	reordered map[uint32]uint64
	lat       loadstat.Histogram
	last      atomic.Int64 // Unix nanoseconds of the last message
}

func (r *benchRun) fail(kind string) {
	r.mu.Lock()
	r.res.Error(kind)
	r.mu.Unlock()
}

// dial opens one client, counting failures by kind.
func (r *benchRun) dial(ctx context.Context, url string) *client.Client {
	dctx, cancel := context.WithTimeout(ctx, r.b.timeout)
	defer cancel()
	opts := r.opts
	opts.UID = fmt.Sprintf("bench-%08x-%08x", rand.Uint32(), rand.Uint32())
	c, err := client.Dial(dctx, url, opts)
	if err != nil {
		r.fail("connect: " + errKind(err))
		return nil
	}
	r.connected.Add(1)
	return c
}

// connect opens every client of this process, at most -connect-parallel at
// once: subscribers first (subscribed), then publishers (their topic
// created), or the idle sessions.
func (r *benchRun) connect(ctx context.Context) {
	b := r.b
	sem := make(chan struct{}, b.parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	each := func(n int, fn func(i int)) {
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				fn(i)
			})
		}
		wg.Wait()
	}
	if b.mode == "idle" {
		each(b.conns, func(int) {
			if c := r.dial(ctx, b.url); c != nil {
				mu.Lock()
				r.idle = append(r.idle, c)
				mu.Unlock()
			}
		})
		return
	}
	// Before any subscriber exists: their handlers count into it.
	r.recv = make([][]atomic.Uint64, b.subs)
	for i := range r.recv {
		r.recv[i] = make([]atomic.Uint64, b.pubs)
	}
	subs := make([]*subscriber, b.subs)
	each(b.subs, func(i int) {
		c := r.dial(ctx, b.url)
		if c == nil {
			return
		}
		s := &subscriber{c: c, next: map[uint32]uint64{}, got: map[uint32]uint64{}, reordered: map[uint32]uint64{}}
		topic := b.topic
		if b.mode == "rr" {
			topic += "/req"
		}
		sctx, cancel := context.WithTimeout(ctx, b.timeout)
		defer cancel()
		if _, err := c.Subscribe(sctx, topic, r.handler(i, s)); err != nil {
			r.fail("subscribe: " + errKind(err))
			c.Close()
			return
		}
		subs[i] = s
	})
	for _, s := range subs {
		if s != nil {
			r.subs = append(r.subs, s)
		}
	}
	pubs := make([]*client.Client, b.pubs)
	each(b.pubs, func(i int) {
		c := r.dial(ctx, b.pubURL)
		if c == nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, b.timeout)
		defer cancel()
		topic := b.topic
		if b.mode == "rr" {
			topic += "/req"
		}
		if _, err := c.Create(cctx, topic); err != nil {
			r.fail("create: " + errKind(err))
			c.Close()
			return
		}
		pubs[i] = c
	})
	r.pubs = pubs // nil entries stay: publisher IDs follow their index
}

// handler records a subscriber's (pubsub) or the responder's (rr)
// messages.
func (r *benchRun) handler(index int, s *subscriber) func(*client.Message) {
	return func(m *client.Message) {
		now := time.Now().UnixNano()
		s.last.Store(now)
		if len(m.Payload) < headerLen {
			r.fail("malformed message: shorter than the bench header")
			return
		}
		if r.b.mode == "rr" { // answer the requester with its own payload
			ctx, cancel := context.WithTimeout(context.Background(), r.b.timeout)
			if err := s.c.PublishTo(ctx, m.PTID, m.Payload); err != nil {
				r.fail("respond: " + errKind(err))
			}
			cancel()
			return
		}
		id := binary.LittleEndian.Uint32(m.Payload)
		seq := binary.LittleEndian.Uint64(m.Payload[4:])
		sent := int64(binary.LittleEndian.Uint64(m.Payload[12:]))
		s.mu.Lock()
		if seq < s.next[id] {
			s.reordered[id]++
		} else {
			s.next[id] = seq + 1
		}
		s.got[id]++
		s.lat.Record(time.Duration(now - sent))
		s.mu.Unlock()
		if p := int(id) - r.b.pubBase; p >= 0 && p < len(r.recv[index]) {
			r.recv[index][p].Add(1)
		}
	}
}

// measure runs the publishers (requesters) for the duration, waits for
// the last deliveries, and fills in the result.
func (r *benchRun) measure(ctx context.Context) {
	b := r.b
	res := r.res
	res.Start = time.Now()
	end := res.Start.Add(b.duration)
	if b.mode == "idle" {
		select {
		case <-ctx.Done():
		case <-time.After(b.duration):
		}
		res.Duration = time.Since(res.Start)
		for _, c := range r.idle {
			r.checkAlive(c)
		}
		return
	}
	var wg sync.WaitGroup
	var sent sync.Map
	var rrLat sync.Mutex
	for i, c := range r.pubs {
		if c == nil {
			continue
		}
		id := uint32(b.pubBase + i)
		wg.Go(func() {
			var n uint64
			switch {
			case b.mode == "rr" && b.rate > 0:
				// Requesters spread evenly over the schedule's period.
				phase := time.Duration(float64(time.Second) / b.rate * float64(i) / float64(len(r.pubs)))
				p := r.requestPaced(ctx, c, id, res.Start.Add(phase), end)
				rrLat.Lock()
				res.Latency.Merge(&p.lat)
				res.Received[id] += p.answered
				if p.reordered > 0 {
					res.Reordered += p.reordered
					if res.ReorderedBy == nil {
						res.ReorderedBy = map[uint32]uint64{}
					}
					res.ReorderedBy[id] += p.reordered
				}
				rrLat.Unlock()
				n = p.sent
			case b.mode == "rr":
				var h loadstat.Histogram
				n = r.request(ctx, c, id, end, &h)
				rrLat.Lock()
				res.Latency.Merge(&h)
				res.Received[id] += h.N
				rrLat.Unlock()
			default:
				n = r.publish(ctx, c, i, id, end)
			}
			sent.Store(id, n)
		})
	}
	wg.Wait()
	sent.Range(func(k, v any) bool {
		res.Sent[k.(uint32)] = v.(uint64)
		return true
	})
	if b.mode == "pubsub" {
		r.awaitDeliveries(ctx)
		for _, s := range r.subs {
			s.mu.Lock()
			for id, n := range s.got {
				res.Received[id] += n
			}
			for id, n := range s.reordered {
				res.Reordered += n
				if res.ReorderedBy == nil {
					res.ReorderedBy = map[uint32]uint64{}
				}
				res.ReorderedBy[id] += n
			}
			res.Latency.Merge(&s.lat)
			if at := time.Unix(0, s.last.Load()); at.After(res.Start.Add(res.Duration)) {
				res.Duration = at.Sub(res.Start)
			}
			s.mu.Unlock()
		}
	}
	if res.Duration == 0 || b.mode == "rr" {
		res.Duration = time.Since(res.Start)
	}
	for _, c := range r.pubs {
		if c != nil {
			r.checkAlive(c)
		}
	}
	for _, s := range r.subs {
		r.checkAlive(s.c)
	}
}

// awaitDeliveries waits, after the publishers stopped, until every
// subscriber of this process has every message of this process's
// publishers (all publishers, when they are all here), or until no message
// arrived for a while, within -drain.
func (r *benchRun) awaitDeliveries(ctx context.Context) {
	limit := time.Now().Add(r.b.drain)
	var want uint64
	for _, n := range r.res.Sent {
		want += n
	}
	allHere := r.b.procs == 1 && !r.b.worker
	for time.Now().Before(limit) && ctx.Err() == nil {
		done, quietFor := true, time.Duration(1<<62)
		for _, s := range r.subs {
			s.mu.Lock()
			var got uint64
			for _, n := range s.got {
				got += n
			}
			s.mu.Unlock()
			if got < want {
				done = false
			}
			quietFor = min(quietFor, time.Since(time.Unix(0, s.last.Load())))
		}
		if (allHere && done) || (!allHere && quietFor > 500*time.Millisecond) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// publish sends payloads from publisher index i (ID id) until end: in
// batches of up to 32 as fast as the window allows (flat out), or paced
// at -rate. It returns how many it sent.
func (r *benchRun) publish(ctx context.Context, c *client.Client, i int, id uint32, end time.Time) uint64 {
	b := r.b
	const maxBatch = 32
	bufs := make([][]byte, maxBatch)
	for j := range bufs {
		bufs[j] = make([]byte, b.size)
	}
	window := b.procs == 1 && !b.worker && b.rate == 0
	perPub := max(1, min(b.window, b.windowBytes/b.size)/max(1, len(r.pubs)))
	start := time.Now()
	var seq uint64
	for ctx.Err() == nil {
		now := time.Now()
		if now.After(end) {
			break
		}
		n := maxBatch
		if b.rate > 0 {
			due := int64(now.Sub(start).Seconds()*b.rate) + 1 - int64(seq)
			if due <= 0 {
				// What fell due meanwhile leaves together, as from a
				// device with a 1 ms tick: timestamps are taken at the
				// send, so the wait is not latency.
				time.Sleep(max(time.Millisecond, time.Duration(float64(time.Second)/b.rate)))
				continue
			}
			n = int(min(due, maxBatch))
		}
		if window {
			free := int64(perPub) - int64(seq-r.slowest(i))
			if free <= 0 {
				time.Sleep(20 * time.Microsecond)
				continue
			}
			n = int(min(int64(n), free))
		}
		ts := uint64(time.Now().UnixNano())
		for j := range n {
			binary.LittleEndian.PutUint32(bufs[j], id)
			binary.LittleEndian.PutUint64(bufs[j][4:], seq+uint64(j))
			binary.LittleEndian.PutUint64(bufs[j][12:], ts)
		}
		pctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := c.PublishBatch(pctx, b.topic, bufs[:n])
		cancel()
		if err != nil {
			r.fail("publish: " + errKind(err))
			break
		}
		seq += uint64(n)
	}
	return seq
}

// slowest returns how many of publisher i's messages the slowest
// subscriber of this process has.
func (r *benchRun) slowest(i int) uint64 {
	lowest := uint64(1<<63 - 1)
	for s := range r.recv {
		lowest = min(lowest, r.recv[s][i].Load())
	}
	if len(r.recv) == 0 {
		return 0
	}
	return lowest
}

// request sends requests from requester id one at a time until end and
// records each round trip in h; it returns how many it sent.
func (r *benchRun) request(ctx context.Context, c *client.Client, id uint32, end time.Time, h *loadstat.Histogram) uint64 {
	b := r.b
	answers := make(chan []byte, 1)
	sctx, cancel := context.WithTimeout(ctx, b.timeout)
	_, err := c.Subscribe(sctx, client.Self, func(m *client.Message) {
		select {
		case answers <- m.Payload:
		default:
		}
	})
	cancel()
	if err != nil {
		r.fail("subscribe: " + errKind(err))
		return 0
	}
	buf := make([]byte, b.size)
	var seq uint64
	for ctx.Err() == nil && time.Now().Before(end) {
		binary.LittleEndian.PutUint32(buf, id)
		binary.LittleEndian.PutUint64(buf[4:], seq)
		start := time.Now()
		binary.LittleEndian.PutUint64(buf[12:], uint64(start.UnixNano()))
		pctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := c.Publish(pctx, b.topic+"/req", buf)
		cancel()
		if err != nil {
			r.fail("publish: " + errKind(err))
			break
		}
		seq++
		select {
		case a := <-answers:
			if len(a) < headerLen || binary.LittleEndian.Uint64(a[4:]) != seq-1 {
				r.fail("rr: answer does not match the request")
				continue
			}
			h.Record(time.Since(start))
		case <-time.After(b.timeout):
			r.fail("rr: no answer within -timeout")
		case <-ctx.Done():
		}
	}
	return seq
}

// paced is what one open-loop requester measured.
type paced struct {
	sent, answered, reordered uint64
	lat                       loadstat.Histogram
}

// requestPaced sends requests from requester id on a fixed schedule, the
// k-th at start + k/-rate, whether or not earlier ones were answered (open
// loop), until end, then waits up to -drain for the last answers. Each
// request carries its scheduled time and its round trip counts from it,
// so a stall of the path or of this sender shows in every request it
// delays, not only in the one that waited (no coordinated omission).
func (r *benchRun) requestPaced(ctx context.Context, c *client.Client, id uint32, start, end time.Time) *paced {
	b := r.b
	p := &paced{}
	var (
		mu      sync.Mutex // guards p and the fields below
		next    uint64     // the sequence expected next
		want    = ^uint64(0)
		stopped bool
		all     = make(chan struct{})
	)
	sctx, cancel := context.WithTimeout(ctx, b.timeout)
	_, err := c.Subscribe(sctx, client.Self, func(m *client.Message) {
		now := time.Now()
		if len(m.Payload) < headerLen || binary.LittleEndian.Uint32(m.Payload) != id {
			r.fail("rr: answer does not match the request")
			return
		}
		seq := binary.LittleEndian.Uint64(m.Payload[4:])
		at := int64(binary.LittleEndian.Uint64(m.Payload[12:]))
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return // after the drain: lost
		}
		p.lat.Record(time.Duration(now.UnixNano() - at))
		p.answered++
		if seq < next {
			p.reordered++
		} else {
			next = seq + 1
		}
		if p.answered == want {
			close(all)
		}
	})
	cancel()
	if err != nil {
		r.fail("subscribe: " + errKind(err))
		return p
	}
	interval := float64(time.Second) / b.rate
	buf := make([]byte, b.size)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var sent uint64
	for k := uint64(0); ctx.Err() == nil; k++ {
		at := start.Add(time.Duration(float64(k) * interval))
		if !at.Before(end) {
			break
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				continue
			}
		}
		binary.LittleEndian.PutUint32(buf, id)
		binary.LittleEndian.PutUint64(buf[4:], k)
		binary.LittleEndian.PutUint64(buf[12:], uint64(at.UnixNano()))
		pctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := c.Publish(pctx, b.topic+"/req", buf)
		cancel()
		if err != nil {
			r.fail("publish: " + errKind(err))
			break
		}
		sent++
	}
	mu.Lock()
	p.sent, want = sent, sent
	if p.answered == want {
		close(all)
	}
	mu.Unlock()
	select {
	case <-all:
	case <-time.After(b.drain):
	case <-ctx.Done():
	}
	mu.Lock()
	stopped = true
	mu.Unlock()
	return p
}

// checkAlive counts a client whose session ended before the run did.
func (r *benchRun) checkAlive(c *client.Client) {
	select {
	case <-c.Done():
		r.fail("session lost: " + errKind(c.Err()))
	default:
	}
}

func (r *benchRun) closeAll() {
	var wg sync.WaitGroup
	closeIt := func(c *client.Client) {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	for _, c := range r.pubs {
		closeIt(c)
	}
	for _, s := range r.subs {
		closeIt(s.c)
	}
	for _, c := range r.idle {
		closeIt(c)
	}
	wg.Wait()
}

// errKind names an error for the per-kind count, without addresses.
func errKind(err error) string {
	var re *client.RefusedError
	var de *client.DisconnectError
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &re):
		return "Connack " + re.Code.String()
	case errors.As(err, &de):
		return fmt.Sprintf("Disconnect %q", de.Reason)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EMFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port free"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s)-i < 60 {
		s = s[i+2:]
	}
	return s
}
