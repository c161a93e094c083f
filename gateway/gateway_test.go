package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
	"github.com/smqgw/smqgw/wire"
)

func TestMain(m *testing.M) { smqtest.Main(m, 6) }

// countingUpstream counts dials, to prove refused clients cause none.
type countingUpstream struct {
	upstream.Upstream
	dials atomic.Int64
}

func (c *countingUpstream) Dial(ctx context.Context, req upstream.Request) (wire.Conn, error) {
	c.dials.Add(1)
	return c.Upstream.Dial(ctx, req)
}

// env is a LAN broker on loopback behind a gateway with a TLS listener.
type env struct {
	broker    *broker.Broker
	brokerURL string // raw, plain, straight to the broker
	gw        *gateway.Gateway
	addr      string // the gateway's TLS listener
	ca        *testpki.CA
	clientCA  *testpki.CA
	up        *countingUpstream
	published atomic.Int64 // Publish messages the broker accepted
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{ca: testpki.NewCA(t), clientCA: testpki.NewCA(t)}
	bl := smqtest.Listen(t)
	e.broker = apptest.Broker(t, broker.Config{OnPublish: func(*broker.Client, *smq.Publish) bool {
		e.published.Add(1)
		return true
	}}, bl)
	e.brokerURL = "http://" + bl.Addr().String() + "/smq"

	lan, err := upstream.New(upstream.Config{Name: "lan", URLs: []string{e.brokerURL}})
	if err != nil {
		t.Fatal(err)
	}
	e.up = &countingUpstream{Upstream: lan}
	down, err := upstream.New(upstream.Config{Name: "down", URLs: []string{"http://127.0.0.1:1/smq"},
		DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	policy := func(cfg tlsterm.PolicyConfig) *tlsterm.Policy {
		t.Helper()
		p, err := tlsterm.NewPolicy(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pinned := e.clientCA.Client(t, "device-pinned")
	server := e.ca.Server(t, "127.0.0.1", "localhost")
	e.gw = runGateway(t, gateway.Config{
		Limits: limits.Limits{ConnectTimeout: 3 * time.Second},
		Listeners: []gateway.Listener{{
			Name:     "edge",
			Listener: smqtest.Listen(t),
			Certs:    (*certs.Static)(&server.TLS),
			Routes: []*gateway.Route{
				{Path: "/require", Upstream: e.up, Policy: policy(tlsterm.PolicyConfig{
					Mode: tlsterm.Require, ClientCAs: e.clientCA.Pool, AllowCN: []string{"device-*"}})},
				{Path: "/optional", Upstream: e.up, Policy: policy(tlsterm.PolicyConfig{
					Mode: tlsterm.Optional, ClientCAs: e.clientCA.Pool})},
				{Path: "/pinned", Upstream: e.up, Policy: policy(tlsterm.PolicyConfig{
					Mode: tlsterm.Require, ClientCAs: e.clientCA.Pool, Pins: []string{tlsterm.SPKIPin(pinned.Cert)}})},
				{Path: "/down", Upstream: down, RefuseTemporary: true},
				{Path: "/open", Upstream: e.up, AllowedOrigins: []string{"https://app.example"}},
			},
		}},
	})
	e.addr = e.gw.Addr("edge").String()
	return e
}

// runGateway starts a gateway with cfg and shuts it down when the test
// ends.
func runGateway(tb testing.TB, cfg gateway.Config) *gateway.Gateway {
	tb.Helper()
	gw, err := gateway.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	return gw
}

// dial connects a client through the gateway.
func (e *env) dial(t *testing.T, scheme, path string, cert *tls.Certificate) (*client.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	c, err := client.Dial(ctx, scheme+"://"+e.addr+path, client.Options{RootCAs: e.ca.Pool, Certificate: cert})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestCertificateMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	expired := e.clientCA.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device-old"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	serverOnly := e.clientCA.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device-eku"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	cases := []struct {
		name   string
		path   string
		cert   *tls.Certificate
		code   smq.ConnackCode
		reason string // part of the Connack reason
	}{
		{"no certificate, required", "/require", nil, smq.CodeCertRequired, "certificate required"},
		{"other CA", "/require", &testpki.NewCA(t).Client(t, "device-1").TLS, smq.CodeCertNotAccepted, "unknown authority"},
		{"expired", "/require", &expired.TLS, smq.CodeCertNotAccepted, "certificate expired " + expired.Cert.NotAfter.UTC().Format("2006-01-02")},
		{"wrong EKU", "/require", &serverOnly.TLS, smq.CodeCertNotAccepted, "client authentication"},
		{"CN not allowed", "/require", &e.clientCA.Client(t, "laptop-7").TLS, smq.CodeCertNotAccepted, `CN "laptop-7" not allowed`},
		{"pin mismatch", "/pinned", &e.clientCA.Client(t, "device-2").TLS, smq.CodeCertNotAccepted, "not pinned"},
		{"valid", "/require", &e.clientCA.Client(t, "device-3").TLS, smq.CodeAccepted, ""},
		{"optional without certificate", "/optional", nil, smq.CodeAccepted, ""},
		{"upstream down", "/down", nil, smq.CodeServerUnavailable, "upstream down unavailable"},
	}
	for _, scheme := range []string{"wss", "https"} {
		for _, tc := range cases {
			t.Run(scheme+"/"+tc.name, func(t *testing.T) {
				before := e.up.dials.Load()
				c, err := e.dial(t, scheme, tc.path, tc.cert)
				if tc.code == smq.CodeAccepted {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					apptest.PubSub(t, c, c)
					return
				}
				var re *client.RefusedError
				if !errors.As(err, &re) {
					t.Fatalf("got %v, want Connack %v", err, tc.code)
				}
				if re.Code != tc.code || !strings.Contains(re.Reason, tc.reason) {
					t.Fatalf("Connack %v %q, want %v with %q", re.Code, re.Reason, tc.code, tc.reason)
				}
				if n := e.up.dials.Load() - before; n != 0 && tc.code != smq.CodeServerUnavailable {
					t.Fatalf("a refused client caused %d upstream dials", n)
				}
			})
		}
	}
}

func TestBridge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	browser, err := e.dial(t, "wss", "/optional", nil)
	if err != nil {
		t.Fatal(err)
	}
	device, err := client.Dial(ctx, e.brokerURL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()
	apptest.PubSub(t, browser, device)
	apptest.PubSub(t, device, browser)

	// One-to-one across the gateway: the device answers the browser's ETID.
	replies := make(chan string, 1)
	if _, err := browser.Subscribe(ctx, client.Self, func(m *client.Message) { replies <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	if _, err := device.Subscribe(ctx, "cmd", func(m *client.Message) {
		device.PublishTo(ctx, m.PTID, []byte("on"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := browser.Publish(ctx, "cmd", []byte("switch on")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-replies:
		if r != "on" {
			t.Fatalf("reply %q", r)
		}
	case <-ctx.Done():
		t.Fatal("no one-to-one reply through the gateway")
	}
}

func wsDialer(e *env) *websocket.Dialer {
	return &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool}, HandshakeTimeout: smqtest.WaitFor}
}

func TestCrossOriginRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, port, _ := net.SplitHostPort(e.addr)
	for _, tc := range []struct {
		path, origin string
		status       int
	}{
		{"/optional", "https://evil.example", http.StatusForbidden},
		{"/optional", "https://" + e.addr, http.StatusSwitchingProtocols}, // the gateway's own
		{"/optional", "https://" + e.addr + "/", http.StatusSwitchingProtocols},
		{"/optional", "http://" + e.addr, http.StatusForbidden},              // not the listener's scheme
		{"/optional", "https://127.0.0.1:1", http.StatusForbidden},           // nor its port
		{"/optional", "https://other.example:" + port, http.StatusForbidden}, // nor a name its certificate has
		{"/optional", "null", http.StatusForbidden},
		{"/open", "https://app.example", http.StatusSwitchingProtocols},
		{"/open", "https://" + e.addr, http.StatusForbidden}, // an allow-list replaces same-host
	} {
		h := http.Header{"Origin": {tc.origin}}
		conn, resp, err := wsDialer(e).Dial("wss://"+e.addr+tc.path, h)
		if conn != nil {
			conn.Close()
		}
		if resp == nil {
			t.Fatalf("%s from %s: %v", tc.path, tc.origin, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s from %s: status %d, want %d", tc.path, tc.origin, resp.StatusCode, tc.status)
		}
	}
	// The Host header does not vouch for an Origin (it did: the check
	// compared the two).
	h := http.Header{"Origin": {"https://evil.example:" + port}, "Host": {"evil.example:" + port}}
	d := wsDialer(e)
	d.TLSClientConfig = &tls.Config{RootCAs: e.ca.Pool, ServerName: "127.0.0.1"}
	if _, resp, _ := d.Dial("wss://"+e.addr+"/optional", h); resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("Origin and Host both evil.example: %v, want 403", resp)
	}
	if n := e.up.dials.Load(); n != 0 {
		// Accepted upgrades that never sent Connect still dial; the 403s must not.
		t.Logf("%d upstream dials for the accepted upgrades", n)
	}
}

// wsSession opens a WebSocket session through the gateway by hand and
// returns it connected (after Connack 0x00) with its ETID.
func wsSession(t *testing.T, e *env, path string) (*websocket.Conn, uint32) {
	t.Helper()
	conn, _, err := wsDialer(e).Dial("wss://"+e.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	read := func(want smq.Type) []byte {
		t.Helper()
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("reading %v: %v", want, err)
		}
		if smq.Type(msg[0]) != want {
			t.Fatalf("got %v, want %v", smq.Type(msg[0]), want)
		}
		return msg
	}
	read(smq.TypeInit)
	conn.WriteMessage(websocket.BinaryMessage, smq.Connect{Version: 1, UID: "ws-by-hand-" + t.Name()}.Append(nil))
	ack := read(smq.TypeConnack)
	if ack[1] != 0 {
		t.Fatalf("connack %x", ack)
	}
	return conn, uint32(ack[2])<<24 | uint32(ack[3])<<16 | uint32(ack[4])<<8 | uint32(ack[5])
}

func TestOversizeWebSocketMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn, etid := wsSession(t, e, "/optional")
	// 65,534 bytes of type + body: one more than a raw frame holds.
	big := (&smq.Publish{TID: etid, PTID: etid, Payload: make([]byte, smq.MaxRawMessage+1-13)}).Append(nil)
	if err := conn.WriteMessage(websocket.BinaryMessage, big); err != nil {
		t.Fatal(err)
	}
	_, _, err := conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("after a %d-byte message: %v, want close 1009", len(big), err)
	}
	if n := e.published.Load(); n != 0 {
		t.Fatalf("the broker saw %d publishes", n)
	}
}

func TestPubFragOverWebSocketRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn, etid := wsSession(t, e, "/optional")
	frag := (&smq.PubFrag{TID: etid, PTID: etid, Payload: []byte("x")}).Append(nil)
	conn.WriteMessage(websocket.BinaryMessage, frag)
	var disconnect string
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseProtocolError) {
				t.Fatalf("close: %v, want 1002", err)
			}
			break
		}
		if typ == websocket.BinaryMessage && smq.Type(msg[0]) == smq.TypeDisconnect {
			disconnect = string(msg[1:])
		}
	}
	if !strings.HasPrefix(disconnect, "protocol error") {
		t.Fatalf("Disconnect %q, want a protocol error", disconnect)
	}
}

func TestRawOverTLSPingAndShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(smqtest.WaitFor))
	// The C client's bootstrap: HTTP/1.0, no HTTP answer; Connect sent
	// before Init arrives (the gateway must hold it until the broker's Init).
	frame, _ := smq.AppendRawMessage([]byte("GET /optional HTTP/1.0\r\nHost: x\r\nSimpleMQ: 1\r\n\r\n"),
		smq.Connect{Version: 1, UID: "c-client-style"})
	frame, _ = smq.AppendRawMessage(frame, smq.Ping{})
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	r := smq.NewReader(bufio.NewReader(conn))
	for _, want := range []smq.Type{smq.TypeInit, smq.TypeConnack, smq.TypePong} {
		msg, err := r.Read()
		if err != nil {
			t.Fatalf("reading %v: %v", want, err)
		}
		if smq.Type(msg[0]) != want {
			t.Fatalf("got %v, want %v", smq.Type(msg[0]), want)
		}
		if want == smq.TypeConnack && msg[1] != 0 {
			t.Fatalf("connack %x", msg)
		}
	}
	// The drain ends the stream without a Disconnect, which the C client
	// would take as final.
	go e.gw.Shutdown(context.Background())
	msg, err := r.Read()
	if !errors.Is(err, io.EOF) {
		t.Fatalf("got %x, %v; want the end of the stream", msg, err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	emb := &upstream.Embedded{}
	_, err := gateway.New(gateway.Config{Listeners: []gateway.Listener{
		{Name: "a", Routes: []*gateway.Route{{Path: "/x", Upstream: emb}, {Path: "/x", Upstream: emb}, {Path: "y", Upstream: emb}}},
		{Name: "a", Routes: []*gateway.Route{{Path: "/"}}},
		{Name: "b"},
	}})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`route "/x" defined twice`, `invalid route path "y"`, `listener "a" defined twice`,
		`route "/" has no upstream`, `listener "b" has no routes`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestWebSocketRefusalCloseCode: after the refusing Connack, a WebSocket
// client gets close 1008 (policy violation), as the README says.
func TestWebSocketRefusalCloseCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn, _, err := wsDialer(e).Dial("wss://"+e.addr+"/require", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	if _, msg, err := conn.ReadMessage(); err != nil || smq.Type(msg[0]) != smq.TypeInit {
		t.Fatalf("Init: %x %v", msg, err)
	}
	conn.WriteMessage(websocket.BinaryMessage, smq.Connect{Version: 1, UID: "no-cert-browser"}.Append(nil))
	_, msg, err := conn.ReadMessage()
	if err != nil || smq.Type(msg[0]) != smq.TypeConnack || smq.ConnackCode(msg[1]) != smq.CodeCertRequired {
		t.Fatalf("Connack: %x %v", msg, err)
	}
	_, _, err = conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("after the refusal: %v, want close 1008", err)
	}
	if n := e.up.dials.Load(); n != 0 {
		t.Fatalf("%d upstream dials for a refused client", n)
	}
}

// TestEmptyWebSocketMessage: an empty WebSocket message gets its
// documented answer at once — Disconnect "protocol error…" after Connack,
// then close 1002 — before Connect (instead of it) as after, and nothing
// reaches the broker.
func TestEmptyWebSocketMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, connected := range []bool{false, true} {
		var conn *websocket.Conn
		if connected {
			conn, _ = wsSession(t, e, "/optional")
		} else {
			var err error
			if conn, _, err = wsDialer(e).Dial("wss://"+e.addr+"/optional", nil); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
		}
		conn.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		conn.WriteMessage(websocket.BinaryMessage, nil)
		var disconnect string
		var end error
		for end == nil {
			typ, msg, err := conn.ReadMessage()
			switch {
			case err != nil:
				end = err
			case typ == websocket.BinaryMessage && smq.Type(msg[0]) == smq.TypeDisconnect:
				disconnect = string(msg[1:])
			}
		}
		if !websocket.IsCloseError(end, websocket.CloseProtocolError) || !strings.HasPrefix(disconnect, "protocol error") {
			t.Errorf("connected %v: Disconnect %q, end %v; want Disconnect \"protocol error…\" and close 1002", connected, disconnect, end)
		}
	}
}
