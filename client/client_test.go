package client_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait on a channel.
const waitFor = smqtest.WaitFor

// testBroker is the embedded broker serving on a loopback listener.
type testBroker struct {
	b    *broker.Broker
	addr string
}

// startBroker serves a broker on 127.0.0.1:0, or on addr when given, over
// TLS when tlsConf is set. It is shut down at cleanup.
func startBroker(t *testing.T, cfg broker.Config, tlsConf *tls.Config, addr ...string) *testBroker {
	t.Helper()
	a := "127.0.0.1:0"
	if len(addr) > 0 {
		a = addr[0]
	}
	l, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBroker{b: broker.New(cfg), addr: l.Addr().String()}
	if tlsConf != nil {
		l = tls.NewListener(l, tlsConf)
	}
	errc := make(chan error, 1)
	go func() { errc <- tb.b.Serve(l) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if err := tb.b.Shutdown(ctx); err != nil {
				t.Errorf("broker shutdown: %v", err)
			}
			if err := <-errc; !errors.Is(err, broker.ErrClosed) {
				t.Errorf("broker serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return tb
}

func (tb *testBroker) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := tb.b.Shutdown(ctx); err != nil {
		t.Fatalf("broker shutdown: %v", err)
	}
}

func (tb *testBroker) url(scheme string) string { return scheme + "://" + tb.addr + "/smq" }

func dial(t *testing.T, url string, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context { return smqtest.Context(t) }

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return smqtest.Recv(t, ch, what)
}

// collect subscribes to topic and returns the channel its messages go to.
func collect(t *testing.T, c *client.Client, topic string) <-chan *client.Message {
	t.Helper()
	ch := make(chan *client.Message, 100)
	if _, err := c.Subscribe(ctxT(t), topic, func(m *client.Message) { ch <- m }); err != nil {
		t.Fatalf("subscribe %q: %v", topic, err)
	}
	return ch
}

type change struct{ id, count uint32 }

func observe(t *testing.T, c *client.Client, topic string) <-chan change {
	t.Helper()
	ch := make(chan change, 100)
	if err := c.Observe(ctxT(t), topic, func(id, n uint32) { ch <- change{id, n} }); err != nil {
		t.Fatalf("observe %q: %v", topic, err)
	}
	return ch
}

// waitCount waits for a Change with count n.
func waitCount(t *testing.T, ch <-chan change, n uint32) change {
	t.Helper()
	for {
		c := recv(t, ch, fmt.Sprintf("Change with count %d", n))
		if c.count == n {
			return c
		}
	}
}

var transports = []string{"http", "ws"}

func TestConnect(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			uids := make(chan string, 1)
			tb := startBroker(t, broker.Config{Authenticate: func(r *broker.ConnectRequest) (smq.ConnackCode, string) {
				uids <- r.Connect.UID + "|" + r.Connect.Credentials + "|" + r.Connect.Info + "|" + r.Peer.Header.Get("X-Device-Model")
				return smq.CodeAccepted, ""
			}}, nil)
			c := dial(t, tb.url(scheme), client.Options{UID: "device-0001", Credentials: "secret", Info: "v1",
				Header: http.Header{"X-Device-Model": {"m3"}, "Upgrade": {"h2c"}}})
			if c.ETID() == 0 {
				t.Error("ETID is 0")
			}
			if got := recv(t, uids, "Connect"); got != "device-0001|secret|v1|m3" {
				t.Errorf("broker saw %q", got)
			}
			rtt, err := c.Ping(ctxT(t))
			if err != nil || rtt <= 0 {
				t.Errorf("Ping = %v, %v", rtt, err)
			}
		})
	}
	t.Run("default uid", func(t *testing.T) {
		a := dial(t, tb.url("http"), client.Options{})
		b := dial(t, tb.url("http"), client.Options{})
		if a.ETID() == b.ETID() {
			t.Error("two clients with default options got one ETID: the random UIDs collide")
		}
	})
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	closed := smqtest.DeadAddr(t)
	for _, tc := range []struct {
		name, url string
		opts      client.Options
		want      string
	}{
		{"bad scheme", "mqtt://" + tb.addr, client.Options{}, `scheme must be http, https, ws or wss`},
		{"no host", "http:///smq", client.Options{}, "no host"},
		{"short uid", tb.url("http"), client.Options{UID: "abcde"}, `uid "abcde" is too short`},
		{"long credentials", tb.url("http"), client.Options{Credentials: strings.Repeat("x", 256)}, "credentials are 256 bytes"},
		{"refused tcp", "http://" + closed + "/smq", client.Options{}, "connection refused"},
		{"refused ws", "ws://" + closed + "/smq", client.Options{}, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.Dial(ctxT(t), tc.url, tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.HasPrefix(err.Error(), "client: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want client: ...%s...", err, tc.want)
			}
		})
	}
}

// TestDialErrorWording: a failed dial reads as the client's errors always
// have, and still says what failed as a *smqdial.Error.
func TestDialErrorWording(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	secure := startBroker(t, broker.Config{}, ca.Server(t).ServerConfig(nil))
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	webHost := strings.TrimPrefix(web.URL, "http://")
	for _, tc := range []struct {
		url, want string
		kind      smqdial.Kind
	}{
		{"http://" + webHost + "/smq", `client: bootstrap with ` + webHost + `: smq: bad bootstrap: broker answered "404 Not Found"`, smqdial.Bootstrap},
		{"ws://" + webHost + "/smq", "client: websocket upgrade refused by " + webHost + ": 404 Not Found", smqdial.Upgrade},
		{secure.url("https"), "client: tls handshake with " + secure.addr + ": tls: failed to verify certificate: ", smqdial.TLS},
		{secure.url("wss"), "client: tls handshake with " + secure.addr + ": tls: failed to verify certificate: ", smqdial.TLS},
	} {
		c, err := client.Dial(ctxT(t), tc.url, client.Options{})
		if err == nil {
			c.Close()
			t.Fatalf("%s: Dial succeeded", tc.url)
		}
		var e *smqdial.Error
		if !strings.HasPrefix(err.Error(), tc.want) || !errors.As(err, &e) || e.Kind != tc.kind {
			t.Errorf("%s: %v, want %q (%v)", tc.url, err, tc.want, tc.kind)
		}
	}
}

func TestIDCaching(t *testing.T) {
	t.Parallel()
	var topics, subtopics atomic.Int32
	tb := startBroker(t, broker.Config{
		PermitTopic:    func(*broker.Client, smq.Type, string) bool { topics.Add(1); return true },
		PermitSubTopic: func(*broker.Client, string) bool { subtopics.Add(1); return true },
	}, nil)
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			topics.Store(0)
			subtopics.Store(0)
			c := dial(t, tb.url(scheme), client.Options{})
			ctx := ctxT(t)
			tid1, err := c.Create(ctx, "a/b")
			if err != nil || tid1 == 0 {
				t.Fatalf("Create = %d, %v", tid1, err)
			}
			tid2, err := c.Create(ctx, "a/b")
			if err != nil || tid2 != tid1 {
				t.Fatalf("second Create = %d, %v; want %d", tid2, err, tid1)
			}
			// Subscribe must reach the broker once even though the TID is known.
			h := func(*client.Message) {}
			for i := range 2 {
				tid, err := c.Subscribe(ctx, "a/b", h)
				if err != nil || tid != tid1 {
					t.Fatalf("Subscribe #%d = %d, %v; want %d", i, tid, err, tid1)
				}
			}
			if err := c.Publish(ctx, "a/b", []byte("x")); err != nil {
				t.Fatal(err)
			}
			if n := topics.Load(); n != 2 {
				t.Errorf("broker saw %d Create/Subscribe, want 2", n)
			}
			s1, err := c.Createsub(ctx, "reply")
			if err != nil || s1 == 0 {
				t.Fatalf("Createsub = %d, %v", s1, err)
			}
			if s2, err := c.Createsub(ctx, "reply"); err != nil || s2 != s1 {
				t.Fatalf("second Createsub = %d, %v; want %d", s2, err, s1)
			}
			if n := subtopics.Load(); n != 1 {
				t.Errorf("broker saw %d Createsub, want 1", n)
			}
			// Concurrent first requests share one round trip.
			var wg sync.WaitGroup
			ids := make([]uint32, 8)
			for i := range ids {
				wg.Go(func() { ids[i], _ = c.Create(ctx, "concurrent") })
			}
			wg.Wait()
			for _, id := range ids {
				if id == 0 || id != ids[0] {
					t.Fatalf("concurrent Create IDs %v", ids)
				}
			}
			if n := topics.Load(); n != 3 {
				t.Errorf("broker saw %d Create/Subscribe after concurrent Creates, want 3", n)
			}
		})
	}
}

func TestDenied(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{
		PermitTopic:    func(_ *broker.Client, _ smq.Type, topic string) bool { return topic != "secret" },
		PermitSubTopic: func(*broker.Client, string) bool { return false },
	}, nil)
	c := dial(t, tb.url("http"), client.Options{})
	ctx := ctxT(t)
	if _, err := c.Subscribe(ctx, "secret", func(*client.Message) {}); !errors.Is(err, client.ErrDenied) {
		t.Errorf("Subscribe: %v, want ErrDenied", err)
	}
	if err := c.Publish(ctx, "secret", nil); !errors.Is(err, client.ErrDenied) {
		t.Errorf("Publish: %v, want ErrDenied", err)
	}
	if _, err := c.Createsub(ctx, "x"); !errors.Is(err, client.ErrDenied) || !strings.Contains(err.Error(), `sub-topic "x"`) {
		t.Errorf("Createsub: %v, want ErrDenied naming the sub-topic", err)
	}
	if _, err := c.Subscribe(ctx, "public", func(*client.Message) {}); err != nil {
		t.Errorf("Subscribe after denials: %v", err)
	}
}

func TestPublishSubscribe(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	for _, tc := range []struct{ pub, sub string }{
		{"http", "http"}, {"ws", "ws"}, {"http", "ws"}, {"ws", "http"},
	} {
		t.Run(tc.pub+"-to-"+tc.sub, func(t *testing.T) {
			topic := "t/" + tc.pub + "/" + tc.sub
			sub := dial(t, tb.url(tc.sub), client.Options{})
			pub := dial(t, tb.url(tc.pub), client.Options{})
			msgs := collect(t, sub, topic)
			ctx := ctxT(t)
			tid, err := pub.Create(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			payloads := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{0xAB}, client.MaxPayload)}
			for _, p := range payloads {
				if err := pub.Publish(ctx, topic, p); err != nil {
					t.Fatalf("publish %d bytes: %v", len(p), err)
				}
			}
			// The same in one batch, in order.
			if err := pub.PublishBatch(ctx, topic, payloads); err != nil {
				t.Fatalf("batch: %v", err)
			}
			if err := pub.PublishBatch(ctx, topic, [][]byte{[]byte("x"), make([]byte, client.MaxPayload+1)}); !errors.Is(err, smq.ErrTooBig) {
				t.Fatalf("batch with an oversize payload: %v", err)
			}
			for _, p := range append(payloads, payloads...) {
				m := recv(t, msgs, "message")
				if m.Topic != topic || m.TID != tid || m.PTID != pub.ETID() || m.SubTID != 0 {
					t.Errorf("got %+v, want topic %q tid %d ptid %d", m, topic, tid, pub.ETID())
				}
				if !bytes.Equal(m.Payload, p) {
					t.Errorf("payload of %d bytes, want %d", len(m.Payload), len(p))
				}
			}
		})
	}
}

func TestOneToOne(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			a := dial(t, tb.url(scheme), client.Options{})
			b := dial(t, tb.url("http"), client.Options{})
			inbox := collect(t, a, client.Self)
			ctx := ctxT(t)
			if err := b.PublishTo(ctx, a.ETID(), []byte("direct")); err != nil {
				t.Fatal(err)
			}
			m := recv(t, inbox, "one-to-one message")
			if m.Topic != client.Self || m.TID != a.ETID() || m.PTID != b.ETID() || string(m.Payload) != "direct" {
				t.Fatalf("got %+v", m)
			}
			// Reply to the sender, with a sub-topic both sides know by name.
			binbox := collect(t, b, client.Self)
			if _, err := b.Createsub(ctx, "answer"); err != nil {
				t.Fatal(err)
			}
			if err := a.PublishToSub(ctx, m.PTID, "answer", []byte("42")); err != nil {
				t.Fatal(err)
			}
			r := recv(t, binbox, "reply")
			if r.PTID != a.ETID() || r.SubTopic != "answer" || r.SubTID == 0 || string(r.Payload) != "42" {
				t.Fatalf("reply %+v", r)
			}
		})
	}
}

func TestSubTopic(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	sub := dial(t, tb.url("ws"), client.Options{})
	pub := dial(t, tb.url("http"), client.Options{})
	msgs := collect(t, sub, "sensors")
	ctx := ctxT(t)
	if err := pub.PublishSub(ctx, "sensors", "temperature", []byte("21.5")); err != nil {
		t.Fatal(err)
	}
	m := recv(t, msgs, "message")
	stid, err := pub.Createsub(ctx, "temperature")
	if err != nil {
		t.Fatal(err)
	}
	if m.SubTID != stid || m.SubTopic != "" {
		t.Errorf("got subtid %d name %q; want %d and no name (the subscriber never created it)", m.SubTID, m.SubTopic, stid)
	}
	if _, err := sub.Createsub(ctx, "temperature"); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishSub(ctx, "sensors", "temperature", []byte("22")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, msgs, "message"); m.SubTID != stid || m.SubTopic != "temperature" {
		t.Errorf("got subtid %d name %q; want %d temperature", m.SubTID, m.SubTopic, stid)
	}
}

func TestObserve(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			topic := "observed/" + scheme
			obs := dial(t, tb.url(scheme), client.Options{})
			changes := observe(t, obs, topic)
			tid, _ := obs.Create(ctxT(t), topic)
			if c := recv(t, changes, "first Change"); c != (change{tid, 0}) {
				t.Fatalf("first Change %+v, want {%d 0}", c, tid)
			}
			sub := dial(t, tb.url("http"), client.Options{})
			collect(t, sub, topic)
			waitCount(t, changes, 1)
			if err := sub.Unsubscribe(ctxT(t), topic); err != nil {
				t.Fatal(err)
			}
			waitCount(t, changes, 0)
			collect(t, sub, topic)
			waitCount(t, changes, 1)

			gone := make(chan change, 1)
			if err := obs.ObserveETID(ctxT(t), sub.ETID(), func(id, n uint32) { gone <- change{id, n} }); err != nil {
				t.Fatal(err)
			}
			sub.Close()
			if c := recv(t, gone, "peer gone"); c != (change{sub.ETID(), 0}) {
				t.Errorf("peer Change %+v, want {%d 0}", c, sub.ETID())
			}
			waitCount(t, changes, 0)

			// After Unobserve no more Changes arrive; a Ping round trip
			// shows the broker has handled what came before it.
			if err := obs.Unobserve(ctxT(t), topic); err != nil {
				t.Fatal(err)
			}
			other := dial(t, tb.url("http"), client.Options{})
			collect(t, other, topic)
			if _, err := other.Ping(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if _, err := obs.Ping(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			select {
			case c := <-changes:
				t.Errorf("Change %+v after Unobserve", c)
			default:
			}
		})
	}
}

func TestRefused(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{Authenticate: func(r *broker.ConnectRequest) (smq.ConnackCode, string) {
		if r.Connect.Credentials == "quiet" {
			return smq.CodeAccessDenied, ""
		}
		return smq.CodeCertRequired, "present a certificate issued by the device CA"
	}}, nil)
	for _, tc := range []struct {
		scheme, cred string
		code         smq.ConnackCode
		reason, text string
	}{
		{"http", "", smq.CodeCertRequired, "present a certificate issued by the device CA",
			"connection refused by broker: 0x04 client certificate required: present a certificate issued by the device CA"},
		{"ws", "", smq.CodeCertRequired, "present a certificate issued by the device CA",
			"connection refused by broker: 0x04 client certificate required: present a certificate issued by the device CA"},
		{"http", "quiet", smq.CodeAccessDenied, "", "connection refused by broker: 0x06 access denied"},
	} {
		t.Run(tc.scheme+"/"+tc.code.Text(), func(t *testing.T) {
			c, err := client.Dial(ctxT(t), tb.url(tc.scheme), client.Options{Credentials: tc.cred, Reconnect: true})
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			var re *client.RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("error %T %v, want *client.RefusedError", err, err)
			}
			if re.Code != tc.code || re.Reason != tc.reason {
				t.Errorf("got code %v reason %q", re.Code, re.Reason)
			}
			if err.Error() != tc.text {
				t.Errorf("Error() = %q, want %q", err, tc.text)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	srv := ca.Server(t, "127.0.0.1")
	leaf := ca.Client(t, "device-7")
	tb := startBroker(t, broker.Config{}, srv.ServerConfig(ca.Pool))
	for _, scheme := range []string{"https", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			opts := client.Options{RootCAs: ca.Pool, Certificate: &leaf.TLS}
			sub := dial(t, tb.url(scheme), opts)
			pub := dial(t, tb.url(scheme), client.Options{TLSConfig: &tls.Config{
				RootCAs: ca.Pool, Certificates: []tls.Certificate{leaf.TLS}}})
			msgs := collect(t, sub, "secure")
			if err := pub.Publish(ctxT(t), "secure", []byte("over tls")); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, msgs, "message"); string(m.Payload) != "over tls" {
				t.Errorf("payload %q", m.Payload)
			}
		})
		t.Run(scheme+"/unknown CA", func(t *testing.T) {
			_, err := client.Dial(ctxT(t), tb.url(scheme), client.Options{Certificate: &leaf.TLS})
			var ue x509.UnknownAuthorityError
			if err == nil || !errors.As(err, &ue) {
				t.Errorf("error %v, want x509.UnknownAuthorityError", err)
			}
		})
		t.Run(scheme+"/no client certificate", func(t *testing.T) {
			_, err := client.Dial(ctxT(t), tb.url(scheme), client.Options{RootCAs: ca.Pool})
			if err == nil {
				t.Fatal("Dial succeeded without the required client certificate")
			}
		})
	}
}

func TestDialer(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			d := &countingDialer{}
			c := dial(t, tb.url(scheme), client.Options{Dialer: d})
			if _, err := c.Ping(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if n := d.n.Load(); n != 1 {
				t.Errorf("dialer used %d times, want 1", n)
			}
			if got := d.addr.Load(); got == nil || *got != tb.addr {
				t.Errorf("dialer asked for %v, want %s", got, tb.addr)
			}
		})
	}
	t.Run("error", func(t *testing.T) {
		_, err := client.Dial(ctxT(t), tb.url("ws"), client.Options{Dialer: failingDialer{}})
		if err == nil || !strings.Contains(err.Error(), "proxy says no") {
			t.Errorf("error %v, want the dialer's", err)
		}
	})
}

type countingDialer struct {
	n    atomic.Int32
	addr atomic.Pointer[string]
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	d.addr.Store(&addr)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

type failingDialer struct{}

func (failingDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("proxy says no")
}

func TestOversize(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			c := dial(t, tb.url(scheme), client.Options{})
			msgs := collect(t, c, "big")
			ctx := ctxT(t)
			err := c.Publish(ctx, "big", make([]byte, client.MaxPayload+1))
			if !errors.Is(err, smq.ErrTooBig) || !strings.Contains(err.Error(), "65521 bytes") {
				t.Fatalf("error %v, want smq.ErrTooBig naming the size", err)
			}
			// The stream is intact: the next message arrives.
			if err := c.Publish(ctx, "big", []byte("after")); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, msgs, "message"); string(m.Payload) != "after" {
				t.Errorf("payload %q", m.Payload)
			}
		})
	}
}

func TestTakeover(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	states := make(chan client.StateChange, 10)
	first := dial(t, tb.url("http"), client.Options{UID: "same-uid-1", Reconnect: true,
		MinBackoff: time.Millisecond, OnState: func(s client.StateChange) { states <- s }})
	if s := recv(t, states, "state"); s.State != client.Connected || s.ETID != first.ETID() {
		t.Fatalf("first state %+v", s)
	}
	second := dial(t, tb.url("ws"), client.Options{UID: "same-uid-1"})
	recv(t, first.Done(), "first client to end")
	var de *client.DisconnectError
	if err := first.Err(); !errors.As(err, &de) || de.Reason != "reconnect" {
		t.Fatalf("Err() = %v, want Disconnect reconnect", err)
	}
	if s := recv(t, states, "state"); s.State != client.Closed || !errors.As(s.Err, &de) {
		t.Errorf("last state %+v, want Closed with the Disconnect", s)
	}
	if second.ETID() != first.ETID() {
		t.Errorf("second connection ETID %d, want the first's %d", second.ETID(), first.ETID())
	}
	if _, err := first.Ping(ctxT(t)); !errors.As(err, &de) {
		t.Errorf("Ping after the end: %v, want the Disconnect", err)
	}
}

func TestReconnect(t *testing.T) {
	t.Parallel()
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			states := make(chan client.StateChange, 10)
			tb := startBroker(t, broker.Config{}, nil)
			c := dial(t, tb.url(scheme), client.Options{Reconnect: true,
				MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
				OnState: func(s client.StateChange) { states <- s }})
			recv(t, states, "Connected")
			msgs := collect(t, c, "survives")
			inbox := collect(t, c, client.Self)
			changes := observe(t, c, "watched")
			waitCount(t, changes, 0)

			tb.shutdown(t)
			s := recv(t, states, "Reconnecting")
			var de *client.DisconnectError
			if s.State != client.Reconnecting || !errors.As(s.Err, &de) || de.Reason != "shutdown" {
				t.Fatalf("state %+v, want Reconnecting after Disconnect shutdown", s)
			}
			// A new broker on the same address: new IDs, nothing subscribed.
			tb2 := startBroker(t, broker.Config{}, nil, tb.addr)
			s = recv(t, states, "Connected again")
			if s.State != client.Connected || s.ETID == 0 || s.ETID != c.ETID() {
				t.Fatalf("state %+v (ETID() %d), want Connected", s, c.ETID())
			}
			waitCount(t, changes, 0) // re-observed
			pub := dial(t, tb2.url("http"), client.Options{})
			collect(t, pub, "watched")
			waitCount(t, changes, 1)
			ctx := ctxT(t)
			if err := pub.Publish(ctx, "survives", []byte("again")); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, msgs, "message after reconnect"); string(m.Payload) != "again" || m.PTID != pub.ETID() {
				t.Errorf("got %+v", m)
			}
			if err := pub.PublishTo(ctx, c.ETID(), []byte("direct")); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, inbox, "one-to-one after reconnect"); string(m.Payload) != "direct" {
				t.Errorf("got %+v", m)
			}
			// The client publishes with its new ETID.
			mine := collect(t, pub, "back")
			if err := c.Publish(ctx, "back", []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, mine, "message from the reconnected client"); m.PTID != c.ETID() {
				t.Errorf("got %+v", m)
			}
			c.Close()
			if s := recv(t, states, "Closed"); s.State != client.Closed || !errors.Is(s.Err, client.ErrClosed) {
				t.Errorf("state %+v, want Closed", s)
			}
		})
	}
}

// fakeBroker accepts one raw SMQ client on a loopback port, checks its
// bootstrap request and its Connect, answers them (Connack with ETID 99), and
// then runs after on the connection's message stream. done is closed when it
// has finished.
func fakeBroker(t *testing.T, after func(r *smq.Reader)) (url string, done <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		conn, err := l.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Errorf("bootstrap request: %v", err)
			return
		}
		if req.Method != "GET" || req.URL.Path != "/smq" || req.Header.Get("SimpleMQ") == "" ||
			req.Header.Get("SendSmqHttpResponse") != "true" {
			t.Errorf("bootstrap request %s %s %v", req.Method, req.URL, req.Header)
		}
		frame, _ := smq.AppendRawMessage([]byte(smq.ResponseHead), smq.Init{Version: 1, Seed: 7, IP: "127.0.0.1"})
		conn.Write(frame)
		r := smq.NewReader(br)
		msg, err := r.Read()
		if err != nil {
			t.Errorf("reading Connect: %v", err)
			return
		}
		if m, err := smq.Decode(msg); err != nil || m.Type() != smq.TypeConnect || m.(smq.Connect).UID != "fake-client" {
			t.Errorf("Connect %v %v", m, err)
		}
		frame, _ = smq.AppendRawMessage(nil, smq.Connack{ETID: 99})
		conn.Write(frame)
		after(r)
	}()
	return "http://" + l.Addr().String() + "/smq", finished
}

// TestDeadBroker runs against a peer that completes the handshake and then
// never answers: keepalive must notice.
func TestDeadBroker(t *testing.T) {
	t.Parallel()
	url, done := fakeBroker(t, func(r *smq.Reader) {
		for { // read and never answer
			if _, err := r.Read(); err != nil {
				return
			}
		}
	})
	c := dial(t, url, client.Options{UID: "fake-client", PingIdle: 20 * time.Millisecond, PongTimeout: 50 * time.Millisecond})
	if c.ETID() != 99 {
		t.Errorf("ETID %d", c.ETID())
	}
	recv(t, c.Done(), "keepalive to end the client")
	if err := c.Err(); !errors.Is(err, client.ErrNoPong) {
		t.Errorf("Err() = %v, want ErrNoPong", err)
	}
	c.Close()
	recv(t, done, "fake broker to finish")
}

// TestCloseOnTheWire checks the bytes Close sends: a Disconnect frame, then
// the end of the stream.
func TestCloseOnTheWire(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	url, done := fakeBroker(t, func(r *smq.Reader) {
		msg, err := r.Read()
		got <- fmt.Sprintf("% x %v", msg, err)
		_, err = r.Read()
		got <- fmt.Sprint(err)
	})
	c := dial(t, url, client.Options{UID: "fake-client"})
	c.Close()
	if s := recv(t, got, "Disconnect"); s != "0b <nil>" {
		t.Errorf("after Close the broker read %q, want a Disconnect (0b)", s)
	}
	if s := recv(t, got, "end of stream"); s != "EOF" {
		t.Errorf("after the Disconnect the broker read %q, want EOF", s)
	}
	recv(t, done, "fake broker to finish")
}

func TestHandlerReentry(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, broker.Config{}, nil)
	c := dial(t, tb.url("http"), client.Options{})
	got := make(chan string, 1)
	ctx := ctxT(t)
	// A handler subscribing and publishing (which waits for acks read by
	// the reader) must not deadlock.
	_, err := c.Subscribe(ctx, "first", func(m *client.Message) {
		if _, err := c.Subscribe(ctx, "second", func(m *client.Message) { got <- string(m.Payload) }); err != nil {
			t.Error(err)
		}
		if err := c.Publish(ctx, "second", []byte("from handler")); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "first", nil); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, got, "message"); s != "from handler" {
		t.Errorf("got %q", s)
	}
	// Close from a handler returns.
	closed := make(chan struct{})
	if _, err := c.Subscribe(ctx, "close", func(*client.Message) { c.Close(); close(closed) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "close", nil); err != nil {
		t.Fatal(err)
	}
	recv(t, closed, "Close from a handler")
	recv(t, c.Done(), "Done")
}

func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tb := startBroker(t, broker.Config{}, nil)
	for _, scheme := range transports {
		ctx := context.Background()
		c, err := client.Dial(ctx, tb.url(scheme), client.Options{Reconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		gone := make(chan struct{})
		watcher, err := client.Dial(ctx, tb.url("http"), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := watcher.ObserveETID(ctx, c.ETID(), func(uint32, uint32) { close(gone) }); err != nil {
			t.Fatal(err)
		}
		if _, err := watcher.Ping(ctx); err != nil { // the Observe has been handled
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctx, "x", func(*client.Message) {}); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		recv(t, gone, "broker to see the client go")
		select {
		case <-c.Done():
		default:
			t.Error("Done not closed after Close")
		}
		if err := c.Err(); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Err() = %v", err)
		}
		if err := c.Publish(ctx, "x", nil); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Publish after Close: %v", err)
		}
		if _, err := c.Subscribe(ctx, "y", func(*client.Message) {}); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Subscribe after Close: %v", err)
		}
		c.Close() // idempotent
		watcher.Close()
	}
	tb.shutdown(t)
}

// stalledWSBroker accepts one WebSocket client, answers its Connect
// (Connack with ETID 99), and then reads nothing until release is closed.
func stalledWSBroker(t *testing.T, release <-chan struct{}) (url string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		if err := ws.WriteMessage(websocket.BinaryMessage, smq.Init{Version: 1, Seed: 7, IP: "127.0.0.1"}.Append(nil)); err != nil {
			t.Error(err)
			return
		}
		if _, msg, err := ws.ReadMessage(); err != nil || smq.Type(msg[0]) != smq.TypeConnect {
			t.Errorf("reading Connect: % x %v", msg, err)
			return
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, smq.Connack{ETID: 99}.Append(nil)); err != nil {
			t.Error(err)
			return
		}
		<-release
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/smq"
}

// TestWriteTimeout checks that WriteTimeout ends a session whose broker
// stops reading, on both transports.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	for _, scheme := range transports {
		t.Run(scheme, func(t *testing.T) {
			release := make(chan struct{})
			var url string
			if scheme == "ws" {
				url = stalledWSBroker(t, release)
			} else {
				var done <-chan struct{}
				url, done = fakeBroker(t, func(*smq.Reader) { <-release })
				t.Cleanup(func() { recv(t, done, "fake broker to finish") })
			}
			defer close(release)
			c := dial(t, url, client.Options{UID: "fake-client", PingIdle: -1, WriteTimeout: 50 * time.Millisecond})
			// Without a working timeout a write blocks for good: cut it short.
			defer time.AfterFunc(waitFor, func() { c.Close() }).Stop()
			payload := make([]byte, client.MaxPayload)
			start := time.Now()
			var err error
			for err == nil && time.Since(start) < waitFor {
				err = c.PublishTo(ctxT(t), 99, payload)
			}
			var ne net.Error // gorilla hides os.ErrDeadlineExceeded
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("publishing to a broker that does not read: %v, want a write timeout", err)
			}
			recv(t, c.Done(), "the session to end")
		})
	}
}
