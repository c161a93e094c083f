package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// quick are the limits of the liveness tests: small enough that a test
// sees a timeout in well under a second.
var quick = limits.Limits{
	WSPingInterval: 100 * time.Millisecond,
	IdleTimeout:    300 * time.Millisecond,
	ConnectTimeout: 500 * time.Millisecond,
}

// slack is how much later than a quick limit a test accepts that it took
// effect: room for a machine loaded by other tests, and still far below
// the defaults (10 s to connect, 30 min idle) it tells the quick limits
// from.
const slack = 3 * time.Second

// logSink collects a gateway's log as JSON lines (slog's JSON handler
// writes one record per Write) and passes each "session" record on.
type logSink struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	sessions chan map[string]any
}

func newLogSink() *logSink { return &logSink{sessions: make(chan map[string]any, 64)} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	var rec map[string]any
	if json.Unmarshal(p, &rec) == nil && rec["msg"] == "session" {
		select {
		case l.sessions <- rec:
		default: // the tests never log that many sessions
		}
	}
	return len(p), nil
}

// records returns every record logged so far with message msg.
func (l *logSink) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(l.buf.Bytes()) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// nextSession waits for the next "session" record.
func (l *logSink) nextSession(t *testing.T) map[string]any {
	t.Helper()
	select {
	case rec := <-l.sessions:
		return rec
	case <-time.After(smqtest.WaitFor):
		t.Fatal("no session log line")
		return nil
	}
}

// noSession fails if a session has ended (and logged) already.
func (l *logSink) noSession(t *testing.T) {
	t.Helper()
	select {
	case rec := <-l.sessions:
		t.Fatalf("a session ended: %v", rec)
	default:
	}
}

// rigOptions shape a rig; the zero value is a plain broker behind a gateway
// with the default limits.
type rigOptions struct {
	broker broker.Config
	limits limits.Limits
	// routes are more routes, besides /open, /optional and /require; those
	// without an upstream get the LAN broker.
	routes []*gateway.Route
	// upstreamDialer opens the gateway's connections to the broker; nil: a
	// net.Dialer.
	upstreamDialer upstream.ContextDialer
}

// rig is a LAN broker on loopback, reached over raw SMQ, behind a gateway
// with a TLS listener "edge" whose log goes to logs.
type rig struct {
	broker     *broker.Broker
	brokerAddr string
	gw         *gateway.Gateway
	addr       string
	ca         *testpki.CA
	clientCA   *testpki.CA
	logs       *logSink
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{ca: testpki.NewCA(t), clientCA: testpki.NewCA(t), logs: newLogSink()}
	bl := smqtest.Listen(t)
	r.broker = apptest.Broker(t, o.broker, bl)
	r.brokerAddr = bl.Addr().String()
	lan, err := upstream.New(upstream.Config{Name: "lan", URLs: []string{"http://" + r.brokerAddr + "/smq"},
		Dialer: o.upstreamDialer})
	if err != nil {
		t.Fatal(err)
	}
	policy := func(mode tlsterm.Mode) *tlsterm.Policy {
		p, err := tlsterm.NewPolicy(tlsterm.PolicyConfig{Mode: mode, ClientCAs: r.clientCA.Pool})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, route := range o.routes {
		if route.Upstream == nil {
			route.Upstream = lan
		}
	}
	server := r.ca.Server(t, "127.0.0.1")
	r.gw = runGateway(t, gateway.Config{
		Logger: slog.New(slog.NewJSONHandler(r.logs, nil)),
		Limits: o.limits,
		Listeners: []gateway.Listener{{
			Name:     "edge",
			Listener: smqtest.Listen(t),
			Certs:    (*certs.Static)(&server.TLS),
			Routes: append([]*gateway.Route{
				{Path: "/open", Upstream: lan},
				{Path: "/optional", Upstream: lan, Policy: policy(tlsterm.Optional)},
				{Path: "/require", Upstream: lan, Policy: policy(tlsterm.Require)},
			}, o.routes...),
		}},
	})
	r.addr = r.gw.Addr("edge").String()
	return r
}

// rawTLS opens a TLS connection to the gateway from the local address
// local ("" for any) with an optional client certificate, and sends
// nothing.
func (r *rig) rawTLS(t *testing.T, local string, cert *tls.Certificate) *smqtest.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: smqtest.WaitFor}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	cfg := &tls.Config{RootCAs: r.ca.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.DialWithDialer(d, "tcp", r.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return smqtest.New(t, conn)
}

// bootstrap is the raw SMQ bootstrap request for path, C-client style (no
// HTTP answer), with extra header lines.
func (r *rig) bootstrap(path string, lines ...string) []byte {
	return smqtest.RawRequest("GET "+path+" HTTP/1.1", append([]string{"Host: " + r.addr, "SimpleMQ: 1"}, lines...)...)
}

// raw opens a raw-over-TLS session on path and reads Init.
func (r *rig) raw(t *testing.T, path string) *smqtest.Conn {
	t.Helper()
	c := r.rawTLS(t, "", nil)
	c.WriteBytes(r.bootstrap(path))
	c.ReadInit()
	return c
}

// wss opens a WebSocket to path through the gateway, from the local address
// local ("" for any), and reads nothing.
func (r *rig) wss(t *testing.T, local, path string, h http.Header) *websocket.Conn {
	t.Helper()
	nd := &net.Dialer{Timeout: smqtest.WaitFor}
	if local != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	d := websocket.Dialer{NetDialContext: nd.DialContext, TLSClientConfig: &tls.Config{RootCAs: r.ca.Pool},
		HandshakeTimeout: smqtest.WaitFor}
	ws, _, err := d.Dial("wss://"+r.addr+path, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// wsRead reads one SMQ message from a WebSocket.
func wsRead(t *testing.T, ws *websocket.Conn) smq.Message {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	typ, p, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("websocket read: %v", err)
	}
	if typ != websocket.BinaryMessage {
		t.Fatalf("websocket message of type %d, want binary", typ)
	}
	m, err := smq.Decode(p)
	if err != nil {
		t.Fatalf("undecodable message % x: %v", p, err)
	}
	return m
}

func wsSend(t *testing.T, ws *websocket.Conn, m smq.Message) {
	t.Helper()
	ws.SetWriteDeadline(time.Now().Add(smqtest.WaitFor))
	if err := ws.WriteMessage(websocket.BinaryMessage, m.Append(nil)); err != nil {
		t.Fatal(err)
	}
}

// wsLogin reads Init, sends Connect with uid and returns the ETID of the
// accepting Connack.
func wsLogin(t *testing.T, ws *websocket.Conn, uid string) uint32 {
	t.Helper()
	if m := wsRead(t, ws); m.Type() != smq.TypeInit {
		t.Fatalf("got %v, want Init", m.Type())
	}
	wsSend(t, ws, smq.Connect{Version: 1, UID: uid})
	ack, ok := wsRead(t, ws).(smq.Connack)
	if !ok || ack.Code != smq.CodeAccepted {
		t.Fatalf("got %+v, want an accepting Connack", ack)
	}
	return ack.ETID
}

// wsClose reads until the gateway closes the WebSocket and returns the close
// error, failing on anything but close frame.
func wsClose(t *testing.T, ws *websocket.Conn) *websocket.CloseError {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	_, p, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("got % x, %v; want a close frame", p, err)
	}
	return ce
}

// watchETID connects an observer straight to the broker and has it observe
// etid; the returned function waits for Change(etid, 0), the broker's word
// that the session with that ETID has ended.
func (r *rig) watchETID(t *testing.T, etid uint32) (gone func()) {
	t.Helper()
	obs := smqtest.Connect(t, r.brokerAddr, fmt.Sprintf("observer-%08x", etid))
	obs.Send(smq.Observe{ID: etid})
	return func() {
		t.Helper()
		obs.ExpectMessage(smq.Change{ID: etid, Count: 0})
	}
}

func wantReason(t *testing.T, rec map[string]any, reason string) {
	t.Helper()
	if rec["reason"] != reason {
		t.Fatalf("session ended with reason %v, want %s: %v", rec["reason"], reason, rec)
	}
}

// TestWebSocketPingTimeout: a WebSocket client that never reads never
// answers the gateway's pings; its session ends, upstream too.
func TestWebSocketPingTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{limits: quick})
	ws := r.wss(t, "", "/open", nil)
	etid := wsLogin(t, ws, "ws-deaf-client")
	start := time.Now()
	gone := r.watchETID(t, etid)
	// From here on the client reads nothing until the broker says its
	// session is over.
	gone()
	if d := time.Since(start); d > quick.IdleTimeout+slack {
		t.Errorf("the upstream session ended %v after Connack", d)
	}
	ce := wsClose(t, ws)
	if ce.Code != websocket.CloseGoingAway || !strings.Contains(ce.Text, "ping") {
		t.Errorf("close %d %q, want 1001 about the ping", ce.Code, ce.Text)
	}
	ws.Close()
	wantReason(t, r.logs.nextSession(t), "ping_timeout")
}

// TestWebSocketPongsAreLiveness: a WebSocket client that sends nothing but
// answers pings (gorilla does, while reading) outlives the idle timeout.
func TestWebSocketPongsAreLiveness(t *testing.T) {
	t.Parallel()
	// Each pong must reach the gateway within a ping interval, over and
	// over: quick's 100 ms, and 250 ms, were too tight for a machine loaded
	// by other tests.
	lim := limits.Limits{WSPingInterval: time.Second, IdleTimeout: 2500 * time.Millisecond}
	r := newRig(t, rigOptions{limits: lim})
	ws := r.wss(t, "", "/open", nil)
	wsLogin(t, ws, "ws-quiet-client")
	start := time.Now()
	pings := make(chan struct{}, 100)
	ws.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	msgs := make(chan []byte, 1)
	readErr := make(chan error, 1)
	ws.SetReadDeadline(time.Now().Add(2*lim.IdleTimeout + smqtest.WaitFor))
	go func() {
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			msgs <- p
		}
	}()
	// Pings come every other interval to a client that answers them: wait
	// for enough to span two idle timeouts.
	for n := 0; n < 3 || time.Since(start) < 2*lim.IdleTimeout; n++ {
		select {
		case <-pings:
		case err := <-readErr:
			t.Fatalf("after %d pings (%v): %v", n, time.Since(start), err)
		case <-time.After(smqtest.WaitFor):
			t.Fatalf("no ping after %d", n)
		}
	}
	r.logs.noSession(t)
	// Still relaying.
	wsSend(t, ws, smq.Ping{})
	select {
	case p := <-msgs:
		if !bytes.Equal(p, smq.Pong{}.Append(nil)) {
			t.Fatalf("got % x, want Pong", p)
		}
	case err := <-readErr:
		t.Fatal(err)
	}
	ws.Close()
	<-readErr
}

// TestRawIdleTimeout: a raw client that sends nothing after Connack gets
// Disconnect "idle timeout" and the end of the stream.
func TestRawIdleTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{limits: quick})
	c := r.raw(t, "/open")
	start := time.Now() // the idle clock starts later, at the Connack
	c.Login("raw-idle-client")
	c.Timeout = quick.IdleTimeout + 2*slack
	c.ExpectMessage(smq.Disconnect{Reason: "idle timeout"})
	d := time.Since(start)
	c.ExpectClosed()
	if d < quick.IdleTimeout || d > quick.IdleTimeout+slack {
		t.Errorf("idle timeout after %v, want about %v", d, quick.IdleTimeout)
	}
	rec := r.logs.nextSession(t)
	wantReason(t, rec, "idle_timeout")
}

// smallBufDialer dials TCP connections with a 64 KiB receive buffer.
type smallBufDialer struct{}

func (smallBufDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestSlowReader: a subscriber that stops reading while a publisher floods
// its topic neither slows the publisher nor another subscriber, is ended,
// and costs bounded memory. Not parallel: it measures the process's heap.
func TestSlowReader(t *testing.T) {
	const (
		payload   = 60000
		flood     = 200 << 20
		n         = flood / payload
		window    = 12 // publishes the fast subscriber may lag behind
		heapBound = 64 << 20
	)
	// Small socket buffers on the gateway's upstream leg, so that the slow
	// path fills after a few MB rather than tens.
	r := newRig(t, rigOptions{
		broker:         broker.Config{QueueBytes: 1 << 20},
		limits:         limits.Limits{ConnectTimeout: 2 * time.Second},
		upstreamDialer: smallBufDialer{},
	})
	topic := "flood"

	fast := r.raw(t, "/open")
	fast.Login("fast-subscriber")
	tid := fast.Subscribe(topic)

	slowConn := r.rawTLS(t, "", nil)
	if tc, ok := slowConn.NetConn.(*tls.Conn).NetConn().(*net.TCPConn); ok {
		tc.SetReadBuffer(16 << 10)
	}
	slowConn.WriteBytes(r.bootstrap("/open"))
	slowConn.ReadInit()
	slowConn.Login("slow-subscriber")
	if got := slowConn.Subscribe(topic); got != tid {
		t.Fatalf("tid %#x, want %#x", got, tid)
	}
	// The slow subscriber reads nothing more but keeps sending a Ping every
	// 50 ms, like a live client whose reader is stuck: the idle timeout (the
	// default, 30 min) plays no part. The broker drops its upstream session
	// as a slow consumer; its Disconnect cannot be relayed (the gateway's
	// write to this client is blocked), so the gateway learns of it when a
	// Ping fails to go upstream, and then cuts the blocked write short.
	stopPing := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		frame, _ := smq.AppendRawMessage(nil, smq.Ping{})
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopPing:
				return
			case <-tick.C:
			}
			slowConn.NetConn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := slowConn.NetConn.Write(frame); err != nil {
				return
			}
		}
	}()
	defer func() { close(stopPing); <-pinged }()

	pub := r.raw(t, "/open")
	pub.Login("flood-publisher")

	// The fast subscriber checks every message and reports each.
	received := make(chan int, n)
	fastErr := make(chan error, 1)
	go func() {
		defer close(fastErr)
		for i := range n {
			f, err := fast.ReadFrame(smqtest.WaitFor)
			if err != nil {
				fastErr <- fmt.Errorf("message %d: %w", i, err)
				return
			}
			p, err := smq.DecodePublish(f.Msg)
			if err != nil || p.TID != tid || len(p.Payload) != payload || binary.BigEndian.Uint32(p.Payload) != uint32(i) {
				fastErr <- fmt.Errorf("message %d: %s", i, smqtest.Describe(f.Msg))
				return
			}
			received <- i
		}
	}()

	// next waits for the fast subscriber to receive one more message.
	got := 0
	next := func() {
		t.Helper()
		select {
		case <-received:
			got++
		case <-time.After(smqtest.WaitFor):
			err := <-fastErr // closed once the reader is done
			t.Fatalf("the fast subscriber is stuck after %d of %d messages: %v", got, n, err)
		}
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	body := make([]byte, payload)
	frame := make([]byte, 0, payload+32)
	start := time.Now()
	for i := range n {
		if i >= window {
			next()
		}
		binary.BigEndian.PutUint32(body, uint32(i))
		frame, _ = smq.AppendRawMessage(frame[:0], &smq.Publish{TID: tid, PTID: pub.ETID, Payload: body})
		pub.WriteBytes(frame)
		if i%256 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	for range min(n, window) {
		next()
	}
	if err := <-fastErr; err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)
	t.Logf("flooded %d MB in %v; heap in use grew by %.1f MB at most", flood>>20, time.Since(start),
		float64(peak-base)/(1<<20))
	if peak-base > heapBound {
		t.Errorf("heap in use grew by %d MB, want under %d", (peak-base)>>20, heapBound>>20)
	}
	pub.Barrier()  // the publisher is still connected
	fast.Barrier() // and so is the fast subscriber

	rec := r.logs.nextSession(t)
	t.Logf("slow session: %v", rec)
	if rec["msgs_in"] == nil || !slices.Contains([]any{"write_error", "upstream_closed"}, rec["reason"]) {
		t.Fatalf("slow session: %v", rec)
	}
	if n := r.broker.Stats().SlowDisconnects; n != 1 {
		t.Errorf("the broker disconnected %d slow consumers, want 1", n)
	}
	r.logs.noSession(t)
}

// TestHeadersUpstream: the broker sees the client's address and verified
// identity as set by the gateway, whatever the client claims, and the
// client's other headers.
func TestHeadersUpstream(t *testing.T) {
	t.Parallel()
	connects := make(chan broker.ConnectRequest, 4)
	r := newRig(t, rigOptions{
		limits: limits.Limits{ConnectTimeout: 2 * time.Second},
		broker: broker.Config{
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
			Authenticate: func(req *broker.ConnectRequest) (smq.ConnackCode, string) {
				connects <- *req
				return smq.CodeAccepted, ""
			},
		},
	})
	// The client connects from another loopback address than the gateway's
	// upstream leg, so that the two are told apart.
	local := "127.0.0.2"
	if l, err := net.Listen("tcp", local+":0"); err != nil {
		t.Logf("no %s here (%v): client and gateway share 127.0.0.1", local, err)
		local = "127.0.0.1"
	} else {
		l.Close()
	}
	spiffe, _ := url.Parse("spiffe://example.org/device/1")
	cert := r.clientCA.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-1", OrganizationalUnit: []string{"lab"}},
		URIs:        []*url.URL{spiffe},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	fp := sha256.Sum256(cert.Cert.Raw)
	forged := []string{
		"x-smq-client-cn: forged", "X-SMQ-CLIENT-SUBJECT: CN=forged", "X-Smq-Client-San-Uri: spiffe://evil/x",
		"X-SMQ-Client-Fingerprint: sha256:00", "X-Forwarded-For: 203.0.113.7", "Forwarded: for=203.0.113.7",
		"X-Real-IP: 203.0.113.7", "Authorization: Bearer t0k3n", "Cookie: session=abc",
		// Underscore forms, other forwarding headers, our own session ID.
		"X_smq_client_cn: forged", "X_SMQ_CLIENT_FINGERPRINT: sha256:00", "X-Forwarded-Host: evil.example",
		"X-Forwarded-Proto: http", "X_Forwarded_For: 203.0.113.7", "Client-Ip: 203.0.113.7",
		"True-Client-IP: 203.0.113.7", "X-Smq-Session: forged",
	}
	forgedHeader := http.Header{}
	for _, l := range forged {
		k, v, _ := strings.Cut(l, ": ")
		forgedHeader[k] = []string{v} // as sent, not canonicalised
	}
	identity := http.Header{
		gateway.HeaderCN:          {"device-1"},
		gateway.HeaderSubject:     {cert.Cert.Subject.String()},
		gateway.HeaderSANURI:      {"spiffe://example.org/device/1"},
		gateway.HeaderFingerprint: {"sha256:" + hex.EncodeToString(fp[:])},
	}
	for _, tc := range []struct {
		name, path string
		ws         bool
		cert       *tls.Certificate
		identity   http.Header
	}{
		{"raw with certificate", "/require", false, &cert.TLS, identity},
		{"raw without certificate", "/optional", false, nil, nil},
		{"wss with certificate", "/require", true, &cert.TLS, identity},
		{"wss without certificate", "/optional", true, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid := "hdr-" + strings.ReplaceAll(tc.name, " ", "-")
			var initIP string
			if tc.ws {
				nd := &net.Dialer{Timeout: smqtest.WaitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
				cfg := &tls.Config{RootCAs: r.ca.Pool}
				if tc.cert != nil {
					cfg.Certificates = []tls.Certificate{*tc.cert}
				}
				d := websocket.Dialer{NetDialContext: nd.DialContext, TLSClientConfig: cfg, HandshakeTimeout: smqtest.WaitFor}
				ws, _, err := d.Dial("wss://"+r.addr+tc.path, forgedHeader)
				if err != nil {
					t.Fatal(err)
				}
				defer ws.Close()
				init, ok := wsRead(t, ws).(smq.Init)
				if !ok {
					t.Fatal("no Init")
				}
				initIP = init.IP
				wsSend(t, ws, smq.Connect{Version: 1, UID: uid})
				if ack, ok := wsRead(t, ws).(smq.Connack); !ok || ack.Code != smq.CodeAccepted {
					t.Fatalf("got %+v, want Connack 0x00", ack)
				}
			} else {
				c := r.rawTLS(t, local, tc.cert)
				c.WriteBytes(r.bootstrap(tc.path, forged...))
				initIP = c.ReadInit().IP
				c.Login(uid)
			}
			var req broker.ConnectRequest
			select {
			case req = <-connects:
			case <-time.After(smqtest.WaitFor):
				t.Fatal("the broker saw no Connect")
			}
			// The UID goes upstream bound to the identity.
			want := "anon:" + uid
			if tc.cert != nil {
				want = "x509-" + hex.EncodeToString(fp[:])[:32] + ":" + uid
			}
			if req.Connect.UID != want {
				t.Fatalf("Connect of %q, want %q", req.Connect.UID, want)
			}
			h := req.Peer.Header
			if got := h.Values("X-Forwarded-For"); !slices.Equal(got, []string{local}) {
				t.Errorf("X-Forwarded-For %q, want %q", got, local)
			}
			if req.Peer.IP != local || initIP != local {
				t.Errorf("broker's client IP %q, Init IP %q, want %q", req.Peer.IP, initIP, local)
			}
			for k, v := range h {
				switch n := strings.ToLower(strings.ReplaceAll(k, "_", "-")); {
				case n == "forwarded" || n == "x-real-ip" || n == "client-ip" || n == "true-client-ip",
					strings.HasPrefix(n, "x-smq-") && h.Get(k) == "forged":
					t.Errorf("%s forwarded: %q", k, v)
				case strings.HasPrefix(n, "x-") && k != http.CanonicalHeaderKey(n):
					t.Errorf("%s forwarded: %q (a form of %s)", k, v, http.CanonicalHeaderKey(n))
				}
			}
			// The gateway's own forwarding headers: the client's host and
			// scheme, not what it claimed.
			if got := h.Values("X-Forwarded-Proto"); !slices.Equal(got, []string{"https"}) {
				t.Errorf("X-Forwarded-Proto %q, want https", got)
			}
			if got := h.Values("X-Forwarded-Host"); !slices.Equal(got, []string{r.addr}) {
				t.Errorf("X-Forwarded-Host %q, want %q", got, r.addr)
			}
			if got := h.Values("X-Smq-Session"); len(got) != 1 || got[0] == "forged" {
				t.Errorf("X-Smq-Session %q, want the gateway's", got)
			}
			for k, v := range h {
				if strings.HasPrefix(k, "X-Smq-Client-") && !slices.Equal(v, tc.identity[k]) {
					t.Errorf("%s: %q, want %q", k, v, tc.identity[k])
				}
			}
			for k, v := range tc.identity {
				if !slices.Equal(h[k], v) {
					t.Errorf("%s: %q, want %q", k, h[k], v)
				}
			}
			if h.Get("Authorization") != "Bearer t0k3n" || h.Get("Cookie") != "session=abc" {
				t.Errorf("client headers not forwarded: Authorization %q, Cookie %q", h.Get("Authorization"), h.Get("Cookie"))
			}
		})
	}
}

// TestMalformedFromRawClient: malformed or out-of-place input after Connack
// ends the session with Disconnect "protocol error…" and is never
// forwarded; the gateway serves other clients on.
func TestMalformedFromRawClient(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{limits: limits.Limits{ConnectTimeout: 2 * time.Second}})
	frame := func(msg []byte) []byte {
		f, err := smq.AppendRaw(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"unknown type 20", frame([]byte{20, 'x'})},
		{"type 0", frame([]byte{0})},
		{"frame length 1", []byte{0, 1}},
		{"frame length 2", []byte{0, 2}},
		{"short Publish", frame([]byte{byte(smq.TypePublish), 0, 0, 0, 1, 0, 0})},
		{"short Unsubscribe", frame([]byte{byte(smq.TypeUnsubscribe), 0, 1})},
		{"second Connect", frame(smq.Connect{Version: 1, UID: "again-and-again"}.Append(nil))},
		{"Init from the client", frame(smq.Init{Version: 1, Seed: 1, IP: "1.2.3.4"}.Append(nil))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.raw(t, "/open")
			c.Login("malformed-" + strings.ReplaceAll(tc.name, " ", "-"))
			c.WriteBytes(tc.send)
			d, ok := smq.Decode(c.ExpectType(smq.TypeDisconnect))
			if ok != nil || !strings.HasPrefix(d.(smq.Disconnect).Reason, "protocol error") {
				t.Fatalf("Disconnect %+v, want one starting with \"protocol error\"", d)
			}
			c.ExpectClosed()
			wantReason(t, r.logs.nextSession(t), "protocol_error")
		})
	}
	if n := r.broker.Stats().ProtocolErrors; n != 0 {
		t.Errorf("the broker saw %d protocol errors: malformed input was forwarded", n)
	}
	// Still serving.
	c := r.raw(t, "/open")
	c.Login("well-behaved-client")
	c.Subscribe("after")
}

// fakeUpstream is a TCP server that answers the raw bootstrap like a broker
// asked for its HTTP answer, then sends init (nil: nothing) and never
// anything more. It returns its URL.
func fakeUpstream(t *testing.T, init []byte) string {
	t.Helper()
	ln := smqtest.Listen(t)
	smqtest.Serve(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nSmqBroker: true\r\n\r\n")
		if init != nil {
			f, _ := smq.AppendRaw(nil, init)
			c.Write(f)
		}
		io.Copy(io.Discard, br) // until the gateway hangs up
	})
	return "http://" + ln.Addr().String() + "/smq"
}

// TestSilentUpstream: an upstream that answers the bootstrap but then says
// nothing, or nothing after Init, gets the client Connack 0x02 within the
// connect timeout.
func TestSilentUpstream(t *testing.T) {
	t.Parallel()
	fakeInit := smq.Init{Version: 1, Seed: 0xC0FFEE, IP: "10.9.8.7"}.Append(nil)
	mute, err := upstream.New(upstream.Config{Name: "mute", URLs: []string{fakeUpstream(t, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	deaf, err := upstream.New(upstream.Config{Name: "deaf", URLs: []string{fakeUpstream(t, fakeInit)}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{limits: quick, routes: []*gateway.Route{
		{Path: "/mute", Upstream: mute, RefuseTemporary: true}, {Path: "/deaf", Upstream: deaf, RefuseTemporary: true}}})

	t.Run("no Init", func(t *testing.T) {
		c := r.rawTLS(t, "", nil)
		start := time.Now()
		c.WriteBytes(r.bootstrap("/mute"))
		if in := c.ReadInit(); in.IP != "127.0.0.1" {
			t.Errorf("the gateway's own Init carries %q", in.IP)
		}
		c.Send(smq.Connect{Version: 1, UID: "waits-for-init"})
		ack := c.ExpectConnack(smq.CodeServerUnavailable)
		if d := time.Since(start); d > quick.ConnectTimeout+slack {
			t.Errorf("Connack after %v, connect timeout %v", d, quick.ConnectTimeout)
		}
		if !strings.Contains(ack.Reason, "Init") {
			t.Errorf("reason %q does not mention Init", ack.Reason)
		}
		c.ExpectClosed()
		wantReason(t, r.logs.nextSession(t), "upstream_unavailable")
	})
	t.Run("no Connack", func(t *testing.T) {
		c := r.rawTLS(t, "", nil)
		c.WriteBytes(r.bootstrap("/deaf"))
		c.Expect(fakeInit) // the upstream's, unchanged
		start := time.Now()
		c.Send(smq.Connect{Version: 1, UID: "waits-for-connack"})
		ack := c.ExpectConnack(smq.CodeServerUnavailable)
		if d := time.Since(start); d > quick.ConnectTimeout+slack {
			t.Errorf("Connack after %v, connect timeout %v", d, quick.ConnectTimeout)
		}
		if !strings.Contains(ack.Reason, "Connect") {
			t.Errorf("reason %q does not mention Connect", ack.Reason)
		}
		c.ExpectClosed()
		wantReason(t, r.logs.nextSession(t), "upstream_unavailable")
	})
}

// TestPipelinedClient: a client that sends its bootstrap, Connect and a
// Subscribe at once gets Init, Connack and Suback in order: the gateway
// holds what it sent until the broker is ready for it.
func TestPipelinedClient(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{limits: limits.Limits{ConnectTimeout: 2 * time.Second}})
	msgs := func(uid string) []byte {
		b, _ := smq.AppendRawMessage(nil, smq.Connect{Version: 1, UID: uid})
		b, _ = smq.AppendRawMessage(b, smq.Subscribe{Topic: "pipelined"})
		return b
	}
	t.Run("raw", func(t *testing.T) {
		c := r.rawTLS(t, "", nil)
		c.WriteBytes(append(r.bootstrap("/open"), msgs("pipelined-raw")...))
		c.ReadInit()
		c.ExpectConnack(smq.CodeAccepted)
		c.ExpectAck(smq.TypeSuback, smq.AckOK, "pipelined")
	})
	t.Run("raw with HTTP answer", func(t *testing.T) {
		c := r.rawTLS(t, "", nil)
		c.WriteBytes(append(r.bootstrap("/open", "SendSmqHttpResponse: true"), msgs("pipelined-http")...))
		if resp := c.ReadHTTPResponse(); resp.StatusCode != http.StatusOK || resp.Header.Get("SmqBroker") != "true" {
			t.Fatalf("HTTP answer %s %v", resp.Status, resp.Header)
		}
		c.ReadInit()
		c.ExpectConnack(smq.CodeAccepted)
		c.ExpectAck(smq.TypeSuback, smq.AckOK, "pipelined")
	})
	t.Run("wss", func(t *testing.T) {
		ws := r.wss(t, "", "/open", nil)
		wsSend(t, ws, smq.Connect{Version: 1, UID: "pipelined-wss"})
		wsSend(t, ws, smq.Subscribe{Topic: "pipelined"})
		for _, want := range []smq.Type{smq.TypeInit, smq.TypeConnack, smq.TypeSuback} {
			m := wsRead(t, ws)
			if m.Type() != want {
				t.Fatalf("got %+v, want %v", m, want)
			}
			if ack, ok := m.(smq.Connack); ok && ack.Code != smq.CodeAccepted {
				t.Fatalf("got %+v", ack)
			}
		}
	})
	if n := r.broker.Stats().ProtocolErrors; n != 0 {
		t.Errorf("the broker saw %d protocol errors", n)
	}
}

// TestSessionLogLine: a session ends with exactly one log record that
// names why and counts the traffic both ways.
func TestSessionLogLine(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{limits: limits.Limits{ConnectTimeout: 2 * time.Second}})
	c := r.raw(t, "/open")
	connect := smq.Connect{Version: 1, UID: "logged-client"}.Append(nil)
	c.SendMsg(connect)
	connack := c.ExpectType(smq.TypeConnack)
	c.ETID = smq.ID(connack[1:])
	subscribe := smq.Subscribe{Topic: "log"}.Append(nil)
	c.SendMsg(subscribe)
	suback := slices.Clone(c.ExpectType(smq.TypeSuback))
	publish := c.Publish(smq.ID(suback[1:]), 0, []byte("hello, log"))
	c.Expect(publish)
	disconnect := smq.Disconnect{}.Append(nil)
	c.SendMsg(disconnect)
	c.ExpectClosed()

	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	if err := r.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	recs := r.logs.records(t, "session")
	if len(recs) != 1 {
		t.Fatalf("%d session records, want 1: %v", len(recs), recs)
	}
	rec := recs[0]
	want := map[string]any{
		"level": "INFO", "reason": "client_closed", "listener": "edge", "route": "/open", "client": "127.0.0.1",
		"transport": "raw", "upstream": "lan",
		"msgs_in": 4.0, "bytes_in": float64(len(connect) + len(subscribe) + len(publish) + len(disconnect)),
		"msgs_out": 3.0, "bytes_out": float64(len(connack) + len(suback) + len(publish)),
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	if _, ok := rec["duration"].(string); !ok {
		t.Errorf("no duration: %v", rec)
	}
}

// TestWebSocketShutdown: shutting down closes a WebSocket client with 1001
// "shutdown", without a Disconnect (which smq.js would take as final).
func TestWebSocketShutdown(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{limits: limits.Limits{ConnectTimeout: 2 * time.Second}})
	ws := r.wss(t, "", "/open", nil)
	wsLogin(t, ws, "ws-shutdown-client")
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	go func() { done <- r.gw.Shutdown(ctx) }()
	if ce := wsClose(t, ws); ce.Code != websocket.CloseGoingAway || ce.Text != "shutdown" {
		t.Fatalf("close %d %q, want 1001", ce.Code, ce.Text)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wantReason(t, r.logs.nextSession(t), "shutdown")
}

// TestWriteTimeoutEndsSilentSlowReader: a client that stops reading and
// sends nothing is ended by the write timeout, long before the idle timeout.
func TestWriteTimeoutEndsSilentSlowReader(t *testing.T) {
	t.Parallel()
	const payload = 60000
	// A broker queue large enough that the broker does not drop the session
	// as a slow consumer first: the gateway's own write timeout must.
	r := newRig(t, rigOptions{
		broker: broker.Config{QueueBytes: 256 << 20, QueueMessages: 1 << 20},
		limits: limits.Limits{ConnectTimeout: 2 * time.Second, WriteTimeout: 300 * time.Millisecond},
	})
	slow := r.rawTLS(t, "", nil)
	if tc, ok := slow.NetConn.(*tls.Conn).NetConn().(*net.TCPConn); ok {
		tc.SetReadBuffer(16 << 10)
	}
	slow.WriteBytes(r.bootstrap("/open"))
	slow.ReadInit()
	slow.Login("silent-slow-subscriber")
	tid := slow.Subscribe("silent-flood")

	pub := r.raw(t, "/open")
	pub.Login("silent-flood-publisher")
	start := time.Now()
	// Publish until the slow session has ended (bounded: 100 MB at most).
	ended := make(chan map[string]any, 1)
	go func() { ended <- r.logs.nextSession(t) }()
	body := make([]byte, payload)
	var rec map[string]any
flood:
	for i := 0; i < (100<<20)/payload; i++ {
		select {
		case rec = <-ended:
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("ended after %v", d)
			}
			break flood
		default:
		}
		pub.Publish(tid, 0, body)
	}
	if rec == nil {
		select {
		case rec = <-ended:
		case <-time.After(smqtest.WaitFor):
			t.Fatal("the session of a client that reads nothing was not ended by the write timeout")
		}
	}
	wantReason(t, rec, "write_error")
	if v := scrape(t, r.gw).get(t, "smqgw_limit_refusals_total", "listener", "edge", "limit", "write_timeout"); v != 1 {
		t.Errorf("write timeouts counted: %v, want 1", v)
	}
}

// TestShutdownDuringDial: a session whose upstream dial hangs does not hold
// Shutdown past its grace: ending the session aborts the dial.
func TestShutdownDuringDial(t *testing.T) {
	t.Parallel()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := silent.Accept(); err == nil {
			accepted <- c // held open, never answered
		}
	}()
	hang, err := upstream.New(upstream.Config{Name: "hang", URLs: []string{"http://" + silent.Addr().String() + "/smq"},
		DialTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{
		limits: limits.Limits{ConnectTimeout: time.Minute},
		routes: []*gateway.Route{{Path: "/hang", Upstream: hang}},
	})
	c := r.rawTLS(t, "", nil)
	c.WriteBytes(r.bootstrap("/hang")) // no Init will come while the dial hangs
	conn := smqtest.Recv(t, accepted, "the gateway to dial the silent upstream")
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	r.gw.Shutdown(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v with a dial in progress", d)
	}
	wantReason(t, r.logs.nextSession(t), "shutdown")
	c.Close()
}
