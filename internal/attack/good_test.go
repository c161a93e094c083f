package attack

import (
	"bufio"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/childproc"
)

// The well-behaved client runs in a process of its own, as it would on a
// host of its own: the attackers' goroutines and garbage never delay it,
// only the gateway can. It is this package's test binary built without the
// race detector (a client at its real speed, whatever flags the suite runs
// with), started with goodEnv set (TestMain runs goodMain then), and
// driven over its standard input: it connects, says "ready", measures from
// "measure" to "stop", prints its goodResult as JSON, and keeps its
// sessions until its input ends.

// goodEnv holds the well-behaved client's goodConfig, as JSON.
const goodEnv = "SMQGW_ATTACK_GOOD_CLIENT"

// goodConfig tells the well-behaved client where the gateway is.
type goodConfig struct {
	Addr   string // the TLS listener
	CAFile string // the gateway's CA
}

// The well-behaved client's addresses: never an attacker's. It opens new
// sessions from the probe addresses in turn, one at a time, and keeps the
// subscriber and the publisher on pairAddr.
var probeAddrs = []string{"127.0.0.200", "127.0.0.201", "127.0.0.202", "127.0.0.203"}

const pairAddr = "127.0.0.210"

// probeEvery paces the new sessions: 100 a second over the four probe
// addresses, so 25 a second from each, within the per-address session
// rate (50 a second) that a well-behaved client keeps to.
const probeEvery = 10 * time.Millisecond

// pubEvery paces the publisher of the pair.
const pubEvery = 5 * time.Millisecond

// goodProc is the parent's handle on the well-behaved client's process.
type goodProc struct {
	stdin io.WriteCloser
	out   *bufio.Scanner
	logs  *childproc.Tail
}

// startGood starts the well-behaved client against gw and waits until its
// subscriber and publisher are connected and it has warmed up.
func startGood(t *testing.T, gw *gateway) *goodProc {
	t.Helper()
	cfg, _ := json.Marshal(goodConfig{Addr: gw.addrs["tls"], CAFile: gw.ca.CertFile})
	_, bin := binaries(t)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), goodEnv+"="+string(cfg))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g := &goodProc{stdin: stdin, out: bufio.NewScanner(stdout), logs: &childproc.Tail{Max: 64 << 10}}
	g.out.Buffer(nil, 1<<20)
	cmd.Stderr = g.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(waitShort):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() && g.logs.String() != "" {
			t.Logf("well-behaved client's stderr:\n%s", g.logs)
		}
	})
	if line := g.line(t); line != "ready" {
		t.Fatalf("well-behaved client: %s\n%s", line, g.logs)
	}
	return g
}

// line reads the client's next line, within waitLong.
func (g *goodProc) line(t *testing.T) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if g.out.Scan() {
			got <- g.out.Text()
		} else {
			got <- "no answer"
		}
	}()
	select {
	case l := <-got:
		return l
	case <-time.After(waitLong):
		t.Fatalf("well-behaved client: no answer within %v\n%s", waitLong, g.logs)
	}
	return ""
}

// measure starts the measurement.
func (g *goodProc) measure(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(g.stdin, "measure\n"); err != nil {
		t.Fatalf("well-behaved client: %v\n%s", err, g.logs)
	}
}

// stop ends the measurement and returns what the client saw.
func (g *goodProc) stop(t *testing.T) goodResult {
	t.Helper()
	if _, err := io.WriteString(g.stdin, "stop\n"); err != nil {
		t.Fatalf("well-behaved client: %v\n%s", err, g.logs)
	}
	var r goodResult
	if line := g.line(t); json.Unmarshal([]byte(line), &r) != nil {
		t.Fatalf("well-behaved client: %s\n%s", line, g.logs)
	}
	return r
}

// goodMain is the well-behaved client's process.
func goodMain(cfgJSON string) int {
	var cfg goodConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	g := &good{addr: cfg.Addr, pool: pool, topic: "good/seq"}
	if err := g.connectPair(); err != nil {
		fmt.Println(err)
		return 1
	}
	defer g.sub.Close()
	defer g.pub.Close()
	g.probeN(4) // warm up
	g.reset()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "measure" {
		return 0
	}
	cpu0 := procCPU(os.Getpid())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pubErr error
	wg.Go(func() { g.probe(stop) })
	wg.Go(func() { pubErr = g.publish(stop) })
	if !in.Scan() || in.Text() != "stop" {
		close(stop)
		wg.Wait()
		return 0
	}
	close(stop)
	wg.Wait()
	g.waitDelivered()
	r := g.result()
	r.CPU = procCPU(os.Getpid()) - cpu0
	if pubErr != nil {
		r.Errors = append(r.Errors, pubErr.Error())
	}
	for _, c := range []struct {
		name string
		c    *client.Client
	}{{"subscriber", g.sub}, {"publisher", g.pub}} {
		select {
		case <-c.c.Done():
			r.Errors = append(r.Errors, fmt.Sprintf("the %s's session ended: %v", c.name, c.c.Err()))
		default:
		}
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	// The pair stays until the parent has measured the gateway at rest.
	for in.Scan() {
	}
	return 0
}

// good is the well-behaved client: a prober that opens a new session over
// TLS (raw SMQ and WebSocket in turn) and measures the time from the TCP
// connect to Connack 0x00, and a subscriber with a publisher that send
// numbered messages through the gateway and must lose none.
type good struct {
	addr string
	pool *x509.CertPool

	mu      sync.Mutex
	connect []time.Duration // time to Connack of each probe
	slow    []probeTiming   // the slowest probes, in detail
	failed  []string        // probes that failed, why

	sub, pub *client.Client
	topic    string
	sent     atomic.Uint64
	recv     atomic.Uint64 // distinct messages received in order
	dupOrOOO atomic.Uint64 // duplicate or out-of-order messages
	next     uint64        // the subscriber's next expected number (its handler goroutine's)
}

// options are a well-behaved client's options: the gateway's CA,
// connections from local, no keepalive pings (the attacks are short).
func (g *good) options(local string) client.Options {
	return client.Options{
		RootCAs:        g.pool,
		Dialer:         dialer(local),
		ConnectTimeout: waitShort,
		PingIdle:       -1,
	}
}

// connectPair connects the pair (subscriber over wss, publisher over raw SMQ
// over TLS) from pairAddr, and sends one message through.
func (g *good) connectPair() error {
	ctx, cancel := context.WithTimeout(context.Background(), waitShort)
	defer cancel()
	var err error
	if g.sub, err = client.Dial(ctx, "wss://"+g.addr+"/smq", g.options(pairAddr)); err != nil {
		return fmt.Errorf("good subscriber: %w", err)
	}
	if g.pub, err = client.Dial(ctx, "https://"+g.addr+"/smq", g.options(pairAddr)); err != nil {
		return fmt.Errorf("good publisher: %w", err)
	}
	if _, err := g.sub.Subscribe(ctx, g.topic, g.received); err != nil {
		return fmt.Errorf("good subscriber: %w", err)
	}
	if err := g.publishOne(ctx); err != nil {
		return err
	}
	if !g.waitDelivered() {
		return fmt.Errorf("good subscriber: the first message did not arrive")
	}
	return nil
}

// received is the subscriber's handler: numbers must come in order, each
// once.
func (g *good) received(m *client.Message) {
	if len(m.Payload) < 8 {
		g.dupOrOOO.Add(1)
		return
	}
	n := binary.BigEndian.Uint64(m.Payload)
	if n != g.next {
		g.dupOrOOO.Add(1)
		if n < g.next {
			return
		}
	}
	g.next = n + 1
	g.recv.Add(1)
}

// publishOne publishes the next number.
func (g *good) publishOne(ctx context.Context) error {
	var p [64]byte
	binary.BigEndian.PutUint64(p[:], g.sent.Load())
	if err := g.pub.Publish(ctx, g.topic, p[:]); err != nil {
		return fmt.Errorf("good publisher: %w", err)
	}
	g.sent.Add(1)
	return nil
}

// publish publishes numbered messages every pubEvery until stop is
// closed.
func (g *good) publish(stop <-chan struct{}) error {
	tick := time.NewTicker(pubEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitShort)
		err := g.publishOne(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
}

// waitDelivered waits until the subscriber has what was sent, or for
// waitShort: what is missing then is lost.
func (g *good) waitDelivered() bool {
	return pollUntil(waitShort, func() bool { return g.recv.Load() >= g.sent.Load() })
}

// probe opens sessions every probeEvery until stop is closed, and records
// each one's time to Connack. A session begun is seen to its end.
func (g *good) probe(stop <-chan struct{}) {
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for i := 0; i < maxProbes; i++ {
		d, err := g.session(i)
		g.mu.Lock()
		if err != nil {
			g.failed = append(g.failed, err.Error())
		} else {
			g.connect = append(g.connect, d)
		}
		g.mu.Unlock()
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// probeN makes n probe sessions, for warming up.
func (g *good) probeN(n int) {
	for i := range n {
		_, _ = g.session(i)
	}
}

// session opens and closes the i-th session: from the probe addresses in
// turn, raw SMQ over TLS for even i, WebSocket for odd; it returns its
// time to Connack.
func (g *good) session(i int) (time.Duration, error) {
	url := "https://" + g.addr + "/smq"
	if i%2 == 1 {
		url = "wss://" + g.addr + "/smq"
	}
	opts := g.options(probeAddrs[i%len(probeAddrs)])
	td := &timingDialer{Dialer: opts.Dialer.(*net.Dialer)}
	opts.Dialer = td
	start := time.Now()
	c, err := client.Dial(context.Background(), url, opts)
	d := time.Since(start)
	if err != nil {
		return d, err
	}
	c.Close()
	g.mu.Lock()
	g.slow = append(g.slow, probeTiming{At: start, Total: d, TCP: td.connected.Sub(start), FirstByte: td.firstByte().Sub(start)})
	slices.SortFunc(g.slow, func(a, b probeTiming) int { return cmp.Compare(b.Total, a.Total) })
	g.slow = g.slow[:min(len(g.slow), 3)]
	g.mu.Unlock()
	return d, nil
}

// probeTiming is where one probe's time went: the TCP connect, the first
// bytes from the gateway (its answer to the ClientHello), the whole.
type probeTiming struct {
	At                    time.Time
	TCP, FirstByte, Total time.Duration
}

func (p probeTiming) String() string {
	return fmt.Sprintf("%s: tcp %.1f ms, first byte %.1f ms, Connack %.1f ms",
		p.At.Format("15:04:05.000"), p.TCP.Seconds()*1e3, p.FirstByte.Seconds()*1e3, p.Total.Seconds()*1e3)
}

// timingDialer notes when its one connection was made and when its
// first bytes came.
type timingDialer struct {
	*net.Dialer
	connected time.Time
	first     atomic.Int64 // UnixNano of the first read
}

func (d *timingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	d.connected = time.Now()
	if err != nil {
		return nil, err
	}
	return &timingConn{Conn: c, first: &d.first}, nil
}

func (d *timingDialer) firstByte() time.Time { return time.Unix(0, d.first.Load()) }

type timingConn struct {
	net.Conn
	first *atomic.Int64
}

func (c *timingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.first.Load() == 0 {
		c.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	return n, err
}

// reset forgets the probes so far.
func (g *good) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.connect, g.failed, g.slow = nil, nil, nil
}

// goodResult is what the well-behaved client saw during one attack.
type goodResult struct {
	Connects int      `json:"connects"`
	Failed   int      `json:"failed"`
	P50ms    float64  `json:"connect_p50_ms"`
	P99ms    float64  `json:"connect_p99_ms"`
	Maxms    float64  `json:"connect_max_ms"`
	Sent     uint64   `json:"sent"`
	Lost     uint64   `json:"lost"`
	Disorder uint64   `json:"disordered"`
	Failures []string `json:"failures,omitempty"` // probes that failed (the first five)
	Errors   []string `json:"errors,omitempty"`   // the pair's
	Slowest  []string `json:"slowest,omitempty"`
	CPU      float64  `json:"cpu_s"` // the client process's, during the attack
}

func (r goodResult) String() string {
	return fmt.Sprintf("%d connects, p50 %.1f ms, p99 %.1f ms (max %.1f), %d failed; %d messages, %d lost",
		r.Connects, r.P50ms, r.P99ms, r.Maxms, r.Failed, r.Sent, r.Lost)
}

// result sums up the probes and the pair.
func (g *good) result() goodResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := goodResult{Connects: len(g.connect), Failed: len(g.failed), Sent: g.sent.Load(), Disorder: g.dupOrOOO.Load()}
	if recv := g.recv.Load(); recv < r.Sent {
		r.Lost = r.Sent - recv
	}
	for _, p := range g.slow {
		r.Slowest = append(r.Slowest, p.String())
	}
	if len(g.failed) > 0 {
		r.Failures = g.failed[:min(len(g.failed), 5)]
	}
	if len(g.connect) > 0 {
		d := slices.Clone(g.connect)
		slices.Sort(d)
		q := func(p float64) float64 { // nearest rank
			return float64(d[max(0, int(math.Ceil(p*float64(len(d))))-1)]) / 1e6
		}
		r.P50ms, r.P99ms, r.Maxms = q(0.50), q(0.99), float64(d[len(d)-1])/1e6
	}
	return r
}
