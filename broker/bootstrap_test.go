package broker_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// responseHead is what SMQ-WIRE.md §2 prescribes before Init when the client
// sends SendSmqHttpResponse: true.
const responseHead = "HTTP/1.1 200 OK\r\nSmqBroker: true\r\n\r\n"

// wantInitRaw checks that f is an Init raw frame laid out as SMQ-WIRE.md §3
// says: length, type 1, version 1, 4-byte seed, IP text, nothing else.
func wantInitRaw(t *testing.T, f smqtest.Frame, ip string) uint32 {
	t.Helper()
	want := []byte{0, byte(8 + len(ip)), 1, 1}
	if len(f.Raw) != 8+len(ip) || string(f.Raw[:4]) != string(want) || string(f.Raw[8:]) != ip {
		seed := []byte{0, 0, 0, 0}
		if len(f.Raw) >= 8 {
			seed = f.Raw[4:8]
		}
		t.Fatalf("Init raw frame wrong\n%s", smqtest.Diff(f.Raw, append(append(want, seed...), ip...)))
	}
	return binary.BigEndian.Uint32(f.Raw[4:])
}

// TestBootstrapRaw covers SMQ-WIRE.md §2: which requests are raw SMQ, and
// when the HTTP head comes before Init. Every case then logs in over the same
// stream, so the broker must not have eaten or added a byte.
func TestBootstrapRaw(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	tests := []struct {
		name     string
		request  []byte
		wantHead bool
	}{
		{"C client HTTP/1.0", smqtest.RawRequest("GET /smq HTTP/1.0",
			"Host: broker", "SimpleMQ: 1", "User-Agent: SimpleMQ/1"), false},
		{"HTTP/1.0 without Host", smqtest.RawRequest("GET / HTTP/1.0", "SimpleMQ: 1"), false},
		{"header name lower case", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker", "simplemq: 1"), false},
		{"header name upper case", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker", "SIMPLEMQ: 1"), false},
		{"SimpleMQ any value", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker", "SimpleMQ: whatever"), false},
		{"SimpleMQ empty value", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker", "SimpleMQ:"), false},
		{"method path query host ignored", smqtest.RawRequest("POST /some/where/else?x=1&y HTTP/1.1",
			"Host: elsewhere.example:1234", "SimpleMQ: 1"), false},
		{"Sec-WebSocket-Key without Upgrade is raw", smqtest.RawRequest("GET / HTTP/1.1",
			"Host: broker", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), false},
		{"Python", smqtest.RawRequest("GET /smq.lsp HTTP/1.1", "Host: broker", "SimpleMQ: 1",
			"SendSmqHttpResponse: true", "Connection: keep-alive", "X-App: 1"), true},
		{"Lua", smqtest.RawRequest("GET /smq.lsp HTTP/1.1", "Host: broker", "SimpleMQ: 1",
			"SendSmqHttpResponse: true"), true},
		{"Java", smqtest.RawRequest("GET /smq.lsp HTTP/1.1", "Host: broker", "SimpleMQ: true",
			"SendSmqHttpResponse: true"), true},
		{"response header name case-insensitive", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker",
			"SimpleMQ: 1", "sendsmqhttpresponse: true"), true},
		{"SendSmqHttpResponse True", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker",
			"SimpleMQ: 1", "SendSmqHttpResponse: True"), false},
		{"SendSmqHttpResponse 1", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker",
			"SimpleMQ: 1", "SendSmqHttpResponse: 1"), false},
		{"SendSmqHttpResponse false", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker",
			"SimpleMQ: 1", "SendSmqHttpResponse: false"), false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := smqtest.DialTCP(t, b.Addr)
			c.WriteBytes(tc.request)
			if tc.wantHead {
				c.ExpectBytes([]byte(responseHead))
			}
			// Without the head, the very first bytes are the Init frame:
			// ReadFull would see "HT" as a frame length otherwise.
			wantInitRaw(t, c.ReadFull(), "127.0.0.1")
			c.Login("bootstrap-" + string(rune('a'+i)))
			c.Barrier()
		})
	}
}

// TestBootstrapNotSMQ: a request with neither SimpleMQ nor Sec-WebSocket-Key
// gets HTTP 404 (SMQ-WIRE.md §2).
func TestBootstrapNotSMQ(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	tests := []struct {
		name    string
		request []byte
	}{
		{"plain GET", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker")},
		{"only SendSmqHttpResponse", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker", "SendSmqHttpResponse: true")},
		{"similar header name", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker", "X-SimpleMQ: 1")},
		{"Upgrade without key", smqtest.RawRequest("GET / HTTP/1.1", "Host: broker",
			"Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13")},
		{"HTTP/1.0 POST", smqtest.RawRequest("POST /smq HTTP/1.0", "Content-Length: 0")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := smqtest.DialTCP(t, b.Addr)
			c.WriteBytes(tc.request)
			resp := c.ReadHTTPResponse()
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %q, want 404", resp.Status)
			}
		})
	}
}

// TestInit covers the Init rules of SMQ-WIRE.md §4: layout, a fresh seed per
// connection, and the IP as text without "::ffff:".
func TestInit(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})

	t.Run("layout", func(t *testing.T) {
		c := smqtest.DialWith(t, b.Addr, "SimpleMQ: 1")
		wantInitRaw(t, c.ReadFull(), "127.0.0.1")
	})

	t.Run("fresh seed per connection", func(t *testing.T) {
		// 16 random u32 values collide with probability ~3e-8.
		seen := map[uint32]int{}
		for i := range 16 {
			c := smqtest.Dial(t, b.Addr)
			if j, dup := seen[c.Init.Seed]; dup {
				t.Fatalf("connections %d and %d got the same seed %#x", j, i, c.Init.Seed)
			}
			seen[c.Init.Seed] = i
			c.Close()
		}
	})

	t.Run("IPv4 on a dual-stack listener has no ::ffff:", func(t *testing.T) {
		l, err := net.Listen("tcp", "[::]:0")
		if err != nil {
			t.Skipf("no dual-stack listener: %v", err)
		}
		serveOn(t, l, broker.Config{})
		port := l.Addr().(*net.TCPAddr).Port
		c := smqtest.DialWith(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "SimpleMQ: 1")
		wantInitRaw(t, c.ReadFull(), "127.0.0.1")
	})

	t.Run("IPv6", func(t *testing.T) {
		l, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		serveOn(t, l, broker.Config{})
		c := smqtest.DialWith(t, l.Addr().String(), "SimpleMQ: 1")
		wantInitRaw(t, c.ReadFull(), "::1")
	})
}

// TestForwardedFor: X-Forwarded-For decides the Init IP only when the socket
// peer is in Config.TrustedProxies; Forwarded and X-Real-IP never do.
func TestForwardedFor(t *testing.T) {
	t.Parallel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	other := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		headers []string
		want    string
	}{
		{"untrusted: no proxies configured", nil,
			[]string{"X-Forwarded-For: 203.0.113.7"}, "127.0.0.1"},
		{"untrusted: peer not in TrustedProxies", other,
			[]string{"X-Forwarded-For: 203.0.113.7"}, "127.0.0.1"},
		{"trusted: single entry", loopback,
			[]string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},
		{"trusted: last entry of a list", loopback,
			[]string{"X-Forwarded-For: 198.51.100.1, 203.0.113.7"}, "203.0.113.7"},
		{"trusted: last of several header lines", loopback,
			[]string{"X-Forwarded-For: 198.51.100.1", "X-Forwarded-For: 198.51.100.2, 203.0.113.8"}, "203.0.113.8"},
		{"trusted: ::ffff: stripped", loopback,
			[]string{"X-Forwarded-For: ::ffff:203.0.113.9"}, "203.0.113.9"},
		{"trusted: IPv6", loopback,
			[]string{"X-Forwarded-For: 2001:db8::1"}, "2001:db8::1"},
		{"trusted: no header", loopback, nil, "127.0.0.1"},
		{"trusted: Forwarded and X-Real-IP ignored", loopback,
			[]string{"Forwarded: for=203.0.113.10", "X-Real-IP: 203.0.113.11"}, "127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, broker.Config{TrustedProxies: tc.trusted})
			c := smqtest.DialWith(t, b.Addr, append([]string{"SimpleMQ: 1"}, tc.headers...)...)
			wantInitRaw(t, c.ReadFull(), tc.want)
		})
		t.Run(tc.name+"/websocket", func(t *testing.T) {
			b := startBroker(t, broker.Config{TrustedProxies: tc.trusted})
			h := http.Header{}
			for _, line := range tc.headers {
				k, v, _ := strings.Cut(line, ": ")
				h.Add(k, v)
			}
			c, _ := smqtest.DialWS(t, b.Addr, h)
			if c.Init.IP != tc.want {
				t.Fatalf("Init IP %q, want %q", c.Init.IP, tc.want)
			}
		})
	}
}

// TestAuthenticateSeesInit: the authenticate hook gets the seed and IP the
// client got in Init, and the Connect fields as sent (SMQ-WIRE.md §4).
func TestAuthenticateSeesInit(t *testing.T) {
	t.Parallel()
	reqs := make(chan broker.ConnectRequest, 1)
	b := startBroker(t, broker.Config{
		Authenticate: func(r *broker.ConnectRequest) (smq.ConnackCode, string) {
			reqs <- *r
			return smq.CodeAccepted, ""
		},
	})
	c := smqtest.DialWith(t, b.Addr, "SimpleMQ: 1", "X-App-Token: abc")
	in := c.ReadInit()
	sent := smq.Connect{Version: 2, MaxSize: 0xfff0, UID: "hooked-uid", Credentials: "\x00\x01secret\xff", Info: "info text"}
	c.Send(sent)
	c.ExpectConnack(smq.CodeAccepted)
	r := <-reqs
	if r.Seed != in.Seed || r.Peer.IP != in.IP {
		t.Errorf("hook saw seed %#x IP %q; Init had %#x %q", r.Seed, r.Peer.IP, in.Seed, in.IP)
	}
	if r.Connect != sent {
		t.Errorf("hook saw %+v, sent %+v", r.Connect, sent)
	}
	if got := r.Peer.Header.Get("X-App-Token"); got != "abc" {
		t.Errorf("hook saw X-App-Token %q, want the request header", got)
	}
}

// serveOn serves a broker on l until the test ends.
func serveOn(t *testing.T, l net.Listener, cfg broker.Config) *broker.Broker {
	t.Helper()
	b := broker.New(cfg)
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
		l.Close()
		<-done
	})
	return b
}
