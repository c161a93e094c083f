package gateway_test

// Tests of issue 14: the gateway is faithful to the reference broker and
// its clients (SMQ-WIRE §4 and §5).

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/upstream"
	"github.com/smqgw/smqgw/wire"
)

// judgeByHeaders is an authenticate hook as a broker behind smqgw may
// have: it judges the client by the X-SMQ-Client-* headers of the
// bootstrap, and by its credentials.
func judgeByHeaders(req *broker.ConnectRequest) (smq.ConnackCode, string) {
	switch cn := req.Peer.Header.Get("X-Smq-Client-Cn"); {
	case req.Connect.Credentials == "wrong":
		return smq.CodeBadCredentials, "the broker says: wrong password"
	case req.Connect.Credentials == "banned":
		return smq.CodeAccessDenied, "the broker says: banned"
	case cn == "":
		return smq.CodeCertRequired, "the broker says: devices need a certificate"
	case cn != "device-good":
		return smq.CodeCertNotAccepted, "the broker says: " + cn + " is not one of ours"
	}
	return smq.CodeAccepted, ""
}

// TestBrokerConnackRelayed is item 1: whatever code the broker's
// authenticate hook answers, its Connack (code, ETID, reason) reaches the
// client byte for byte, raw or WebSocket, on a plain http:// upstream
// without cert_file; it is counted decided_by="upstream" and logged
// connack_refused.
func TestBrokerConnackRelayed(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{broker: broker.Config{Authenticate: judgeByHeaders}})
	good := r.clientCA.Client(t, "device-good")
	other := r.clientCA.Client(t, "device-other")
	for _, tc := range []struct {
		name  string
		cert  *tls.Certificate
		cred  string
		code  smq.ConnackCode
		why   string
		wsTry bool
	}{
		{"no certificate", nil, "", smq.CodeCertRequired, "the broker says: devices need a certificate", true},
		{"another certificate", &other.TLS, "", smq.CodeCertNotAccepted, "the broker says: device-other is not one of ours", true},
		{"wrong password", &good.TLS, "wrong", smq.CodeBadCredentials, "the broker says: wrong password", false},
		{"banned", &good.TLS, "banned", smq.CodeAccessDenied, "the broker says: banned", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := smq.Connack{Code: tc.code, Reason: tc.why}.Append(nil)
			c := r.rawTLS(t, "", tc.cert)
			c.WriteBytes(r.bootstrap("/optional"))
			c.ReadInit()
			c.Send(smq.Connect{Version: 1, UID: "device-" + strings.ReplaceAll(tc.name, " ", "-"), Credentials: tc.cred})
			c.Expect(want)
			c.ExpectClosed()
			rec := r.logs.nextSession(t)
			wantReason(t, rec, "connack_refused")
			if d, _ := rec["detail"].(string); !strings.Contains(d, tc.why) {
				t.Errorf("log detail %q does not carry the broker's reason", d)
			}
			if !tc.wsTry {
				return
			}
			ws := wssWithCert(t, r, "/optional", tc.cert)
			if m := wsRead(t, ws); m.Type() != smq.TypeInit {
				t.Fatalf("got %+v, want Init", m)
			}
			wsSend(t, ws, smq.Connect{Version: 1, UID: "browser-" + strings.ReplaceAll(tc.name, " ", "-")})
			ws.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
			_, got, err := ws.ReadMessage()
			if err != nil || string(got) != string(want) {
				t.Fatalf("WebSocket: got % x, %v\n%s", got, err, smqtest.Diff(got, want))
			}
			if ce := wsClose(t, ws); ce.Code != websocket.CloseNormalClosure {
				t.Errorf("close %d %q, want 1000", ce.Code, ce.Text)
			}
			wantReason(t, r.logs.nextSession(t), "connack_refused")
		})
	}
	m := scrape(t, r.gw)
	for code, n := range map[string]float64{"0x03": 1, "0x04": 2, "0x05": 2, "0x06": 1} {
		if v := m.get(t, "smqgw_connack_total", "code", code, "decided_by", "upstream"); v != n {
			t.Errorf("connack %s decided_by upstream: %v, want %v", code, v, n)
		}
		if v, err := m.lookup("smqgw_connack_total", "code", code, "decided_by", "gateway"); err == nil && v != 0 {
			t.Errorf("connack %s decided_by gateway: %v, want 0", code, v)
		}
	}
	// And the accepted one, for completeness.
	c := r.rawTLS(t, "", &good.TLS)
	c.WriteBytes(r.bootstrap("/optional"))
	c.ReadInit()
	c.Login("device-good-1")
}

// wssWithCert opens a WebSocket to path through the rig's gateway with an
// optional client certificate, and reads nothing.
func wssWithCert(t *testing.T, r *rig, path string, cert *tls.Certificate) *websocket.Conn {
	t.Helper()
	cfg := &tls.Config{RootCAs: r.ca.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: smqtest.WaitFor}
	ws, _, err := d.Dial("wss://"+r.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// frontEnd is an upstream that refuses the gateway's certificate as a
// TLS-terminating front end may: Init, then Connack code without waiting
// for Connect, with Init when later is nil, else when later is closed. It
// returns its URL.
func frontEnd(t *testing.T, code smq.ConnackCode, reason string, later <-chan struct{}) string {
	t.Helper()
	ln := smqtest.Listen(t)
	smqtest.Serve(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nSmqBroker: true\r\n\r\n")
		b, _ := smq.AppendRawMessage(nil, smq.Init{Version: 1, Seed: 7, IP: "10.1.1.1"})
		if later != nil {
			c.Write(b)
			<-later
			b = nil
		}
		b, _ = smq.AppendRawMessage(b, smq.Connack{Code: code, Reason: reason})
		c.Write(b)
		io.Copy(io.Discard, br) // until the gateway hangs up
	})
	return "http://" + ln.Addr().String() + "/smq"
}

// TestFrontEndRefusesGatewayCertificate is item 1's other half: a Connack
// 0x04/0x05 that comes before the client's Connect was relayed judges the
// gateway, not the client: the client gets 0x02 naming the upstream (at
// once, whether it sent Connect or not), the gateway counts it as its own
// decision and logs gateway_cert_refused.
func TestFrontEndRefusesGatewayCertificate(t *testing.T) {
	t.Parallel()
	later := make(chan struct{})
	newUp := func(name string, later <-chan struct{}) upstream.Upstream {
		u, err := upstream.New(upstream.Config{Name: name, URLs: []string{frontEnd(t, smq.CodeCertNotAccepted, "unknown client CA", later)}})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	r := newRig(t, rigOptions{routes: []*gateway.Route{
		{Path: "/cloud", Upstream: newUp("cloud", nil)},
		{Path: "/later", Upstream: newUp("later", later)},
	}})
	want := func(name string) string {
		return "upstream " + name + " refused the gateway's certificate: 0x05 client certificate not accepted: unknown client CA"
	}
	for _, ws := range []bool{false, true} {
		var ack smq.Connack
		if ws {
			conn := r.wss(t, "", "/cloud", nil)
			wsRead(t, conn) // the front end's Init
			wsSend(t, conn, smq.Connect{Version: 1, UID: "browser-behind-edge"})
			ack, _ = wsRead(t, conn).(smq.Connack)
			if ce := wsClose(t, conn); ce.Code != websocket.ClosePolicyViolation {
				t.Errorf("close %d %q, want 1008", ce.Code, ce.Text)
			}
		} else {
			c := r.rawTLS(t, "", nil)
			c.WriteBytes(r.bootstrap("/cloud"))
			c.ReadInit()
			c.Send(smq.Connect{Version: 1, UID: "device-behind-edge"})
			ack = c.ExpectConnack(smq.CodeServerUnavailable)
			c.ExpectClosed()
		}
		if ack.Code != smq.CodeServerUnavailable || ack.Reason != want("cloud") {
			t.Errorf("websocket %v: got %+v, want 0x02 %q", ws, ack, want("cloud"))
		}
		wantReason(t, r.logs.nextSession(t), "gateway_cert_refused")
	}
	// The front end's Connack comes after Init, while the client has not
	// sent Connect yet: the gateway stops waiting for it.
	c := r.rawTLS(t, "", nil)
	c.WriteBytes(r.bootstrap("/later"))
	c.ReadInit()
	close(later)
	if ack := c.ExpectConnack(smq.CodeServerUnavailable); ack.Reason != want("later") {
		t.Errorf("got %+v, want 0x02 %q", ack, want("later"))
	}
	c.Send(smq.Connect{Version: 1, UID: "device-too-late"}) // as a client does after Init
	c.ExpectClosed()
	wantReason(t, r.logs.nextSession(t), "gateway_cert_refused")

	m := scrape(t, r.gw)
	if v := m.get(t, "smqgw_connack_total", "code", "0x02", "decided_by", "gateway"); v != 3 {
		t.Errorf("connack 0x02 decided_by gateway: %v, want 3", v)
	}
	if v, err := m.lookup("smqgw_connack_total", "code", "0x05", "decided_by", "upstream"); err == nil && v != 0 {
		t.Errorf("connack 0x05 decided_by upstream: %v, want 0", v)
	}
}

// lateUpstream is an upstream whose URLs are known once the rig's broker
// runs.
type lateUpstream struct {
	u atomic.Pointer[upstream.Dialer]
}

func (l *lateUpstream) set(t *testing.T, name string, urls ...string) {
	t.Helper()
	d, err := upstream.New(upstream.Config{Name: name, URLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	l.u.Store(d)
}

func (l *lateUpstream) Dial(ctx context.Context, req upstream.Request) (wire.Conn, error) {
	return l.u.Load().Dial(ctx, req)
}

func (l *lateUpstream) Name() string { return l.u.Load().Name() }

// TestPubFragToWebSocketUpstream is item 2: a raw client's PubFrag goes to a
// ws:// upstream as one Publish, reassembled at the gateway with the
// reference broker's limits, and to a raw upstream as it came. The broker
// closes a WebSocket session that sends PubFrag, as the reference broker
// does.
func TestPubFragToWebSocketUpstream(t *testing.T) {
	t.Parallel()
	late := &lateUpstream{}
	r := newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/ws", Upstream: late}}})
	late.set(t, "lanws", "ws://"+r.brokerAddr+"/smq")

	// The test broker, like the reference one, closes a WebSocket client
	// that sends PubFrag.
	direct := smqtest.ConnectWS(t, r.brokerAddr, "direct-ws-fragmenter")
	direct.SendMsg(smqtest.PubFragMsg(0, direct.ETID, 0, []byte("x")))
	direct.ExpectClosed()

	sub := smqtest.Connect(t, r.brokerAddr, "frag-subscriber")
	tid := sub.Subscribe("frag")
	payload := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		return p
	}
	// sendFrags sends p in fragments of at most 30,000 bytes, tid 0 but on
	// the last.
	sendFrags := func(c *smqtest.Conn, tid uint32, p []byte) {
		for len(p) > 30000 {
			c.SendMsg(smqtest.PubFragMsg(0, 0, 0, p[:30000]))
			p = p[30000:]
		}
		c.SendMsg(smqtest.PubFragMsg(tid, c.ETID, 5, p))
	}
	for _, path := range []string{"/ws", "/open"} {
		pub := r.raw(t, path)
		pub.Login("frag-publisher-" + path[1:])
		for _, n := range []int{1, 30001, smq.MaxPubFragPayload} {
			p := payload(n)
			sendFrags(pub, tid, p)
			sub.Expect(smqtest.PublishMsg(tid, pub.ETID, 5, p))
		}
		pub.Barrier() // still connected
	}
	m := scrape(t, r.gw)
	for typ, want := range map[string]float64{"PubFrag": 1 + 2 + 3, "Publish": 3} {
		if v := m.get(t, "smqgw_messages_total", "direction", "client_to_upstream", "type", typ); v != want {
			t.Errorf("%s to the upstreams: %v, want %v", typ, v, want)
		}
	}

	// Over the limits, on the WebSocket upstream.
	pub := r.raw(t, "/ws")
	pub.Login("frag-publisher-limits")
	// 0xFFE4 bytes: the reassembled message is over 0xFFF0 with its
	// header: dropped, as the reference broker drops it; the session goes on.
	sendFrags(pub, tid, payload(smq.MaxPubFragPayload+1))
	small := pub.Publish(tid, 0, []byte("after the dropped one"))
	sub.Expect(small)
	// More than 0xFFF0 bytes accumulated: Disconnect "message too big".
	for range 2 {
		pub.SendMsg(smqtest.PubFragMsg(0, 0, 0, payload(32761)))
	}
	pub.ExpectDisconnect("message too big")
	sub.Barrier() // nothing came
	for {
		rec := r.logs.nextSession(t)
		if rec["route"] == "/ws" && rec["reason"] != "client_closed" {
			wantReason(t, rec, "too_big")
			if rec["dropped_pubfrag_too_big"] != 1.0 {
				t.Errorf("dropped_pubfrag_too_big = %v, want 1", rec["dropped_pubfrag_too_big"])
			}
			break
		}
	}
}

// TestNoConnectAfterInit is item 5: a client that sends nothing after
// Init gets Connack 0x02 "no Connect received in time", as from the
// reference broker. Where the gateway relays, that is the broker's own
// Connack, after the broker's connect timeout (relayed unchanged); where
// the gateway answers itself (a refused certificate), or its own
// connect_timeout is the shorter, the gateway's, after connect_timeout.
func TestNoConnectAfterInit(t *testing.T) {
	t.Parallel()
	const brokerWait = 500 * time.Millisecond
	want := smq.Connack{Code: smq.CodeServerUnavailable, Reason: "no Connect received in time"}.Append(nil)
	embedded := &upstream.Embedded{Broker: broker.New(broker.Config{ConnectTimeout: brokerWait})}
	t.Cleanup(func() { embedded.Broker.Shutdown(context.Background()) })
	// The broker's timeout is the shorter: its Connack.
	r := newRig(t, rigOptions{broker: broker.Config{ConnectTimeout: brokerWait},
		routes: []*gateway.Route{{Path: "/embedded", Upstream: embedded}}})
	for _, path := range []string{"/open", "/embedded"} {
		c := r.rawTLS(t, "", nil)
		c.WriteBytes(r.bootstrap(path))
		c.ReadInit()
		start := time.Now()
		c.Expect(want)
		if d := time.Since(start); d < brokerWait*8/10 || d > brokerWait+slack {
			t.Errorf("%s: Connack after %v, the broker waits %v", path, d, brokerWait)
		}
		c.ExpectClosed()
		wantReason(t, r.logs.nextSession(t), "connack_refused")
	}
	if v := scrape(t, r.gw).get(t, "smqgw_connack_total", "code", "0x02", "decided_by", "upstream"); v != 2 {
		t.Errorf("connack 0x02 decided_by upstream: %v, want 2", v)
	}

	// The gateway's is the shorter, or the gateway answers itself: its own.
	r = newRig(t, rigOptions{broker: broker.Config{ConnectTimeout: time.Minute}, limits: quick})
	for _, path := range []string{"/open", "/require"} {
		c := r.rawTLS(t, "", nil)
		c.WriteBytes(r.bootstrap(path))
		c.ReadInit()
		start := time.Now()
		c.Expect(want)
		if d := time.Since(start); d > quick.ConnectTimeout+slack {
			t.Errorf("%s: Connack after %v, connect_timeout %v", path, d, quick.ConnectTimeout)
		}
		c.ExpectClosed()
		wantReason(t, r.logs.nextSession(t), "connect_timeout")
	}
	// A WebSocket client too.
	ws := r.wss(t, "", "/open", nil)
	wsRead(t, ws) // Init
	if m := wsRead(t, ws); m != (smq.Connack{Code: smq.CodeServerUnavailable, Reason: "no Connect received in time"}) {
		t.Errorf("WebSocket: got %+v", m)
	}
	if ce := wsClose(t, ws); ce.Code != websocket.CloseNormalClosure {
		t.Errorf("close %d %q, want 1000", ce.Code, ce.Text)
	}
	wantReason(t, r.logs.nextSession(t), "connect_timeout")
	if v := scrape(t, r.gw).get(t, "smqgw_connack_total", "code", "0x02", "decided_by", "gateway"); v != 3 {
		t.Errorf("connack 0x02 decided_by gateway: %v, want 3", v)
	}
}

// TestNoConnectDefaults: with the defaults, as smqgw runs them, a client
// of the embedded broker that sends nothing after Init gets the broker's
// Connack 0x02 after about 4 s, as from the reference broker.
func TestNoConnectDefaults(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), apptest.Listener("lan", ""))
	c := smqtest.Dial(t, b.GW.Addr("lan").String())
	start := time.Now()
	c.Timeout = broker.DefaultConnectTimeout + slack
	c.ExpectMessage(smq.Connack{Code: smq.CodeServerUnavailable, Reason: "no Connect received in time"})
	if d := time.Since(start); d < broker.DefaultConnectTimeout*9/10 || d > broker.DefaultConnectTimeout+slack {
		t.Errorf("Connack after %v, want about %v", d, broker.DefaultConnectTimeout)
	}
	t.Logf("Connack 0x02 after %v", time.Since(start).Round(time.Millisecond))
	c.ExpectClosed()
}

// TestOversizeCloseCodeWhileWriting is item 6's first half: a WebSocket
// client that goes on writing after an oversized message still reads close
// 1009: the gateway's close frame is not lost to a reset.
func TestOversizeCloseCodeWhileWriting(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	big := make([]byte, smq.MaxRawMessage+1)
	big[0] = byte(smq.TypePublish)
	for i := range 20 {
		ws := r.wss(t, "", "/open", nil)
		wsLogin(t, ws, fmt.Sprintf("oversize-writer-%d", i))
		writing := make(chan struct{})
		go func() {
			defer close(writing)
			ws.SetWriteDeadline(time.Now().Add(smqtest.WaitFor))
			if ws.WriteMessage(websocket.BinaryMessage, big) != nil {
				return
			}
			small := smq.Ping{}.Append(nil)
			for ws.WriteMessage(websocket.BinaryMessage, small) == nil {
			}
		}()
		ws.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		var err error
		for err == nil {
			var p []byte
			_, p, err = ws.ReadMessage() // Pongs, then the close
			if err == nil && smq.Type(p[0]) != smq.TypePong {
				t.Errorf("run %d: got %s before the close, want Pongs only", i, smqtest.Describe(p))
			}
		}
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Errorf("run %d: %v, want close 1009", i, err)
		}
		ws.Close()
		<-writing
		wantReason(t, r.logs.nextSession(t), "too_big")
	}
}

// killableBroker is a broker on a loopback port whose death a test
// decides: Kill drops every connection at once, as a crash would.
func killableBroker(t *testing.T) *smqtest.Killable {
	t.Helper()
	b := broker.New(broker.Config{})
	l := smqtest.Track(smqtest.Listen(t))
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(l) }()
	t.Cleanup(func() {
		l.Kill()
		b.Shutdown(context.Background())
		<-served
	})
	return l
}

// TestUpstreamGoneCloseCode is item 6's second half: when the upstream
// dies, a WebSocket client gets close 1001 with a reason that says so (a
// raw one the end of the stream, no Disconnect); and no close reason names
// the upstream's address.
func TestUpstreamGoneCloseCode(t *testing.T) {
	t.Parallel()
	up := killableBroker(t)
	late := &lateUpstream{}
	late.set(t, "lan2", "http://"+up.Addr().String()+"/smq")
	r := newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/lan2", Upstream: late}}})
	ws := r.wss(t, "", "/lan2", nil)
	wsLogin(t, ws, "browser-upstream-dies")
	raw := r.raw(t, "/lan2")
	raw.Login("device-upstream-dies")
	up.Kill()
	ce := wsClose(t, ws)
	if ce.Code != websocket.CloseGoingAway || ce.Text != "upstream lan2 closed the session" {
		t.Errorf("close %d %q, want 1001 \"upstream lan2 closed the session\"", ce.Code, ce.Text)
	}
	raw.ExpectClosed()
	for range 2 {
		wantReason(t, r.logs.nextSession(t), "upstream_closed")
	}
	// The upstream is gone: whatever a WebSocket client is told, its
	// close reason names no address.
	ws = r.wss(t, "", "/lan2", nil)
	ws.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	var err error
	for err == nil {
		var p []byte
		if _, p, err = ws.ReadMessage(); err == nil && smq.Type(p[0]) == smq.TypeInit {
			wsSend(t, ws, smq.Connect{Version: 1, UID: "browser-upstream-gone"})
		}
	}
	if ce, ok := err.(*websocket.CloseError); !ok || strings.Contains(ce.Text, "127.0.0.1") {
		t.Errorf("close %v: want a close reason without the upstream's address", err)
	}
}

// TestSessionLogNamesUpstreamURL is item 8: the session's log line names
// the URL its upstream connection was made to, which after a failover is
// not the first.
func TestSessionLogNamesUpstreamURL(t *testing.T) {
	t.Parallel()
	late := &lateUpstream{}
	r := newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/failover", Upstream: late}}})
	dead := "http://" + smqtest.DeadAddr(t) + "/smq"
	live := "ws://" + r.brokerAddr + "/smq"
	late.set(t, "pair", dead, live)
	c := r.raw(t, "/failover")
	c.Login("device-after-failover")
	c.Send(smq.Disconnect{})
	c.ExpectClosed()
	rec := r.logs.nextSession(t)
	if rec["upstream"] != "pair" || rec["upstream_url"] != live {
		t.Errorf("upstream %v at %v, want pair at %s", rec["upstream"], rec["upstream_url"], live)
	}
	// The first URL's turn is over, for the back-off: straight to the
	// second, named again.
	ws := r.wss(t, "", "/failover", nil)
	wsLogin(t, ws, "browser-after-failover")
	ws.Close()
	if rec := r.logs.nextSession(t); rec["upstream_url"] != live {
		t.Errorf("upstream_url %v, want %s", rec["upstream_url"], live)
	}
	// In-process, there is no URL to name.
	b := broker.New(broker.Config{})
	t.Cleanup(func() { b.Shutdown(context.Background()) })
	r = newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/embedded", Upstream: &upstream.Embedded{Broker: b}}}})
	c = r.raw(t, "/embedded")
	c.Login("device-in-process")
	c.Send(smq.Disconnect{})
	c.ExpectClosed()
	if rec := r.logs.nextSession(t); rec["upstream"] != "embedded" || rec["upstream_url"] != nil {
		t.Errorf("upstream %v at %v, want embedded and no url", rec["upstream"], rec["upstream_url"])
	}
}

// cClientStatus is the status the reference C client reports for a raw
// Connack frame (SMQ-WIRE §5): its parser moves the reason text to the
// start of its buffer before it reads the code byte, at offset 3 of the
// frame, so a reason of 4 bytes or more gives the reason's 4th byte.
func cClientStatus(frame []byte) int {
	buf := append([]byte(nil), frame...)
	copy(buf, frame[2+1+5:]) // the reason, moved to the start
	return int(buf[3])
}

// TestCClientRefusalCodes is item 7: a raw client that bootstraps like the
// C client (HTTP/1.0, User-Agent: SimpleMQ/1) gets the gateway's own
// refusals without reason text, so that it reports the right code; the
// log keeps the reason. Other clients get the reason; the broker's own
// Connack is relayed unchanged to every client.
func TestCClientRefusalCodes(t *testing.T) {
	t.Parallel()
	fe, err := upstream.New(upstream.Config{Name: "cloud", URLs: []string{frontEnd(t, smq.CodeCertRequired, "no cert", nil)}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{broker: broker.Config{Authenticate: judgeByHeaders},
		routes: []*gateway.Route{{Path: "/cloud", Upstream: fe}}})
	cBoot := func(path string) []byte {
		return smqtest.RawRequest("GET "+path+" HTTP/1.0", "Host: "+r.addr, "SimpleMQ: 1", "User-Agent: SimpleMQ/1")
	}
	for _, tc := range []struct {
		name, path string
		boot       []byte
		code       smq.ConnackCode
		reason     string // "" when the client must get none
		log        string // in the log line's detail
	}{
		{"C client, certificate required", "/require", cBoot("/require"), smq.CodeCertRequired, "", "client certificate required"},
		{"C client, gateway refused upstream", "/cloud", cBoot("/cloud"), smq.CodeServerUnavailable, "",
			"upstream cloud refused the gateway's certificate"},
		{"C client, the broker's own refusal", "/optional", cBoot("/optional"), smq.CodeCertRequired,
			"the broker says: devices need a certificate", "the broker says"},
		{"HTTP/1.1 client", "/require", r.bootstrap("/require", "User-Agent: SimpleMQ/1"), smq.CodeCertRequired,
			"client certificate required", "client certificate required"},
		{"HTTP/1.0 client of another kind", "/require", smqtest.RawRequest("GET /require HTTP/1.0", "SimpleMQ: 1"),
			smq.CodeCertRequired, "client certificate required", "client certificate required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.rawTLS(t, "", nil)
			c.WriteBytes(tc.boot)
			c.ReadInit()
			c.Send(smq.Connect{Version: 1, UID: "c-client-device"})
			f := c.ReadFull()
			m, _ := smq.Decode(f.Msg)
			if ack, ok := m.(smq.Connack); !ok || ack.Code != tc.code || ack.Reason != tc.reason || ack.ETID != 0 {
				t.Fatalf("got %s, want Connack %v %q", smqtest.Describe(f.Msg), tc.code, tc.reason)
			}
			if tc.reason == "" {
				if got := cClientStatus(f.Raw); got != int(tc.code) {
					t.Errorf("the C client reports status %d, want %d", got, tc.code)
				}
			}
			c.ExpectClosed()
			if d, _ := r.logs.nextSession(t)["detail"].(string); !strings.Contains(d, tc.log) {
				t.Errorf("log detail %q lacks %q", d, tc.log)
			}
		})
	}
	// Why: with a reason, the C client reports its 4th byte.
	f, _ := smq.AppendRawMessage(nil, smq.Connack{Code: smq.CodeServerUnavailable, Reason: "upstream lan unavailable"})
	if got := cClientStatus(f); got != 't' {
		t.Errorf("the emulated C parser reports %d for a reason, want %d ('t')", got, 't')
	}
}

// TestUnobserveAnsweredByGateway is item 3: in front of a broker with the
// reference broker's Unobserve bug, the gateway answers Unobserve itself:
// the client's Change messages for that topic stop, the topic's
// subscribers go on receiving, and a later Subscribe works. The embedded
// broker, which has no such bug, gets Unobserve.
func TestUnobserveAnsweredByGateway(t *testing.T) {
	t.Parallel()
	late := &lateUpstream{}
	emb := broker.New(broker.Config{})
	t.Cleanup(func() { emb.Shutdown(context.Background()) })
	r := newRig(t, rigOptions{routes: []*gateway.Route{
		{Path: "/hub", Upstream: late},
		{Path: "/embedded", Upstream: &upstream.Embedded{Broker: emb}},
	}})
	buggy := smqtest.UnobserveBug(t, r.brokerAddr)
	late.set(t, "hub", "http://"+buggy+"/smq")

	// The test broker has the bug: straight to it, after the only
	// observer unobserves, the subscriber gets nothing, and its next
	// Subscribe to the topic ends its connection.
	a := smqtest.Connect(t, buggy, "direct-observer")
	tid := a.Subscribe("bugged")
	a.Send(smq.Observe{ID: tid})
	a.ExpectMessage(smq.Change{ID: tid, Count: 1})
	a.Send(smq.Unobserve{ID: tid})
	a.Barrier() // the relay has seen the Unobserve before anything is published
	p := smqtest.Connect(t, r.brokerAddr, "direct-publisher")
	p.Publish(tid, 0, []byte("lost"))
	p.Barrier()
	a.ExpectNothing()
	a.Send(smq.Subscribe{Topic: "bugged"})
	a.ExpectClosed()

	// Through the gateway, raw and WebSocket.
	for i, path := range []string{"/hub", "/hub", "/embedded"} {
		topic := fmt.Sprintf("shielded-%d", i)
		var c *smqtest.Conn
		if i == 1 {
			c = smqtest.NewWS(t, r.wss(t, "", path, nil))
			c.ReadInit()
			c.Login("browser-observer")
		} else {
			c = r.raw(t, path)
			c.Login(fmt.Sprintf("device-observer-%d", i))
		}
		tid := c.Subscribe(topic)
		c.Send(smq.Observe{ID: tid})
		c.ExpectMessage(smq.Change{ID: tid, Count: 1})
		c.Send(smq.Unobserve{ID: tid})
		c.Barrier()
		// A second subscriber changes the count: the broker queues that
		// Change for c before it takes the publisher's message.
		other := r.raw(t, path)
		other.Login(fmt.Sprintf("second-subscriber-%d", i))
		other.Subscribe(topic)
		msg := other.Publish(tid, 0, []byte("still delivered"))
		c.Expect(msg) // and no Change before it
		other.Expect(msg)
		// A later Subscribe to the topic works.
		c.Send(smq.Subscribe{Topic: topic})
		c.ExpectAck(smq.TypeSuback, smq.AckOK, topic)
		// Observing again brings the Change messages back.
		c.Send(smq.Observe{ID: tid})
		c.ExpectMessage(smq.Change{ID: tid, Count: 2})
		c.Barrier()
	}
	m := scrape(t, r.gw)
	if v := m.get(t, "smqgw_messages_total", "direction", "client_to_upstream", "type", "Unobserve"); v != 1 {
		t.Errorf("Unobserve relayed %v times, want 1 (to the embedded broker)", v)
	}
}

// scripted is a raw upstream that answers the bootstrap like a broker
// asked for its HTTP answer, sends Init, then runs script on the
// connection. It returns its URL.
func scripted(t *testing.T, script func(c net.Conn, r *smq.Reader)) string {
	t.Helper()
	ln := smqtest.Listen(t)
	smqtest.Serve(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nSmqBroker: true\r\n\r\n")
		script(c, smq.NewReader(br))
	})
	return "http://" + ln.Addr().String() + "/smq"
}

// TestCloseCodes is the README's close-code table (items 4 and 6): for
// each way a session ends that a WebSocket client can see, its close code
// and reason, the SMQ message before it, and what a raw client gets. By
// default, passing conditions (upstream unavailable, busy) end the
// connection without an SMQ refusal: no Init of the gateway's, no Connack,
// no Disconnect.
func TestCloseCodes(t *testing.T) {
	t.Parallel()
	newUp := func(name, url string) upstream.Upstream {
		u, err := upstream.New(upstream.Config{Name: name, URLs: []string{url}})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	initMsg := func(c net.Conn) {
		b, _ := smq.AppendRawMessage(nil, smq.Init{Version: 1, Seed: 1, IP: "10.0.0.1"})
		c.Write(b)
	}
	lim := limits.Limits{ConnectTimeout: time.Second, IdleTimeout: 500 * time.Millisecond, WSPingInterval: time.Hour,
		MessageRate: 5}
	r := newRig(t, rigOptions{limits: lim, routes: []*gateway.Route{
		{Path: "/dead", Upstream: newUp("dead", "http://"+smqtest.DeadAddr(t)+"/smq")},
		{Path: "/dead-refuse", Upstream: newUp("dead", "http://"+smqtest.DeadAddr(t)+"/smq"), RefuseTemporary: true},
		{Path: "/mute", Upstream: newUp("mute", scripted(t, func(c net.Conn, r *smq.Reader) { r.Read() }))},
		{Path: "/deaf", Upstream: newUp("deaf", scripted(t, func(c net.Conn, r *smq.Reader) {
			initMsg(c)
			r.Read()
			r.Read()
		}))},
		{Path: "/odd", Upstream: newUp("odd", scripted(t, func(c net.Conn, r *smq.Reader) {
			initMsg(c)
			r.Read() // Connect
			b, _ := smq.AppendRawMessage(nil, smq.Suback{Topic: "x", ID: 1})
			c.Write(b)
			r.Read()
		}))},
	}})
	type outcome struct {
		code   int
		text   string // the close reason, or its start when it ends with "*"
		msg    smq.Message
		reason string // in the log
	}
	for _, tc := range []struct {
		name, path string
		connect    bool // the client sends Connect after Init
		want       outcome
	}{
		{"upstream unreachable", "/dead", false, outcome{1013, "upstream dead unavailable", nil, "upstream_unavailable"}},
		{"upstream sends no Init", "/mute", false, outcome{1013, "upstream mute sent no Init", nil, "upstream_unavailable"}},
		{"upstream answers no Connect", "/deaf", true, outcome{1013, "upstream deaf did not answer Connect", nil, "upstream_unavailable"}},
		{"upstream unreachable, refuse", "/dead-refuse", true, outcome{1013, "0x02 server unavailable: upstream dead unavailable",
			smq.Connack{Code: smq.CodeServerUnavailable, Reason: "upstream dead unavailable"}, "upstream_unavailable"}},
		{"upstream answers Connect with Suback", "/odd", true, outcome{1011, "0x02 server unavailable: upstream odd answered Connect with Suback",
			smq.Connack{Code: smq.CodeServerUnavailable, Reason: "upstream odd answered Connect with Suback"}, "upstream_protocol_error"}},
		{"idle", "/open", true, outcome{1001, "idle timeout*", smq.Disconnect{Reason: "idle timeout"}, "idle_timeout"}},
		{"over the message rate", "/open", true, outcome{1008, "rate limit exceeded*", smq.Disconnect{Reason: "rate limit exceeded"}, "rate_limited"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := r.wss(t, "", tc.path, nil)
			ws.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
			var got outcome
			for {
				_, p, err := ws.ReadMessage()
				if ce, ok := err.(*websocket.CloseError); ok {
					got.code, got.text = ce.Code, ce.Text
					break
				} else if err != nil {
					t.Fatal(err)
				}
				switch m, _ := smq.Decode(p); m.Type() {
				case smq.TypeInit:
					if tc.connect {
						wsSend(t, ws, smq.Connect{Version: 1, UID: "ws-" + strings.ReplaceAll(tc.name, " ", "-")})
					}
				case smq.TypeConnack:
					if m.(smq.Connack).Code != smq.CodeAccepted {
						got.msg = m
					} else if tc.name == "over the message rate" {
						for range 6 {
							wsSend(t, ws, smq.Ping{})
						}
					}
				case smq.TypePong:
				default:
					got.msg = m
				}
			}
			got.reason = r.logs.nextSession(t)["reason"].(string)
			if strings.HasSuffix(tc.want.text, "*") && strings.HasPrefix(got.text, strings.TrimSuffix(tc.want.text, "*")) {
				got.text = tc.want.text
			}
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			if tc.want.code != 1013 || tc.want.msg != nil {
				return
			}
			// A raw client: no Init of the gateway's, no Connack, the end
			// of the stream.
			c := r.rawTLS(t, "", nil)
			c.WriteBytes(r.bootstrap(tc.path))
			if tc.connect {
				c.ReadInit()
				c.Send(smq.Connect{Version: 1, UID: "raw-" + strings.ReplaceAll(tc.name, " ", "-")})
			}
			c.ExpectClosed()
			wantReason(t, r.logs.nextSession(t), tc.want.reason)
		})
	}

	// Busy: the listener at max_sessions.
	r = newRig(t, rigOptions{limits: limits.Limits{MaxSessions: 1}, routes: []*gateway.Route{{Path: "/busy-refuse",
		Upstream: newUp("lan", "http://"+smqtest.DeadAddr(t)+"/smq"), RefuseTemporary: true}}})
	first := r.raw(t, "/open")
	first.Login("first-of-one")
	ws := r.wss(t, "", "/open", nil)
	if ce := wsClose(t, ws); ce.Code != websocket.CloseTryAgainLater || ce.Text != "server busy: too many sessions" {
		t.Errorf("busy WebSocket: close %d %q, want 1013 \"server busy: too many sessions\"", ce.Code, ce.Text)
	}
	wantReason(t, r.logs.nextSession(t), "busy")
	busyRefused := r.wss(t, "", "/busy-refuse", nil) // RefuseTemporary
	wsRead(t, busyRefused)                           // our Init
	wsSend(t, busyRefused, smq.Connect{Version: 1, UID: "busy-refused"})
	if m := wsRead(t, busyRefused); m != (smq.Connack{Code: smq.CodeServerUnavailable, Reason: "server busy: too many sessions"}) {
		t.Errorf("busy, refuse: got %+v", m)
	}
	if ce := wsClose(t, busyRefused); ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("busy, refuse: close %d %q, want 1013", ce.Code, ce.Text)
	}
	wantReason(t, r.logs.nextSession(t), "busy")
	c := r.rawTLS(t, "", nil)
	c.WriteBytes(r.bootstrap("/open", "SendSmqHttpResponse: true"))
	if resp := c.ReadHTTPResponse(); resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP answer %s", resp.Status)
	}
	c.ExpectClosed()
	wantReason(t, r.logs.nextSession(t), "busy")

	// Shutdown, refuse: Disconnect "shutdown", then 1001.
	first.Close()
	wantReason(t, r.logs.nextSession(t), "client_closed")
	ws = r.wss(t, "", "/busy-refuse", nil) // the slot is free; its dead upstream: our Init, waiting for Connect
	wsRead(t, ws)
	go r.gw.Shutdown(context.Background())
	if m := wsRead(t, ws); m != (smq.Disconnect{Reason: "shutdown"}) {
		t.Errorf("shutdown, refuse: got %+v, want Disconnect \"shutdown\"", m)
	}
	if ce := wsClose(t, ws); ce.Code != websocket.CloseGoingAway || ce.Text != "shutdown" {
		t.Errorf("shutdown, refuse: close %d %q, want 1001 \"shutdown\"", ce.Code, ce.Text)
	}
}

// TestBrokerServerUnavailablePasses: a broker's Connack 0x02 (server
// unavailable; in a reconnect storm, a broker whose Connect timer ran out
// while the gateway was busy) is a passing condition that smq.js and the C
// client would take as final (SMQ-WIRE §5): the client gets no SMQ
// refusal, only the end of the stream (raw) or close 1013 (WebSocket), and
// retries; the log says why.
func TestBrokerServerUnavailablePasses(t *testing.T) {
	t.Parallel()
	busy := func(*broker.ConnectRequest) (smq.ConnackCode, string) {
		return smq.CodeServerUnavailable, "too many clients"
	}
	r := newRig(t, rigOptions{broker: broker.Config{Authenticate: busy}})
	c := r.raw(t, "/open")
	c.Send(smq.Connect{Version: 1, UID: "device-storm-1"})
	c.ExpectClosed()
	rec := r.logs.nextSession(t)
	wantReason(t, rec, "upstream_unavailable")
	if d, _ := rec["detail"].(string); !strings.Contains(d, "0x02") || !strings.Contains(d, "too many clients") {
		t.Errorf("log detail %q does not say the broker answered 0x02 and why", d)
	}
	ws := wssWithCert(t, r, "/open", nil)
	if m := wsRead(t, ws); m.Type() != smq.TypeInit {
		t.Fatalf("got %+v, want Init", m)
	}
	wsSend(t, ws, smq.Connect{Version: 1, UID: "browser-storm-1"})
	if ce := wsClose(t, ws); ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("close %d %q, want 1013", ce.Code, ce.Text)
	}
	wantReason(t, r.logs.nextSession(t), "upstream_unavailable")
}

// TestEarlyServerUnavailablePasses: a broker's Connack 0x02 that comes
// before the client had time to send its Connect (with Init at once, as a
// busy broker answers, or after the gateway spent most of the broker's
// wait setting the session up, as in a reconnect storm) says nothing about
// the client: it ends the session without an SMQ refusal, while one that
// the client earned by holding Init for most of the broker's timeout is
// relayed (TestNoConnectDefaults).
func TestEarlyServerUnavailablePasses(t *testing.T) {
	t.Parallel()
	busy, err := upstream.New(upstream.Config{Name: "busy",
		URLs: []string{frontEnd(t, smq.CodeServerUnavailable, "no Connect received in time", nil)}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/busy", Upstream: busy}}})
	c := r.rawTLS(t, "", nil)
	c.WriteBytes(r.bootstrap("/busy"))
	c.ReadInit()
	c.ExpectClosed()
	rec := r.logs.nextSession(t)
	wantReason(t, rec, "upstream_unavailable")
	if d, _ := rec["detail"].(string); !strings.Contains(d, "no Connect received in time") {
		t.Errorf("log detail %q does not carry the broker's reason", d)
	}
	ws := r.wss(t, "", "/busy", nil)
	if m := wsRead(t, ws); m.Type() != smq.TypeInit {
		t.Fatalf("got %+v, want Init", m)
	}
	if ce := wsClose(t, ws); ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("close %d %q, want 1013", ce.Code, ce.Text)
	}
	wantReason(t, r.logs.nextSession(t), "upstream_unavailable")
}
