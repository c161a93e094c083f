package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/loadstat"
	"github.com/smqgw/smqgw/smq"
)

// benchOut is what smq bench -json prints.
type benchOut struct {
	loadstat.Result
	Totals      loadstat.Totals  `json:"totals"`
	Percentiles map[string]int64 `json:"latency_percentiles_ns"`
}

// benchJSONRun runs smq bench -json with args and decodes its output.
func benchJSONRun(t *testing.T, args ...string) benchOut {
	t.Helper()
	r := cli(ctxT(t), "", append([]string{"bench", "-json", "-duration", "300ms", "-drain", "2s"}, args...)...)
	if r.code != 0 {
		t.Fatalf("smq bench %q: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	var out benchOut
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("smq bench -json: %v\n%s", err, r.stdout)
	}
	return out
}

// TestBenchSmoke runs each workload of smq bench for a fraction of a
// second against the embedded broker: messages flow, none is lost or
// reordered, latencies are measured, and errors are reported by kind.
// Not parallel: the paced run must keep its rate.
func TestBenchSmoke(t *testing.T) {
	addr := startBroker(t, broker.Config{}, nil)
	t.Run("fan-in flat out", func(t *testing.T) {
		out := benchJSONRun(t, "-url", "http://"+addr+"/", "-pub-url", "ws://"+addr+"/", "-pubs", "4", "-subs", "1")
		tot := out.Totals
		if tot.Sent == 0 || tot.Delivered != tot.Sent || tot.Lost != 0 || out.Reordered != 0 || len(out.Errors) != 0 {
			t.Errorf("totals %+v, reordered %d, errors %v", tot, out.Reordered, out.Errors)
		}
		if out.Publishers != 4 || out.Subscribers != 1 || out.Connections != 5 || len(out.Sent) != 4 {
			t.Errorf("clients: %d publishers, %d subscribers, %d connections, sent by %d", out.Publishers,
				out.Subscribers, out.Connections, len(out.Sent))
		}
		if p := out.Percentiles; p["p50"] <= 0 || p["p50"] > p["p99"] || p["p99"] > p["max"] {
			t.Errorf("latency percentiles %v", p)
		}
	})
	t.Run("fan-out paced", func(t *testing.T) {
		out := benchJSONRun(t, "-url", "ws://"+addr+"/", "-pubs", "1", "-subs", "3", "-rate", "1000", "-size", "512")
		tot := out.Totals
		// 300 ms at 1000/s: about 300 messages, each to 3 subscribers.
		if tot.Sent < 150 || tot.Sent > 400 || tot.Delivered != 3*tot.Sent || tot.Lost != 0 || out.Reordered != 0 {
			t.Errorf("totals %+v", tot)
		}
	})
	t.Run("request response", func(t *testing.T) {
		out := benchJSONRun(t, "-url", "http://"+addr+"/", "-mode", "rr", "-pubs", "2")
		tot := out.Totals
		if tot.Sent == 0 || tot.Delivered != tot.Sent || out.Latency.N != tot.Sent || len(out.Errors) != 0 {
			t.Errorf("totals %+v, %d round trips measured, errors %v", tot, out.Latency.N, out.Errors)
		}
	})
	t.Run("two processes", func(t *testing.T) {
		// The workers are this test binary: TestMain runs them as smq.
		out := benchJSONRun(t, "-url", "http://"+addr+"/", "-procs", "2", "-pubs", "2", "-subs", "2", "-rate", "500")
		tot := out.Totals
		if out.Connections != 4 || out.Publishers != 2 || out.Subscribers != 2 || tot.Sent < 100 ||
			tot.Delivered != 2*tot.Sent || tot.Lost != 0 || out.Reordered != 0 || len(out.Errors) != 0 {
			t.Errorf("%d connections, totals %+v, reordered %d, errors %v", out.Connections, tot, out.Reordered, out.Errors)
		}
		idle := benchJSONRun(t, "-url", "ws://"+addr+"/", "-procs", "2", "-mode", "idle", "-conns", "20")
		if idle.Connections != 20 || len(idle.Errors) != 0 {
			t.Errorf("idle: %d connections, errors %v", idle.Connections, idle.Errors)
		}
	})
	t.Run("errors by kind", func(t *testing.T) {
		refusing := startBroker(t, broker.Config{Authenticate: func(*broker.ConnectRequest) (smq.ConnackCode, string) {
			return smq.CodeBadCredentials, "no"
		}}, nil)
		r := cli(ctxT(t), "", "bench", "-json", "-mode", "idle", "-conns", "3", "-duration", "10ms", "-url", "http://"+refusing+"/")
		var out benchOut
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("%v\n%s%s", err, r.stdout, r.stderr)
		}
		if out.Connections != 0 || out.Errors["connect: Connack 0x03 incorrect credentials"] != 3 {
			t.Errorf("connections %d, errors %v", out.Connections, out.Errors)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"-size", "10"}, {"-mode", "x"}, {"-pubs", "0"}, {"-procs", "0"}} {
			r := cli(ctxT(t), "", append([]string{"bench"}, args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, "smq: error: ") {
				t.Errorf("%q: exit %d %s", args, r.code, r.stderr)
			}
		}
	})
}

// TestBenchOpenLoop: smq bench -mode rr -rate keeps its schedule while
// the path stalls (open loop), and counts each round trip from the time
// the request was due. The broker holds the responder's first answer until
// 200 more requests have reached it, which a closed-loop requester (one
// request at a time) would never send.
func TestBenchOpenLoop(t *testing.T) {
	ctx := ctxT(t)
	const rate, hold = 1000, 200 // requests per second; requests that pass before the first answer
	var (
		mu       sync.Mutex
		reqTID   uint32 // the requests' topic: the first Publish is a request
		requests int
		held     bool
	)
	enough := make(chan struct{})
	addr := startBroker(t, broker.Config{OnPublish: func(_ *broker.Client, p *smq.Publish) bool {
		mu.Lock()
		if reqTID == 0 {
			reqTID = p.TID
		}
		if p.TID == reqTID {
			if requests++; requests == hold+1 {
				close(enough)
			}
			mu.Unlock()
			return true
		}
		first := !held
		held = true
		mu.Unlock()
		if first { // the responder's first answer
			select {
			case <-enough:
			case <-ctx.Done():
			}
		}
		return true
	}}, nil)
	out := benchJSONRun(t, "-url", "ws://"+addr+"/", "-mode", "rr", "-pubs", "1", "-rate", "1000", "-duration", "600ms")
	tot := out.Totals
	// 600 ms at 1000/s: 600 requests, however late the answers.
	if tot.Sent < 480 || tot.Sent > 600 || tot.Delivered != tot.Sent || tot.Lost != 0 || out.Reordered != 0 ||
		len(out.Errors) != 0 || out.Rate != rate {
		t.Fatalf("totals %+v, reordered %d, errors %v, rate %v", tot, out.Reordered, out.Errors, out.Rate)
	}
	// Request k (due at k ms) is answered after request 200 (due at
	// 200 ms) reached the broker: at least 200-k ms from when it was due,
	// so the first request took 200 ms or more, and more than 90 requests
	// 100 ms or more. Counted from their actual send, in a closed loop,
	// one request would be slow.
	h := &out.Latency
	if h.Max < int64(hold*time.Second/rate) {
		t.Errorf("max round trip %v, want at least %v", time.Duration(h.Max), hold*time.Second/rate)
	}
	if q := h.Quantile(1 - 90/float64(h.N)); q < 100*time.Millisecond {
		t.Errorf("the 90th slowest round trip took %v, want at least 100ms", q)
	}
}

// TestDemoDevice: the demo device publishes readings as JSON, obeys on and
// off sent to its ETID, and answers the sender with its state.
func TestDemoDevice(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, broker.Config{}, nil)
	ctx := ctxT(t)
	watcher, err := client.Dial(ctx, "ws://"+addr+"/", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	readings := make(chan *client.Message, 16)
	if _, err := watcher.Subscribe(ctx, "demo/temperature", func(m *client.Message) { readings <- m }); err != nil {
		t.Fatal(err)
	}
	answers := make(chan *client.Message, 4)
	if _, err := watcher.Subscribe(ctx, client.Self, func(m *client.Message) { answers <- m }); err != nil {
		t.Fatal(err)
	}
	dctx, stop := context.WithCancel(ctx)
	done := make(chan result, 1)
	go func() { done <- cli(dctx, "", "demo-device", "-url", "http://"+addr+"/", "-interval", "50ms") }()
	defer func() { stop(); <-done }()

	reading := func() deviceState {
		t.Helper()
		m := recv(t, readings, "a reading")
		var st deviceState
		if err := json.Unmarshal(m.Payload, &st); err != nil {
			t.Fatalf("reading %q: %v", m.Payload, err)
		}
		return st
	}
	first := reading()
	if first.Device != "demo-device" || first.State != "on" || first.Celsius < 18 || first.Celsius > 24 || first.Seq < 1 {
		t.Fatalf("first reading %+v", first)
	}
	device := recv(t, readings, "a second reading").PTID
	for _, tc := range []struct{ cmd, state, err string }{
		{"off", "off", ""}, {`{"cmd":"on"}`, "on", ""}, {"status", "on", ""}, {"explode", "on", `unknown command "explode"`},
	} {
		if err := watcher.PublishTo(ctx, device, []byte(tc.cmd)); err != nil {
			t.Fatal(err)
		}
		m := recv(t, answers, "the device's answer to "+tc.cmd)
		var st deviceState
		if err := json.Unmarshal(m.Payload, &st); err != nil || m.PTID != device || st.State != tc.state ||
			!strings.Contains(st.Error, tc.err) {
			t.Errorf("%s: answer %s from %d, %v", tc.cmd, m.Payload, m.PTID, err)
		}
	}
}
