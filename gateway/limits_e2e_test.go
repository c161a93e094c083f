package gateway_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
)

// TestPerAddressAndMessageLimits: each limit refuses as documented and the
// log names it. Each limit has a gateway of its own, so that the one second
// a rate is measured over starts right before the messages that test it.
// Not parallel: the session rate's refusal needs the steps between the
// starts to take well under the second a token takes to come back.
func TestPerAddressAndMessageLimits(t *testing.T) {
	perIP := apptest.Start(t, t.TempDir(), `
[limits]
max_sessions_per_ip = 2
session_rate_per_ip = 1   # burst 2
`+apptest.Listener("lan", "")+`  temporary_failures = "refuse" # the Connack names the limit
`)
	addr := perIP.GW.Addr("lan").String()
	refused := func(c *smqtest.Conn, want string) {
		t.Helper()
		c.Send(smq.Connect{Version: 1, UID: "limited-client"})
		ack := c.ExpectConnack(smq.CodeServerUnavailable)
		if ack.Reason != want {
			t.Errorf("Connack 0x02 %q, want %q", ack.Reason, want)
		}
	}

	// Two open sessions from 127.0.0.1; the third is refused.
	one := smqtest.Connect(t, addr, "limited-one")
	two := smqtest.Connect(t, addr, "limited-two")
	refused(smqtest.Dial(t, addr), "server busy: too many sessions from your address")
	// Closing one frees its slot, but the burst of 2 starts is spent (a
	// token comes back after a second).
	two.Close()
	waitLogged(t, perIP, "reason=client_closed", 1)
	refused(smqtest.Dial(t, addr), "server busy: sessions from your address start too fast")
	one.Close()
	if logs := perIP.Logs.String(); !strings.Contains(logs, `msg="session refused: per-address limit"`) {
		t.Errorf("per-address refusals not logged:\n%s", logs)
	}
	m := scrape(t, perIP.GW)
	for _, limit := range []string{"max_sessions_per_ip", "session_rate_per_ip"} {
		if v := m.get(t, "smqgw_limit_refusals_total", "listener", "lan", "limit", limit); v != 1 {
			t.Errorf("%s refusals = %v, want 1", limit, v)
		}
	}

	// message_rate: the sixth message within a second ends the session.
	rate := apptest.Start(t, t.TempDir(), `
[limits]
message_rate = 5
`+apptest.Listener("lan", ""))
	c := smqtest.Connect(t, rate.GW.Addr("lan").String(), "limited-rate")
	for range 6 {
		c.Send(smq.Ping{})
	}
	if d := disconnectAfterPongs(t, c); d.Reason != "rate limit exceeded" {
		t.Errorf("Disconnect %q, want \"rate limit exceeded\"", d.Reason)
	}
	waitLogged(t, rate, `reason=rate_limited`, 1)
	if logs := rate.Logs.String(); !strings.Contains(logs, `detail="more than 5 messages per second"`) {
		t.Errorf("message rate not logged:\n%s", logs)
	}
	if v := scrape(t, rate.GW).get(t, "smqgw_limit_refusals_total", "listener", "lan", "limit", "message_rate"); v != 1 {
		t.Errorf("message_rate refusals = %v, want 1", v)
	}

	// message_rate_per_ip: two sessions of one address share it; the one
	// whose message goes over ends.
	perAddr := apptest.Start(t, t.TempDir(), `
[limits]
message_rate_per_ip = 10
`+apptest.Listener("lan", ""))
	addr = perAddr.GW.Addr("lan").String()
	first := smqtest.Connect(t, addr, "shared-rate-one")
	second := smqtest.Connect(t, addr, "shared-rate-two")
	for range 8 {
		first.Send(smq.Ping{})
	}
	for range 8 {
		first.ExpectType(smq.TypePong)
	}
	for range 8 {
		second.Send(smq.Ping{})
	}
	if d := disconnectAfterPongs(t, second); d.Reason != "rate limit exceeded" {
		t.Errorf("Disconnect %q, want \"rate limit exceeded\"", d.Reason)
	}
	waitLogged(t, perAddr, `detail="more than 10 messages per second from the client's address"`, 1)
	if v := scrape(t, perAddr.GW).get(t, "smqgw_limit_refusals_total", "listener", "lan", "limit", "message_rate_per_ip"); v != 1 {
		t.Errorf("message_rate_per_ip refusals = %v, want 1", v)
	}
}

// waitLogged waits until the gateway's log holds want at least n times.
func waitLogged(t *testing.T, b *apptest.Running, want string, n int) {
	t.Helper()
	smqtest.WaitUntil(t, "a log line with "+want, func() bool { return strings.Count(b.Logs.String(), want) >= n })
}

// TestLimitsCounted: each session and connection limit refuses as
// documented, and smqgw_limit_refusals_total counts it by name.
func TestLimitsCounted(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	b := apptest.Start(t, t.TempDir(), `
[limits]
max_sessions = 1
max_message_size = 100
# Short, but long enough that a loaded machine (go test -race ./...) does
# not trip them where the test does not mean to.
handshake_timeout = "500ms"
request_timeout = "1s"
connect_timeout = "1s"
idle_timeout = "1s"
`+apptest.Listener("lan", "")+`  temporary_failures = "refuse" # the Connack names the limit
`+apptest.Listener("edge", "files")+apptest.CertFiles(server))
	lan, edge := b.GW.Addr("lan").String(), b.GW.Addr("edge").String()

	// max_sessions: a second session on the listener is refused while the
	// first is open; idle_timeout then ends the first.
	one := smqtest.Connect(t, lan, "limit-one")
	two := smqtest.Dial(t, lan)
	two.Send(smq.Connect{Version: 1, UID: "limit-two"})
	if ack := two.ExpectConnack(smq.CodeServerUnavailable); ack.Reason != "server busy: too many sessions" {
		t.Errorf("second session: %q", ack.Reason)
	}
	if m, _ := smq.Decode(one.ExpectType(smq.TypeDisconnect)); m.(smq.Disconnect).Reason != "idle timeout" {
		t.Errorf("idle session got %#v", m)
	}
	one.Close()
	waitLogged(t, b, "reason=idle_timeout", 1)
	// max_message_size: a Publish over 100 bytes ends the session.
	big := smqtest.Connect(t, lan, "limit-big")
	big.Send(&smq.Publish{TID: 1, PTID: big.ETID, Payload: make([]byte, 100)})
	if m, _ := smq.Decode(big.ExpectType(smq.TypeDisconnect)); m.(smq.Disconnect).Reason != "message too big" {
		t.Errorf("oversize message got %#v", m)
	}
	big.Close()
	waitLogged(t, b, "reason=too_big", 1)
	// connect_timeout: no Connect after Init.
	silent := smqtest.Dial(t, lan)
	if _, err := silent.ReadFrame(smqtest.WaitFor); err == nil {
		// the gateway closes without a message
	} else if !smqtest.IsClosed(err) {
		t.Errorf("silent client: %v", err)
	}
	waitLogged(t, b, "reason=connect_timeout", 1)
	// handshake_timeout: a TCP connection to the TLS port that says nothing.
	quiet := smqtest.DialTCP(t, edge)
	if _, err := quiet.NetConn.Read(make([]byte, 1)); err == nil {
		t.Error("the gateway sent something to a silent TLS client")
	}

	// request_timeout: a connection that sends no request, and one that
	// sends half a header.
	mute := smqtest.DialTCP(t, lan)
	slow := smqtest.DialTCP(t, lan)
	slow.WriteBytes([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
	for _, c := range []*smqtest.Conn{mute, slow} {
		if _, err := c.NetConn.Read(make([]byte, 1)); err == nil {
			t.Error("the gateway sent something to a client without a whole request")
		}
	}

	m := waitMetric(t, b.GW, 2, "smqgw_limit_refusals_total", "listener", "lan", "limit", "request_timeout")
	for listener, limits := range map[string][]string{
		"lan":  {"max_sessions", "idle_timeout", "max_message_size", "connect_timeout", "request_timeout"},
		"edge": {"handshake_timeout"},
	} {
		for _, limit := range limits {
			want := 1.0
			if limit == "request_timeout" {
				want = 2
			}
			if v := m.get(t, "smqgw_limit_refusals_total", "listener", listener, "limit", limit); v != want {
				t.Errorf("%s %s refusals = %v, want %v", listener, limit, v, want)
			}
		}
	}
	if v := m.get(t, "smqgw_tls_handshake_failures_total", "listener", "edge", "reason", "timeout"); v != 1 {
		t.Errorf("handshake timeouts = %v", v)
	}
}

// TestShutdownEndsHandshakes: a client silent in its TLS handshake does not
// outlive Shutdown, and is not counted as a handshake timeout.
func TestShutdownEndsHandshakes(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	b := apptest.Start(t, t.TempDir(), apptest.Listener("edge", "files")+apptest.CertFiles(server))
	m := b.GW.Metrics()
	// The client sends its ClientHello and goes silent: once the server's
	// flight has arrived, the gateway is in the handshake, waiting for the
	// client's Finished.
	quiet := smqtest.DialTCP(t, b.GW.Addr("edge").String())
	hctx, hcancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer hcancel()
	if err := tls.Client(&helloOnly{Conn: quiet.NetConn}, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"}).HandshakeContext(hctx); err != nil {
		t.Fatalf("the server's handshake flight: %v", err)
	}
	before := scrape(t, b.GW)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	closed := make(chan error, 1)
	go func() {
		_ = quiet.NetConn.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		_, err := quiet.NetConn.Read(make([]byte, 1))
		closed <- err
	}()
	if err := b.GW.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err == nil || smqtest.IsTimeout(err) {
		t.Errorf("the silent client: %v", err)
	}
	if d := time.Since(start); d > limits.DefaultHandshakeTimeout/2 {
		t.Errorf("closed after %v, the handshake timeout is %v: Shutdown did not end it", d, limits.DefaultHandshakeTimeout)
	}
	if f := before["smqgw_tls_handshake_failures_total"]; f != nil {
		t.Errorf("handshake failures before shutdown: %v", f.Metric)
	}
	// After the shutdown, through the registry: the admin endpoint is closed.
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "smqgw_tls_handshake_failures_total" && len(f.Metric) > 0 {
			t.Errorf("the shutdown counted as a handshake failure: %v", f.Metric)
		}
	}
}

// helloOnly writes the first message, a ClientHello, and drops what
// follows: a client that stops halfway through its handshake.
type helloOnly struct {
	net.Conn
	wrote bool
}

func (c *helloOnly) Write(p []byte) (int, error) {
	if c.wrote {
		return len(p), nil
	}
	c.wrote = true
	return c.Conn.Write(p)
}

// disconnectAfterPongs reads Pongs (answers to what the gateway relayed
// before a limit) until a Disconnect, and returns it.
func disconnectAfterPongs(t *testing.T, c *smqtest.Conn) smq.Disconnect {
	t.Helper()
	for {
		msg := c.Read()
		switch smq.Type(msg[0]) {
		case smq.TypePong:
			continue
		case smq.TypeDisconnect:
			m, err := smq.Decode(msg)
			if err != nil {
				t.Fatal(err)
			}
			return m.(smq.Disconnect)
		}
		t.Fatalf("got %s, want Pongs and a Disconnect", smq.Type(msg[0]))
	}
}

// TestWebSocketPingsCounted: WebSocket pings count toward message_rate,
// though they never reach the broker: a ping flood ends the session with
// Disconnect "rate limit exceeded" and close 1008 (issue 16: 645,695 pings
// in 5 s cost 3.2 CPU-seconds before).
func TestWebSocketPingsCounted(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), `
[limits]
message_rate = 5
`+apptest.Listener("lan", ""))
	ws, _, err := (&websocket.Dialer{HandshakeTimeout: smqtest.WaitFor}).Dial("ws://"+b.GW.Addr("lan").String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	wsLogin(t, ws, "ping-flooder")
	// 50 pings: over the limit even if the one-second window rolled over
	// several times on a slow machine.
	for i := range 50 {
		if err := ws.WriteControl(websocket.PingMessage, []byte{byte(i)}, time.Now().Add(smqtest.WaitFor)); err != nil {
			break // closed by the gateway already
		}
	}
	if got := wsRead(t, ws); got != (smq.Disconnect{Reason: "rate limit exceeded"}) {
		t.Fatalf("got %#v, want Disconnect \"rate limit exceeded\"", got)
	}
	if ce := wsClose(t, ws); ce.Code != websocket.ClosePolicyViolation {
		t.Errorf("close code %d, want 1008", ce.Code)
	}
	waitLogged(t, b, `detail="more than 5 messages per second, WebSocket pings and pongs included"`, 1)
}
