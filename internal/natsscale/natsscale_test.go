package natsscale

import (
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startCluster starts n nats-servers in this process, clustered over
// routes on 127.0.0.1 (the others route to the first; gossip makes the
// mesh); clients connect in-process. compression is the routes' mode (""
// is the server's default, "accept": none unless the other side asks). It
// returns once every server sees the others' interest.
//
// The client listener is on (a random port on 127.0.0.1, never used):
// nats-server v2.15.3 starts its route listener only after the client
// accept loop, which DontListen skips, so with DontListen a server never
// routes.
func startCluster(tb testing.TB, n int, compression string) []*server.Server {
	tb.Helper()
	var seed string
	servers := make([]*server.Server, 0, n)
	for i := range n {
		o := &server.Options{
			ServerName: "n" + strconv.Itoa(i),
			Host:       "127.0.0.1",
			Port:       -1, // see startCluster's doc: DontListen would keep the routes down
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name:        "smqgw",
				Host:        "127.0.0.1",
				Port:        -1,
				Compression: server.CompressionOpts{Mode: compression},
			},
		}
		if seed != "" {
			o.Routes = server.RoutesFromStr(seed)
		}
		s, err := server.NewServer(o)
		if err != nil {
			tb.Fatalf("natsscale: server %d: %v", i, err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			tb.Fatalf("natsscale: server %d not ready", i)
		}
		tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if seed == "" {
			seed = "nats://" + s.ClusterAddr().String()
		}
		servers = append(servers, s)
	}
	// Ready: a subscription on each server is known on every other.
	for i, s := range servers {
		nc := connect(tb, s)
		subj := "natsscale.ready." + strconv.Itoa(i)
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			tb.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			tb.Fatal(err)
		}
		for _, o := range servers {
			waitFor(tb, 10*time.Second, func() bool {
				return o.GlobalAccount().SubscriptionInterest(subj)
			})
		}
		_ = sub.Unsubscribe()
		nc.Close()
	}
	for _, s := range servers {
		waitFor(tb, 10*time.Second, func() bool { return s.NumSubscriptions() == servers[0].NumSubscriptions() })
	}
	return servers
}

// connect opens an in-process connection to s, as a node's broker would:
// NoEcho, so that it does not receive what it publishes.
func connect(tb testing.TB, s *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(s), nats.NoEcho(), nats.MaxReconnects(0))
	if err != nil {
		tb.Fatalf("natsscale: connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// waitFor polls cond every millisecond until it holds, or fails tb. The
// servers offer no channel to wait on for interest from a route.
func waitFor(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("natsscale: condition not met within %v", d)
		}
		time.Sleep(time.Millisecond)
	}
}

// etidSubject is the i-th of distinct subjects shaped like a node's
// per-client subjects: smqgw.e.<8 hex digits, high bit set>.
func etidSubject(i int) string {
	v := 0x80000000 | (uint32(i)*2654435761)&0x7fffffff
	return fmt.Sprintf("smqgw.e.%08x", v)
}

type memory struct{ heap, stack uint64 }

// memNow is the live heap and the goroutine stacks after two collections.
func memNow() memory {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memory{m.HeapAlloc, m.StackInuse}
}

func totalSubs(servers []*server.Server) (n []uint32) {
	for _, s := range servers {
		n = append(n, s.NumSubscriptions())
	}
	return n
}

// TestCluster checks the harness: three servers mesh, interest spreads and
// a message crosses a route. It takes a fraction of a second.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	servers := startCluster(t, 3, "")
	a, b := connect(t, servers[0]), connect(t, servers[1])
	sub, err := b.SubscribeSync(etidSubject(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return servers[0].GlobalAccount().SubscriptionInterest(etidSubject(1)) })
	if err := a.Publish(etidSubject(1), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "hello" {
		t.Fatalf("got %v, %v; want hello", m, err)
	}
	if _, ok := routeBytes(); !ok {
		t.Log("route bytes not measured on this platform")
	}
}

// BenchmarkInterest makes b.N subscriptions (subjects like a node's
// per-client smqgw.e.<etid>) on the first server and waits until every
// server holds them; then removes them and waits until every server has
// let go. An op is one subscription; ns/op is the time until the last
// server has it. Choose the count with -benchtime, e.g. 100000x.
//
// Metrics, per subscription: heap-B and stack-B, what the whole process
// (client, the server holding it, every other server) keeps while it
// exists — nodes=1 is the client and its own server, so a remote server's
// share is (nodes=3 − nodes=1) / 2; route-B, the bytes on all routes ÷ the
// other servers (the RS+ one route carries); cpu-ns, CPU time of the whole
// process; own-ns, time until the server holding it had all; unsub-ns,
// unsub-cpu-ns and unsub-route-B, the same for removing them.
func BenchmarkInterest(b *testing.B) {
	for _, c := range []struct {
		nodes       int
		callback    bool
		compression string
	}{
		{1, false, ""},
		{2, false, ""},
		{3, false, ""},
		{3, true, ""},
		{3, false, server.CompressionS2Fast},
	} {
		name := fmt.Sprintf("nodes=%d/sub=chan", c.nodes)
		if c.callback {
			name = fmt.Sprintf("nodes=%d/sub=callback", c.nodes)
		}
		if c.compression != "" {
			name += "/routes=" + c.compression
		}
		b.Run(name, func(b *testing.B) { benchInterest(b, c.nodes, c.callback, c.compression) })
	}
}

func benchInterest(b *testing.B, nodes int, callback bool, compression string) {
	b.StopTimer()
	servers := startCluster(b, nodes, compression)
	nc := connect(b, servers[0])
	ch := make(chan *nats.Msg, 1)
	subjects := make([]string, b.N)
	for i := range subjects {
		subjects[i] = etidSubject(i)
	}
	subs := make([]*nats.Subscription, b.N)
	base := totalSubs(servers)
	mem0 := memNow()
	rb0, _ := routeBytes()
	cpu0, _ := cpuTime()
	start := time.Now()

	b.StartTimer()
	for i, subj := range subjects {
		var err error
		if callback {
			subs[i], err = nc.Subscribe(subj, func(*nats.Msg) {})
		} else {
			subs[i], err = nc.ChanSubscribe(subj, ch)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	own := time.Since(start)
	for i, s := range servers {
		waitFor(b, time.Minute, func() bool { return s.NumSubscriptions() >= base[i]+uint32(b.N) })
	}
	b.StopTimer()
	cpu1, _ := cpuTime()
	rb1, _ := routeBytes()
	mem1 := memNow()

	start = time.Now()
	for _, sub := range subs {
		if err := sub.Unsubscribe(); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	for i, s := range servers {
		waitFor(b, time.Minute, func() bool { return s.NumSubscriptions() <= base[i] })
	}
	unsub := time.Since(start)
	cpu2, _ := cpuTime()
	rb2, _ := routeBytes()

	n := float64(b.N)
	b.ReportMetric(float64(int64(mem1.heap)-int64(mem0.heap))/n, "heap-B/sub")
	b.ReportMetric(float64(int64(mem1.stack)-int64(mem0.stack))/n, "stack-B/sub")
	b.ReportMetric(float64(cpu1-cpu0)/n, "cpu-ns/sub")
	b.ReportMetric(float64(own.Nanoseconds())/n, "own-ns/sub")
	b.ReportMetric(float64(unsub.Nanoseconds())/n, "unsub-ns/sub")
	b.ReportMetric(float64(cpu2-cpu1)/n, "unsub-cpu-ns/sub")
	if nodes > 1 {
		b.ReportMetric(float64(rb1-rb0)/n/float64(nodes-1), "route-B/sub")
		b.ReportMetric(float64(rb2-rb1)/n/float64(nodes-1), "unsub-route-B/sub")
	}
	runtime.KeepAlive(subjects)
}

// BenchmarkRoute publishes b.N messages of one size on one subject from a
// connection to the first server, as a node publishes a topic message
// once, and counts them at subscribers: on the same server (local), on a
// second server (cross: every message crosses one route), or on the second
// and the third (cross2: a publish reaches two servers, a delivery each).
// The publisher keeps at most a window of messages unreceived, so that no
// queue overflows: the figure is what the path sustains. MB/s counts the
// payload published; deliveries/s is per subscriber node.
func BenchmarkRoute(b *testing.B) {
	for _, size := range []int{64, 1024} {
		for _, path := range []string{"local", "cross", "cross2"} {
			b.Run(fmt.Sprintf("size=%d/path=%s", size, path), func(b *testing.B) { benchRoute(b, size, path) })
		}
	}
}

func benchRoute(b *testing.B, size int, path string) {
	b.StopTimer()
	servers := startCluster(b, 3, "")
	pub := connect(b, servers[0])
	var at []*server.Server
	switch path {
	case "local":
		at = servers[:1]
	case "cross":
		at = servers[1:2]
	case "cross2":
		at = servers[1:3]
	}
	const subj = "smqgw.t.0123456789abcdef"
	base := servers[0].NumSubscriptions()
	var got atomic.Int64
	var want atomic.Int64
	signal := make(chan struct{}, 1)
	var subs []*nats.Subscription
	for _, s := range at {
		nc := connect(b, s) // the publisher's own would not get it (NoEcho)
		sub, err := nc.Subscribe(subj, func(*nats.Msg) {
			if got.Add(1) == want.Load() {
				select {
				case signal <- struct{}{}:
				default:
				}
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			b.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		subs = append(subs, sub)
	}
	for _, s := range servers { // every server knows every subscriber
		waitFor(b, 10*time.Second, func() bool { return s.NumSubscriptions() == base+uint32(len(at)) })
	}
	fan := int64(len(at))
	// Wait until got reaches w (deliveries, all subscribers together).
	wait := func(w int64) {
		want.Store(w)
		for got.Load() < w {
			select {
			case <-signal:
			case <-time.After(10 * time.Second):
				b.Fatalf("natsscale: %d of %d deliveries after 10 s", got.Load(), w)
			}
		}
	}
	half := min(16384, max(1024, (4<<20)/size))
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*7 + 3)
	}
	rb0, _ := routeBytes()
	cpu0, _ := cpuTime()
	start := time.Now()

	b.SetBytes(int64(size))
	b.StartTimer()
	for sent := 0; sent < b.N; {
		batch := min(half, b.N-sent)
		for range batch {
			if err := pub.Publish(subj, payload); err != nil {
				b.Fatal(err)
			}
		}
		sent += batch
		if lag := sent - half; lag > 0 {
			wait(int64(lag) * fan)
		}
	}
	wait(int64(b.N) * fan)
	b.StopTimer()
	elapsed := time.Since(start)
	cpu1, _ := cpuTime()
	rb1, _ := routeBytes()

	for _, sub := range subs {
		if d, _ := sub.Dropped(); d > 0 {
			b.Errorf("natsscale: %d messages dropped", d)
		}
	}
	n := float64(b.N)
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(n*float64(fan)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu1-cpu0)/n, "cpu-ns/msg")
	if path != "local" {
		b.ReportMetric(float64(rb1-rb0)/n/float64(fan), "route-B/msg")
	}
}

// BenchmarkRequest times one request and its answer, as a node asks the
// others: to a responder on another server (the barrier a first
// subscriber waits for, a takeover claim), or to a subject nobody holds
// (an unused ETID or UID), which the node's own server answers at once
// with "no responders". cpu-ns/op is the whole process's CPU time.
func BenchmarkRequest(b *testing.B) {
	for _, path := range []string{"cross", "noresponders"} {
		b.Run("path="+path, func(b *testing.B) {
			servers := startCluster(b, 2, "")
			req := connect(b, servers[0])
			subj := etidSubject(7)
			if path == "cross" {
				resp := connect(b, servers[1])
				if _, err := resp.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
					b.Fatal(err)
				}
				if err := resp.Flush(); err != nil {
					b.Fatal(err)
				}
				waitFor(b, 10*time.Second, func() bool { return servers[0].GlobalAccount().SubscriptionInterest(subj) })
			}
			// The first request sets up the connection's reply subscription.
			_, _ = req.Request(subj, nil, 5*time.Second)
			cpu0, _ := cpuTime()
			b.ResetTimer()
			for range b.N {
				_, err := req.Request(subj, []byte("x"), 5*time.Second)
				switch {
				case path == "cross" && err != nil:
					b.Fatal(err)
				case path == "noresponders" && err != nats.ErrNoResponders:
					b.Fatalf("got %v, want no responders", err)
				}
			}
			b.StopTimer()
			cpu1, _ := cpuTime()
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkDurable makes b.N durable consumers, one per device, on one
// JetStream stream that would hold the messages for devices while they are
// away (smqgw.q.<etid>), on a single server with memory storage: what a
// durable queue per device would cost before any message is stored. An op
// is one consumer; heap-B and stack-B are what each keeps, goroutines how
// many each starts. Replicated streams (R3: a Raft group per consumer on
// three servers) cost more and are not measured here.
func BenchmarkDurable(b *testing.B) {
	b.StopTimer()
	o := &server.Options{
		ServerName:         "js",
		Host:               "127.0.0.1",
		Port:               -1,
		NoLog:              true,
		NoSigs:             true,
		JetStream:          true,
		StoreDir:           b.TempDir(),
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  256 << 20,
	}
	// The server's default allows 1,000 consumers a stream
	// (JSDefaultMaxConsumersPerStream); a queue per device needs more.
	o.JetStreamLimits.DefaultMaxConsumers = -1
	s, err := server.NewServer(o)
	if err != nil {
		b.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("natsscale: server not ready")
	}
	b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc := connect(b, s)
	js, err := nc.JetStream()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{
		Name:     "SMQ",
		Subjects: []string{"smqgw.q.>"},
		Storage:  nats.MemoryStorage,
	}); err != nil {
		b.Fatal(err)
	}
	cfgs := make([]nats.ConsumerConfig, b.N)
	for i := range cfgs {
		cfgs[i] = nats.ConsumerConfig{
			Durable:       fmt.Sprintf("d%08x", i),
			FilterSubject: "smqgw.q." + etidSubject(i)[len("smqgw.e."):],
			AckPolicy:     nats.AckExplicitPolicy,
		}
	}
	mem0 := memNow()
	g0 := runtime.NumGoroutine()
	cpu0, _ := cpuTime()
	b.StartTimer()
	for i := range cfgs {
		if _, err := js.AddConsumer("SMQ", &cfgs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu1, _ := cpuTime()
	g1 := runtime.NumGoroutine()
	mem1 := memNow()
	n := float64(b.N)
	b.ReportMetric(float64(int64(mem1.heap)-int64(mem0.heap))/n, "heap-B/consumer")
	b.ReportMetric(float64(int64(mem1.stack)-int64(mem0.stack))/n, "stack-B/consumer")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/consumer")
	b.ReportMetric(float64(cpu1-cpu0)/n, "cpu-ns/consumer")
}
