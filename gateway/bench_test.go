package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/upstream"
)

// The benchmarks and the memory test share one process with the broker and
// the clients unless said otherwise, so their allocation and memory figures
// cover all of them; each one says what it subtracts to isolate the gateway.

const (
	benchWindow  = 1000   // messages the publisher may run ahead of the subscriber
	benchWarmup  = 5000   // messages relayed before the timer starts
	baselineMsgs = 100000 // messages of a baseline allocation run
	benchPayload = 64
)

// relayEnv is a broker on a loopback listener (where the subscriber always
// connects) and, unless via is "direct", a gateway with a TLS listener in
// front of it, reaching it in-process ("embedded") or over loopback ("lan",
// and "lan+acl": with topic permissions that grant the publisher its
// topic, "bench").
type relayEnv struct {
	via        string
	broker     *broker.Broker
	brokerAddr string
	gwAddr     string // "" for direct
	tls        *tls.Config
	acl        bool // the publisher must Create its topic
}

func newRelayEnv(tb testing.TB, via string) *relayEnv {
	tb.Helper()
	bl := smqtest.Listen(tb)
	e := &relayEnv{via: via, broker: apptest.Broker(tb, broker.Config{}, bl), brokerAddr: bl.Addr().String()}
	if via == "direct" {
		return e
	}
	var up upstream.Upstream = &upstream.Embedded{Broker: e.broker}
	var route gateway.Route
	if via == "lan+acl" {
		p, err := access.Compile([]access.Rule{{Anonymous: true, Publish: []string{"bench"}}})
		if err != nil {
			tb.Fatal(err)
		}
		route.Access, route.AccessName, e.acl = p, "bench", true
	}
	if via == "lan" || via == "lan+acl" {
		var err error
		if up, err = upstream.New(upstream.Config{Name: "lan", URLs: []string{"http://" + e.brokerAddr + "/smq"}}); err != nil {
			tb.Fatal(err)
		}
	}
	ca := testpki.NewCA(tb)
	e.tls = &tls.Config{RootCAs: ca.Pool}
	// The relay is measured flat out: no message rate limits.
	route.Path, route.Upstream = "/", up
	gw := startGatewayRoute(tb, ca, limits.Limits{MessageRate: math.MaxInt32, MessageRatePerIP: math.MaxInt32}, &route)
	e.gwAddr = gw.Addr("edge").String()
	return e
}

// startGateway starts a gateway with one TLS listener on loopback and one
// route, "/", to up. It is shut down at cleanup.
func startGateway(tb testing.TB, ca *testpki.CA, lim limits.Limits, up upstream.Upstream) *gateway.Gateway {
	return startGatewayRoute(tb, ca, lim, &gateway.Route{Path: "/", Upstream: up})
}

// startGatewayRoute is startGateway with route as the one route.
func startGatewayRoute(tb testing.TB, ca *testpki.CA, lim limits.Limits, route *gateway.Route) *gateway.Gateway {
	tb.Helper()
	server := ca.Server(tb, "127.0.0.1")
	return runGateway(tb, gateway.Config{Limits: lim, Listeners: []gateway.Listener{{
		Name:     "edge",
		Listener: smqtest.Listen(tb),
		Certs:    (*certs.Static)(&server.TLS),
		Routes:   []*gateway.Route{route},
	}}})
}

// publisher sends pre-encoded Publish messages. With batch 1 each message
// is one write (one syscall, and one TLS record when over TLS), as a browser
// sends them; with more, the messages are held and written batch at a time
// (and whenever the publisher waits), so the publisher is cheap enough for
// the relay to be the bottleneck.
type publisher struct {
	etid  uint32
	ws    bool // frames are WebSocket messages, not raw frames
	write func(frame []byte) error
	cork  *corkConn
}

// corkConn holds writes while corked until flush.
type corkConn struct {
	net.Conn
	mu     sync.Mutex // gorilla may answer a ping from the reading goroutine
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *corkConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// dialPublisher connects a publisher: "ws" (gorilla, ws:// or wss://) or
// "raw" (the raw bootstrap, http:// or https://), over TLS when tlsCfg is set.
//
// A raw publisher Creates topic create first, unless it is "".
func dialPublisher(tb testing.TB, kind, addr string, tlsCfg *tls.Config, batch int, create string) *publisher {
	tb.Helper()
	p := &publisher{}
	if kind == "raw" {
		c := smqtest.DialFast(tb, addr, tlsCfg, "bench-publisher")
		if create != "" {
			c.Send(tb, smq.Create{Topic: create})
			c.Expect(tb, smq.TypeCreateack)
		}
		p.etid, p.cork = c.ETID, &corkConn{Conn: c.Conn}
		p.write = func(f []byte) error { _, err := p.cork.Write(f); return err }
	} else {
		scheme := "ws"
		if tlsCfg != nil {
			scheme = "wss"
		}
		// Our dial function, so the WebSocket writes go through a corkConn
		// (over TLS for wss://: gorilla then does no TLS of its own).
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nd net.Dialer
			conn, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if tlsCfg != nil {
				cfg := tlsCfg.Clone()
				cfg.ServerName, _, _ = net.SplitHostPort(addr)
				tc := tls.Client(conn, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					conn.Close()
					return nil, err
				}
				conn = tc
			}
			p.cork = &corkConn{Conn: conn}
			return p.cork, nil
		}
		d := &websocket.Dialer{HandshakeTimeout: smqtest.WaitFor, NetDialContext: dial}
		if tlsCfg != nil {
			d.NetDialTLSContext = dial
		}
		conn, _, err := d.Dial(scheme+"://"+addr+"/smq", nil)
		if err != nil {
			tb.Fatal(err)
		}
		ack, err := wsConnect(conn, "bench-publisher")
		if err != nil {
			conn.Close()
			tb.Fatal(err)
		}
		// Nothing comes back in a run, but a reader answers pings and sees
		// the close; it ends when the conn is closed.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				if _, _, err := conn.NextReader(); err != nil {
					return
				}
			}
		}()
		tb.Cleanup(func() { conn.Close(); <-drained })
		p.etid, p.ws = binary.BigEndian.Uint32(ack[2:]), true
		p.write = func(f []byte) error { return conn.WriteMessage(websocket.BinaryMessage, f) }
	}
	p.cork.corked = batch > 1
	return p
}

// wsConnect reads Init, sends Connect and returns an accepting Connack.
func wsConnect(conn *websocket.Conn, uid string) ([]byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	defer conn.SetReadDeadline(time.Time{})
	read := func(want smq.Type) ([]byte, error) {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("reading %v: %w", want, err)
		}
		if len(msg) == 0 || smq.Type(msg[0]) != want {
			return nil, fmt.Errorf("got %x, want %v", msg, want)
		}
		return msg, nil
	}
	if _, err := read(smq.TypeInit); err != nil {
		return nil, err
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, smq.Connect{Version: 1, UID: uid}.Append(nil)); err != nil {
		return nil, err
	}
	ack, err := read(smq.TypeConnack)
	if err == nil && (len(ack) < 6 || ack[1] != 0) {
		err = fmt.Errorf("connack %x", ack)
	}
	return ack, err
}

// flow is one publisher and one raw subscriber (plain TCP, straight to the
// broker) on one topic, flow-controlled.
type flow struct {
	pub   *publisher
	batch int
	frame []byte
	got   atomic.Int64 // Publish messages the subscriber received
	want  atomic.Int64 // the count the publisher waits for at the end
	sent  int64
	tick  chan struct{} // every 100 received, and at want
	dead  chan struct{} // the subscriber's reader ended
}

func newFlow(tb testing.TB, e *relayEnv, kind string, batch int) *flow {
	tb.Helper()
	sub := smqtest.DialFast(tb, e.brokerAddr, nil, "bench-subscriber")
	f, _ := smq.AppendRawMessage(nil, smq.Subscribe{Topic: "bench"})
	if _, err := sub.Conn.Write(f); err != nil {
		tb.Fatal(err)
	}
	tid := binary.BigEndian.Uint32(sub.Expect(tb, smq.TypeSuback)[2:])
	fl := &flow{batch: batch, tick: make(chan struct{}, 1), dead: make(chan struct{})}
	go func() {
		defer close(fl.dead)
		for {
			msg, err := sub.R.Read()
			if err != nil {
				return
			}
			if smq.Type(msg[0]) != smq.TypePublish {
				continue
			}
			if n := fl.got.Add(1); n%100 == 0 || n == fl.want.Load() {
				select {
				case fl.tick <- struct{}{}:
				default:
				}
			}
		}
	}()
	tb.Cleanup(func() { sub.Conn.Close(); <-fl.dead })

	if e.gwAddr == "" {
		fl.pub = dialPublisher(tb, kind, e.brokerAddr, nil, batch, "")
	} else {
		create := ""
		if e.acl {
			create = "bench" // granted by the name
		}
		fl.pub = dialPublisher(tb, kind, e.gwAddr, e.tls, batch, create)
	}
	msg := (&smq.Publish{TID: tid, PTID: fl.pub.etid, Payload: make([]byte, benchPayload)}).Append(nil)
	fl.frame = msg
	if !fl.pub.ws {
		fl.frame, _ = smq.AppendRaw(nil, msg)
	}
	return fl
}

// run publishes n more messages, never more than benchWindow ahead of the
// subscriber, and returns when the subscriber has them all.
func (fl *flow) run(tb testing.TB, n int) {
	target := fl.sent + int64(n)
	fl.want.Store(target)
	wait := func() {
		if err := fl.pub.cork.flush(); err != nil {
			tb.Fatal(err)
		}
		select {
		case <-fl.tick:
		case <-fl.dead:
			tb.Fatalf("subscriber gone after %d of %d messages", fl.got.Load(), target)
		}
	}
	for fl.sent < target {
		for fl.sent-fl.got.Load() >= benchWindow {
			wait()
		}
		if err := fl.pub.write(fl.frame); err != nil {
			tb.Fatal(err)
		}
		if fl.sent++; fl.sent%int64(fl.batch) == 0 {
			if err := fl.pub.cork.flush(); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for fl.got.Load() < target {
		wait()
	}
}

// measured runs n messages and returns the process's heap allocations per
// message (count and bytes) in that run.
func (fl *flow) measured(tb testing.TB, n int) (allocs, bytes float64) {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	fl.run(tb, n)
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(n), float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n)
}

// baselines caches, per publisher kind and batch, the whole process's
// allocations per message of the direct flow (same publisher, same
// subscriber, no gateway).
var baselines struct {
	sync.Mutex
	m map[string][2]float64
}

func baseline(tb testing.TB, kind string, batch int) (allocs, bytes float64) {
	baselines.Lock()
	defer baselines.Unlock()
	key := fmt.Sprint(kind, batch)
	if v, ok := baselines.m[key]; ok {
		return v[0], v[1]
	}
	e := newRelayEnv(tb, "direct")
	fl := newFlow(tb, e, kind, batch)
	fl.run(tb, benchWarmup)
	a, b := fl.measured(tb, baselineMsgs)
	if baselines.m == nil {
		baselines.m = map[string][2]float64{}
	}
	baselines.m[key] = [2]float64{a, b}
	return a, b
}

// BenchmarkRelay relays 64-byte Publish messages from one publisher to one
// raw subscriber connected straight to the broker, flow-controlled, so
// msgs/s is sustained throughput.
//
//   - direct/ws, direct/raw: the publisher (gorilla ws://, or raw frames over
//     plain TCP) straight to the broker; no gateway, no TLS.
//   - embedded/wss, lan/wss: a gorilla wss:// publisher through the gateway's
//     TLS listener to the in-process broker, or to the broker over loopback
//     TCP (raw SMQ, http://).
//   - embedded/https, lan/https: raw frames over TLS through the gateway.
//   - lan+acl/https: lan/https on a route with topic permissions: the
//     publisher Creates its topic (granted), then every Publish is
//     checked.
//   - batch=1: one write per message; batch=32: the publisher writes 32
//     messages at a time (see publisher).
//
// allocs/op and B/op cover the whole process: publisher, gateway, broker and
// subscriber. gw-allocs/msg and gw-B/msg subtract the direct flow with the
// same publisher and batch (measured once per process over 100,000
// messages), leaving what the gateway path adds: TLS on both ends, the
// gateway's reads and writes, and the broker reading from the gateway's
// upstream connection instead of from the publisher.
func BenchmarkRelay(b *testing.B) {
	for _, batch := range []int{1, 32} {
		for _, bc := range []struct{ via, kind string }{
			{"direct", "ws"}, {"embedded", "ws"}, {"lan", "ws"},
			{"direct", "raw"}, {"embedded", "raw"}, {"lan", "raw"}, {"lan+acl", "raw"},
		} {
			scheme := bc.kind
			if bc.via != "direct" {
				scheme = map[string]string{"ws": "wss", "raw": "https"}[bc.kind]
			}
			b.Run(fmt.Sprintf("%s/%s/batch=%d", bc.via, scheme, batch), func(b *testing.B) {
				benchRelay(b, bc.via, bc.kind, batch)
			})
		}
	}
}

func benchRelay(b *testing.B, via, kind string, batch int) {
	var baseAllocs, baseBytes float64
	if via != "direct" {
		baseAllocs, baseBytes = baseline(b, kind, batch)
	}
	e := newRelayEnv(b, via)
	fl := newFlow(b, e, kind, batch)
	fl.run(b, benchWarmup)
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	allocs, bytes := fl.measured(b, b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if via != "direct" {
		b.ReportMetric(allocs-baseAllocs, "gw-allocs/msg")
		b.ReportMetric(bytes-baseBytes, "gw-B/msg")
	}
	if st := e.broker.Stats(); st.SlowDisconnects != 0 {
		b.Fatalf("%d slow-consumer disconnects in a flow-controlled run", st.SlowDisconnects)
	}
}

// Idle-session memory: the clients live in a helper process (this test
// binary run again), so the gateway process holds only the gateway's side of
// each session (and, with the embedded upstream, the broker's).

const (
	envMemTest   = "SMQGW_MEMTEST"          // "1" runs TestIdleSessionMemory
	envSessions  = "SMQGW_MEMTEST_SESSIONS" // session counts, comma-separated; default "1000,5000"
	envHold      = "SMQGW_MEMTEST_HOLD"     // how long the sessions are held before "as held" is read; default 3s
	envHelper    = "SMQGW_HELPER"           // "clients" or "broker": this process is a helper
	envAddr      = "SMQGW_HELPER_ADDR"      // clients: the gateway's address
	envCount     = "SMQGW_HELPER_N"         // clients: how many sessions
	envCA        = "SMQGW_HELPER_CA"        // clients: the CA certificate file
	envTransport = "SMQGW_HELPER_TRANSPORT" // clients: "wss" (default) or "https" (raw SMQ over TLS)
	envProfile   = "SMQGW_MEMTEST_PROFILE"  // a directory: write a heap profile with the sessions open
	envBig       = "SMQGW_MEMTEST_BIG"      // "1": each session first sends itself one message of 60,000 bytes and reads it back
)

// TestIdleSessionMemory opens idle sessions through the gateway's TLS
// listener from a helper process (wss://, or raw SMQ over TLS: https://)
// and reports the gateway process's memory per session. Run it by hand:
//
//	SMQGW_MEMTEST=1 go test ./gateway -run TestIdleSessionMemory -v
//	SMQGW_MEMTEST=1 SMQGW_MEMTEST_SESSIONS=9000 go test ./gateway -run 'TestIdleSessionMemory/upstream=lan' -v
//
// upstream=embedded counts the in-process broker's side of each session too;
// upstream=lan puts the broker in a second helper process, leaving the
// gateway alone (the LAN path).
//
// Each run reports, per session (the process's figures with the sessions
// held, less those before the clients came, over the session count):
//
//   - peak: the process's peak RSS (VmHWM) during the connect burst;
//   - held: RSS, and what makes it up, SMQGW_MEMTEST_HOLD (3 s) after the
//     burst, as a user would see it: no GC forced from outside;
//   - gc: the same after a forced GC and debug.FreeOSMemory.
//
// RSS is split into stacks (goroutine stacks in use), live heap (as of
// the last GC), runtime (the runtime's metadata, its own stacks and the
// rest it reports), and headroom: what is left of RSS, mostly heap
// garbage not yet collected and free heap spans not yet returned to the
// OS.
func TestIdleSessionMemory(t *testing.T) {
	if os.Getenv(envMemTest) != "1" {
		t.Skip("set " + envMemTest + "=1 to run")
	}
	counts := []int{1000, 5000}
	if s := os.Getenv(envSessions); s != "" {
		counts = counts[:0]
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				t.Fatalf("%s: bad count %q", envSessions, f)
			}
			counts = append(counts, n)
		}
	}
	hold := 3 * time.Second
	if s := os.Getenv(envHold); s != "" {
		var err error
		if hold, err = time.ParseDuration(s); err != nil {
			t.Fatalf("%s: %v", envHold, err)
		}
	}
	for _, via := range []string{"embedded", "lan"} {
		for _, transport := range []string{"wss", "https"} {
			for _, n := range counts {
				t.Run(fmt.Sprintf("upstream=%s/client=%s/sessions=%d", via, transport, n), func(t *testing.T) {
					idleSessions(t, via, transport, n, hold)
				})
			}
		}
	}
}

func idleSessions(t *testing.T, via, transport string, n int, hold time.Duration) {
	var up upstream.Upstream
	var br *broker.Broker
	if via == "embedded" {
		br = broker.New(broker.Config{})
		t.Cleanup(func() { _ = br.Shutdown(context.Background()) })
		up = &upstream.Embedded{Broker: br}
	} else {
		h := startHelper(t, "broker", nil)
		addr := strings.TrimPrefix(h.waitLine(t, "listening "), "listening ")
		var err error
		if up, err = upstream.New(upstream.Config{Name: "lan", URLs: []string{"http://" + addr + "/smq"}}); err != nil {
			t.Fatal(err)
		}
	}
	ca := testpki.NewCA(t)
	// No pings during the measurement: the helper's clients do not read.
	gw := startGateway(t, ca, limits.Limits{WSPingInterval: time.Hour, MaxSessionsPerIP: 1 << 20, SessionRatePerIP: 1e6,
		MaxConnectionsPerIP: 1 << 20, MaxPendingPerIP: 1 << 20}, up)

	before := memSnapshot(t, true)
	resetPeakRSS(t)
	h := startHelper(t, "clients", []string{
		envAddr + "=" + gw.Addr("edge").String(),
		envCount + "=" + strconv.Itoa(n),
		envCA + "=" + ca.CertFile,
		envTransport + "=" + transport,
	})
	start := time.Now()
	h.waitLine(t, "ready ")
	setup := time.Since(start)
	if got := gw.Sessions(); got != n {
		t.Fatalf("gateway has %d sessions, want %d", got, n)
	}
	// The measurement's own window, not a wait for a condition: "as held"
	// is what the process holds this long after the burst.
	<-time.After(hold)
	held := memSnapshot(t, false)
	gced := memSnapshot(t, true)
	if dir := os.Getenv(envProfile); dir != "" {
		writeHeapProfile(t, filepath.Join(dir, fmt.Sprintf("heap-%s-%s-%d.out", via, transport, n)))
	}

	kib := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	line := func(name string, m memStats) string {
		return fmt.Sprintf("%-5s RSS %5.1f KiB = stacks %4.1f + live heap %4.1f + runtime %4.1f + headroom %5.1f "+
			"(heap objects %4.1f, free spans %4.1f)",
			name, kib(m.rss, before.rss), kib(m.stacks, before.stacks), kib(m.live, before.live),
			kib(m.runtime, before.runtime),
			kib(m.rss, before.rss)-kib(m.stacks, before.stacks)-kib(m.live, before.live)-kib(m.runtime, before.runtime),
			kib(m.objects, before.objects), kib(m.free, before.free))
	}
	t.Logf("upstream=%s client=%s sessions=%d (set up in %v, held %v): per session:\n"+
		"  peak  RSS %5.1f KiB (VmHWM during the burst)\n  %s\n  %s\n"+
		"  goroutines %.2f, stack %.0f B each on average after GC; starting stack %d B",
		via, transport, n, setup.Round(time.Millisecond), hold,
		kib(held.peak, before.rss), line("held", held), line("gc", gced),
		float64(gced.goroutines-before.goroutines)/float64(n),
		(float64(gced.stacks)-float64(before.stacks))/float64(gced.goroutines-before.goroutines), gced.startStack)
	if br != nil {
		if got := br.Stats().Sessions; got != int64(n) {
			t.Errorf("broker has %d sessions, want %d", got, n)
		}
	}
	h.stop(t)
}

// memStats is the process's memory, in bytes: RSS and its peak from
// /proc, the rest from runtime/metrics.
type memStats struct {
	rss, peak uint64
	stacks    uint64 // goroutine stacks in use
	live      uint64 // live heap as of the last GC
	objects   uint64 // heap objects, live or not yet swept
	free      uint64 // heap spans free but not returned to the OS
	runtime   uint64 // the runtime's metadata, OS thread stacks, other
	// startStack is the size new goroutines start with.
	startStack uint64
	goroutines int
}

// memSnapshot reads the process's memory; with gc, after collecting
// garbage and returning freed memory to the OS.
func memSnapshot(t *testing.T, gc bool) memStats {
	t.Helper()
	if gc {
		runtime.GC()
		runtime.GC()
		debug.FreeOSMemory()
	}
	samples := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/metadata/mcache/free:bytes"},
		{Name: "/memory/classes/metadata/mcache/inuse:bytes"},
		{Name: "/memory/classes/metadata/mspan/free:bytes"},
		{Name: "/memory/classes/metadata/mspan/inuse:bytes"},
		{Name: "/memory/classes/metadata/other:bytes"},
		{Name: "/memory/classes/os-stacks:bytes"},
		{Name: "/memory/classes/other:bytes"},
		{Name: "/memory/classes/profiling/buckets:bytes"},
		{Name: "/gc/stack/starting-size:bytes"},
	}
	rtmetrics.Read(samples)
	v := func(i int) uint64 { return samples[i].Value.Uint64() }
	s := memStats{stacks: v(0), live: v(1), objects: v(2), free: v(3) + v(4),
		runtime: v(5) + v(6) + v(7) + v(8) + v(9) + v(10) + v(11) + v(12), startStack: v(13),
		goroutines: runtime.NumGoroutine()}
	s.rss, s.peak = procStatus(t, "VmRSS:"), procStatus(t, "VmHWM:")
	return s
}

// procStatus returns a field of /proc/self/status in bytes.
func procStatus(t *testing.T, field string) uint64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeakRSS resets VmHWM to the RSS now (Linux: clear_refs 5).
func resetPeakRSS(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Logf("peak RSS not reset (%v): the peak may be an earlier one", err)
	}
}

func writeHeapProfile(t *testing.T, name string) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// helper is this test binary running one of the helper tests.
type helper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at EOF
	stderr bytes.Buffer
	done   bool
}

func startHelper(t *testing.T, role string, env []string) *helper {
	t.Helper()
	test := map[string]string{"clients": "TestHelperClients", "broker": "TestHelperBroker"}[role]
	h := &helper{lines: make(chan string, 16)}
	h.cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.timeout=30m")
	h.cmd.Env = append(append(os.Environ(), envHelper+"="+role), env...)
	h.cmd.Stderr = &h.stderr
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// waitLine returns the helper's first output line starting with prefix.
func (h *helper) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(5 * time.Minute)
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper %s ended before %q; stderr:\n%s", h.cmd.Args[1], prefix, h.stderr.String())
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timeout:
			t.Fatalf("helper %s: no %q in time", h.cmd.Args[1], prefix)
		}
	}
}

// stop closes the helper's stdin, which ends it, and waits for it.
func (h *helper) stop(t *testing.T) {
	if h.done {
		return
	}
	h.done = true
	h.stdin.Close()
	for range h.lines {
	}
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("helper %s: %v; stderr:\n%s", h.cmd.Args[1], err, h.stderr.String())
	}
}

// TestHelperClients is the client side of TestIdleSessionMemory: it opens
// SMQGW_HELPER_N sessions to SMQGW_HELPER_ADDR (wss://, or raw SMQ over TLS
// when SMQGW_HELPER_TRANSPORT is "https"), completes Init, Connect and
// Connack on each, prints "ready N", and holds them until stdin closes.
func TestHelperClients(t *testing.T) {
	if os.Getenv(envHelper) != "clients" {
		t.Skip("helper process for TestIdleSessionMemory")
	}
	addr := os.Getenv(envAddr)
	n, err := strconv.Atoi(os.Getenv(envCount))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(os.Getenv(envCA))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	raw := os.Getenv(envTransport) == "https"
	if raw && os.Getenv(envBig) == "1" {
		t.Fatal(envBig + " is for wss only")
	}
	tlsCfg := &tls.Config{RootCAs: pool}
	d := &websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: smqtest.WaitFor}
	conns := make([]io.Closer, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				uid := "idle-" + strconv.Itoa(i)
				if raw {
					c, err := rawConnect(addr, tlsCfg, uid)
					if c != nil {
						conns[i] = c
					}
					if err != nil {
						errs <- fmt.Errorf("session %d: %w", i, err)
						next.Store(int64(n))
						return
					}
					continue
				}
				c, _, err := d.Dial("wss://"+addr+"/", nil)
				var ack []byte
				if err == nil {
					conns[i] = c
					ack, err = wsConnect(c, uid)
				}
				if err == nil && os.Getenv(envBig) == "1" {
					err = bigRoundTrip(c, binary.BigEndian.Uint32(ack[2:]))
				}
				if err != nil {
					errs <- fmt.Errorf("session %d: %w", i, err)
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ready %d\n", n)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// rawConnect opens a raw SMQ session over TLS (the https:// bootstrap),
// reads Init, sends Connect and reads an accepting Connack. The conn it
// returns, if any, is the caller's to close, error or not.
func rawConnect(addr string, cfg *tls.Config, uid string) (net.Conn, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: smqtest.WaitFor}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(smqtest.WaitFor))
	defer conn.SetDeadline(time.Time{})
	req := smq.Request{Path: "/smq", Host: addr}
	if _, err := conn.Write(req.Append(nil)); err != nil {
		return conn, err
	}
	r := smq.NewReader(bufio.NewReaderSize(conn, 1<<10))
	expect := func(want smq.Type) ([]byte, error) {
		msg, err := r.Read()
		if err != nil {
			return nil, fmt.Errorf("reading %v: %w", want, err)
		}
		if smq.Type(msg[0]) != want {
			return nil, fmt.Errorf("got %x, want %v", msg, want)
		}
		return msg, nil
	}
	if _, err := expect(smq.TypeInit); err != nil {
		return conn, err
	}
	f, err := smq.AppendRawMessage(nil, smq.Connect{Version: 1, UID: uid})
	if err != nil {
		return conn, err
	}
	if _, err := conn.Write(f); err != nil {
		return conn, err
	}
	ack, err := expect(smq.TypeConnack)
	if err == nil && (len(ack) < 6 || ack[1] != 0) {
		err = fmt.Errorf("connack %x", ack)
	}
	return conn, err
}

// bigRoundTrip sends the session's own ETID one Publish of 60,000 bytes
// and reads it back: one big message each way through the gateway.
func bigRoundTrip(c *websocket.Conn, etid uint32) error {
	msg := (&smq.Publish{TID: etid, PTID: etid, Payload: make([]byte, 60000)}).Append(nil)
	if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	defer c.SetReadDeadline(time.Time{})
	_, got, err := c.ReadMessage()
	if err == nil && len(got) != len(msg) {
		err = fmt.Errorf("got %d bytes back, want %d", len(got), len(msg))
	}
	return err
}

// TestHelperBroker is the broker side of TestIdleSessionMemory's lan
// upstream: it serves a broker on loopback, prints "listening ADDR", and
// serves until stdin closes.
func TestHelperBroker(t *testing.T) {
	if os.Getenv(envHelper) != "broker" {
		t.Skip("helper process for TestIdleSessionMemory")
	}
	br := broker.New(broker.Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = br.Serve(l) }()
	fmt.Printf("listening %s\n", l.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	_ = br.Shutdown(ctx)
	<-served
}
