package gateway_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// TestProxyProtocol: behind an L4 load balancer on a trusted address, the
// client address in the PROXY header (v1 and v2) is the session's client:
// the broker's Init carries it and the log names it. A connection from an
// untrusted address is refused; a trusted one without a header gets
// nothing.
func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), `
[[listener]]
name = "behind-lb"
address = "127.0.0.1:0"
proxy_protocol_from = ["127.0.0.0/8"]
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[[listener]]
name = "untrusting"
address = "127.0.0.1:0"
proxy_protocol_from = ["10.0.0.0/8", "192.0.2.10"]
  [[listener.route]]
  path = "/"
  upstream = "embedded"
`)
	addr := b.GW.Addr("behind-lb").String()
	dst := netip.MustParseAddrPort(addr)
	for _, tc := range []struct {
		name   string
		header *proxyproto.Header
		client string
	}{
		{"v1", &proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}, DestinationAddr: net.TCPAddrFromAddrPort(dst)}, "203.0.113.7"},
		{"v2", &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::42"), Port: 40000}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}}, "2001:db8::42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := smqtest.DialTCP(t, addr)
			if _, err := tc.header.WriteTo(c.NetConn); err != nil {
				t.Fatal(err)
			}
			c.WriteBytes(smqtest.RawRequest("GET / HTTP/1.1", "Host: "+addr, "SimpleMQ: 1"))
			if init := c.ReadInit(); init.IP != tc.client {
				t.Errorf("Init carries client %q, want %q", init.IP, tc.client)
			}
			c.Login("proxied-" + tc.name)
			c.Close()
			waitLogged(t, b, fmt.Sprintf("listener=behind-lb route=/ client=%s ", tc.client), 1)
		})
	}

	t.Run("no header from a trusted sender", func(t *testing.T) {
		c := smqtest.DialWith(t, addr, "SimpleMQ: 1")
		if _, err := c.ReadFrame(2 * time.Second); err == nil {
			t.Error("a connection without a PROXY header was served")
		}
	})
	t.Run("untrusted sender", func(t *testing.T) {
		uaddr := b.GW.Addr("untrusting").String()
		conn, err := net.Dial("tcp", uaddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		h := &proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}}
		_, _ = h.WriteTo(conn) // may already fail: the gateway closes at once
		_, _ = conn.Write(smqtest.RawRequest("GET / HTTP/1.1", "Host: "+uaddr, "SimpleMQ: 1"))
		conn.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		if n, err := conn.Read(make([]byte, 64)); err == nil || n > 0 {
			t.Errorf("an untrusted sender was answered (%d bytes, %v)", n, err)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("an untrusted sender's connection was left open")
		}
		if !strings.Contains(b.Logs.String(), `msg="PROXY protocol: connection refused: not from a trusted sender" listener=untrusting peer=127.0.0.1:`) {
			t.Errorf("the refusal is not logged:\n%s", b.Logs)
		}
		m := scrape(t, b.GW)
		if v := m.get(t, "smqgw_proxy_protocol_refusals_total", "listener", "untrusting"); v != 1 {
			t.Errorf("refusals counted on untrusting: %v, want 1", v)
		}
		if v := m.get(t, "smqgw_proxy_protocol_refusals_total", "listener", "behind-lb"); v != 0 {
			t.Errorf("refusals counted on behind-lb: %v, want 0", v)
		}
	})
}
