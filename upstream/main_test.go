package upstream_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/upstream"
	"github.com/smqgw/smqgw/wire"
)

// TestMain checks that no test leaves a goroutine behind: every dial,
// session and server must have ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testBroker is a real embedded broker on a loopback port. It believes the
// X-Forwarded-For of loopback peers, so the Init IP tells whether the header
// arrived, and it reports every Connect's peer on Peers.
type testBroker struct {
	*broker.Broker
	Addr  string
	Peers chan broker.Peer
}

// startBroker starts a broker on 127.0.0.1:0, behind TLS if tc is not nil;
// it is shut down when the test ends.
func startBroker(t *testing.T, tc *tls.Config) *testBroker {
	t.Helper()
	tb := &testBroker{Peers: make(chan broker.Peer, 16)}
	tb.Broker = broker.New(broker.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Authenticate: func(req *broker.ConnectRequest) (smq.ConnackCode, string) {
			tb.Peers <- req.Peer
			return smq.CodeAccepted, ""
		},
	})
	l := listen(t)
	tb.Addr = l.Addr().String()
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	served := make(chan error, 1)
	go func() { served <- tb.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tb.Shutdown(ctx); err != nil {
			t.Errorf("broker Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, broker.ErrClosed) {
			t.Errorf("broker Serve: %v", err)
		}
		l.Close()
	})
	return tb
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// deadAddr returns a loopback address nobody listens on: connecting to it is
// refused at once.
func deadAddr(t *testing.T) string { return smqtest.DeadAddr(t) }

// silentServer accepts connections and never answers. Each accept is
// reported on the returned channel (while it has room); the connections are
// closed when the test ends.
func silentServer(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	l := listen(t)
	accepted := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String(), accepted
}

// countingDialer is a net.Dialer that records the addresses it dials.
type countingDialer struct {
	net.Dialer
	mu    sync.Mutex
	addrs []string
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	return d.Dialer.DialContext(ctx, network, addr)
}

// take returns and forgets the addresses dialled so far.
func (d *countingDialer) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.addrs
	d.addrs = nil
	return a
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// read reads one message under a deadline and decodes it.
func read(t *testing.T, c wire.Conn) smq.Message {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	msg, err := c.Read()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	m, err := smq.Decode(msg)
	if err != nil {
		t.Fatalf("decode %x: %v", msg, err)
	}
	return m
}

// readInit reads the broker's Init, which must be the first message.
func readInit(t *testing.T, c wire.Conn) smq.Init {
	t.Helper()
	m := read(t, c)
	init, ok := m.(smq.Init)
	if !ok {
		t.Fatalf("first message is %v, want Init", m.Type())
	}
	return init
}

func write(t *testing.T, c wire.Conn, m smq.Message) {
	t.Helper()
	if err := c.Write(m.Append(nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// login reads Init, sends Connect and expects an accepting Connack; it
// returns the ETID.
func login(t *testing.T, c wire.Conn, uid string) uint32 {
	t.Helper()
	readInit(t, c)
	write(t, c, smq.Connect{Version: 1, UID: uid})
	ack, ok := read(t, c).(smq.Connack)
	if !ok || ack.Code != smq.CodeAccepted {
		t.Fatalf("answer to Connect: %+v", ack)
	}
	return ack.ETID
}

func newDialer(t *testing.T, cfg upstream.Config) *upstream.Dialer {
	t.Helper()
	d, err := upstream.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dial dials and closes the Conn when the test ends.
func dial(t *testing.T, u upstream.Upstream, req upstream.Request) wire.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := u.Dial(ctx, req)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}
