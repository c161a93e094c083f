package gateway_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

// dialFrom opens a TCP connection to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: smqtest.WaitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sessionFrom logs in a raw session over plain TCP from local.
func sessionFrom(t *testing.T, local, addr, uid string) *smqtest.Conn {
	t.Helper()
	c := smqtest.New(t, dialFrom(t, local, addr))
	c.WriteBytes(smqtest.RawRequest("GET / HTTP/1.1", "Host: "+addr, "SimpleMQ: 1"))
	c.ReadInit()
	c.Login(uid)
	return c
}

// refusedAtOnce expects the gateway to close c without a word, well before
// any timeout the test configured (a minute).
func refusedAtOnce(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	if n, err := c.Read(make([]byte, 1)); err == nil || smqtest.IsTimeout(err) {
		t.Fatalf("%s: read %d bytes, %v; want the connection closed at once", what, n, err)
	}
}

// TestConnectionLimits: connections are counted per client address and
// per listener before any TLS or HTTP work: the pending ones (handshake,
// bootstrap) and all of them; a refused connection is closed at once,
// and another address is served meanwhile. A connection that became a
// session is no longer pending.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	b := apptest.Start(t, t.TempDir(), `
[limits]
handshake_timeout = "1m"
request_timeout = "1m"
max_pending_per_ip = 2
max_connections_per_ip = 4
max_pending = 4
`+apptest.Listener("edge", "files")+apptest.Listener("lan", "")+apptest.CertFiles(server))
	tlsAddr, lan := b.GW.Addr("edge").String(), b.GW.Addr("lan").String()

	// 127.0.0.2: two silent connections on the TLS listener (stuck before
	// the handshake) use its pending share; the third is refused.
	for range 2 {
		dialFrom(t, "127.0.0.2", tlsAddr)
	}
	waitMetric(t, b.GW, 2, "smqgw_connections_pending", "listener", "edge")
	refusedAtOnce(t, dialFrom(t, "127.0.0.2", tlsAddr), "a third pending connection from 127.0.0.2")
	refusedAtOnce(t, dialFrom(t, "127.0.0.2", lan), "one on another listener")
	// Another address is served meanwhile, over TLS.
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: smqtest.WaitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}},
		"tcp", tlsAddr, &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatalf("another address during the flood: %v", err)
	}
	tc.Close()

	// Sessions are not pending: 127.0.0.4 holds three, and may still open
	// one pending connection (its fourth) but not a fifth (max 4).
	for i := range 3 {
		sessionFrom(t, "127.0.0.4", lan, fmt.Sprintf("session-%d", i))
	}
	dialFrom(t, "127.0.0.4", lan)
	waitMetric(t, b.GW, 1, "smqgw_connections_pending", "listener", "lan")
	refusedAtOnce(t, dialFrom(t, "127.0.0.4", lan), "a fifth connection from 127.0.0.4")

	// The listener's pending cap: edge holds 2 (127.0.0.2); two more from
	// 127.0.0.5 fill it, and 127.0.0.6 is refused there, not on lan.
	for range 2 {
		dialFrom(t, "127.0.0.5", tlsAddr)
	}
	waitMetric(t, b.GW, 4, "smqgw_connections_pending", "listener", "edge")
	refusedAtOnce(t, dialFrom(t, "127.0.0.6", tlsAddr), "a connection over the listener's max_pending")
	sessionFrom(t, "127.0.0.6", lan, "another-listener")

	m := scrape(t, b.GW)
	for _, tc := range []struct {
		listener, limit string
		want            float64
	}{
		{"edge", "max_pending_per_ip", 1}, {"lan", "max_pending_per_ip", 1},
		{"lan", "max_connections_per_ip", 1}, {"edge", "max_pending", 1},
	} {
		if got := m.get(t, "smqgw_limit_refusals_total", "listener", tc.listener, "limit", tc.limit); got != tc.want {
			t.Errorf("%s %s refusals: %v, want %v", tc.listener, tc.limit, got, tc.want)
		}
	}
	if !strings.Contains(b.Logs.String(), `msg="connection refused: connection limit" listener=edge client=127.0.0.2 limit=max_pending_per_ip`) {
		t.Errorf("refusal not logged:\n%s", b.Logs)
	}
}

// TestNotSMQClosesConnection: a request that is no SMQ bootstrap gets its
// 404 and the connection is closed, so that a keep-alive client cannot
// hold it without ever becoming a session.
func TestNotSMQClosesConnection(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), apptest.Listener("lan", ""))
	addr := b.GW.Addr("lan").String()
	c := dialFrom(t, "127.0.0.1", addr)
	fmt.Fprintf(c, "GET /favicon.ico HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n\r\n", addr)
	_ = c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !resp.Close {
		t.Fatalf("%s, Connection %q: want 404 and close", resp.Status, resp.Header.Get("Connection"))
	}
	if _, err := br.ReadByte(); err == nil || smqtest.IsTimeout(err) {
		t.Fatalf("connection still open after the 404: %v", err)
	}
}

// TestBusyAddressHoldsNoSlot: an address at max_sessions_per_ip is refused
// before it takes a listener slot, and at once — Init and Connack 0x02
// without waiting for its Connect — so another address still gets the
// listener's last slot while the refused connection stays open (before,
// the refusal held a slot for connect_timeout).
func TestBusyAddressHoldsNoSlot(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), `
[limits]
max_sessions = 3
max_sessions_per_ip = 2
connect_timeout = "1m"
`+apptest.Listener("lan", "")+`  temporary_failures = "refuse"
`)
	lan := b.GW.Addr("lan").String()
	sessionFrom(t, "127.0.0.2", lan, "busy-one")
	sessionFrom(t, "127.0.0.2", lan, "busy-two")
	refused := smqtest.New(t, dialFrom(t, "127.0.0.2", lan))
	refused.WriteBytes(smqtest.RawRequest("GET / HTTP/1.1", "Host: "+lan, "SimpleMQ: 1"))
	refused.ReadInit()
	// No Connect sent: the Connack comes anyway.
	if ack := refused.ExpectConnack(smq.CodeServerUnavailable); ack.Reason != "server busy: too many sessions from your address" {
		t.Errorf("Connack 0x02 %q", ack.Reason)
	}
	sessionFrom(t, "127.0.0.3", lan, "other-address") // the third slot is free
}

// TestSlowBodyHoldsNoSlot: a request whose body never comes is closed
// after request_timeout, 404 or not (net/http read what was left of the
// body without a deadline: 12 s and more with a 1 s request_timeout), so
// it cannot hold a pending slot.
func TestSlowBodyHoldsNoSlot(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), `
[limits]
request_timeout = "200ms"
`+apptest.Listener("lan", ""))
	addr := b.GW.Addr("lan").String()
	for _, req := range []string{
		"POST /favicon.ico HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
	} {
		c := dialFrom(t, "127.0.0.1", addr)
		fmt.Fprint(c, req)
		_ = c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		if _, err := io.Copy(io.Discard, c); err != nil { // the answer, then the end
			t.Fatalf("%q: %v; want the connection closed", req, err)
		}
	}
	waitMetric(t, b.GW, 0, "smqgw_connections_pending", "listener", "lan")
}

// TestRefusalsCloseTheConnection: every answer that is no session — the
// 404 of a path without a route, the 403 of a foreign Origin, the 400 of
// a malformed upgrade — closes the connection, so that none stays pending
// for more requests.
func TestRefusalsCloseTheConnection(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), `
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
  allowed_origins = ["https://app.example"]
`)
	addr := b.GW.Addr("lan").String()
	ws := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	for _, tc := range []struct{ name, req string }{
		{"no route", "GET /other HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"foreign Origin", "GET /smq HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n" + ws +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"},
		{"malformed upgrade", "GET /smq HTTP/1.1\r\nHost: x\r\n" + ws + "\r\n"},
	} {
		c := dialFrom(t, "127.0.0.1", addr)
		fmt.Fprint(c, tc.req)
		_ = c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !resp.Close || resp.StatusCode < 400 {
			t.Errorf("%s: %s, Connection %q: want a refusal that closes", tc.name, resp.Status, resp.Header.Get("Connection"))
		}
		if _, err := br.ReadByte(); err == nil || smqtest.IsTimeout(err) {
			t.Errorf("%s: the connection stays open: %v", tc.name, err)
		}
	}
}
