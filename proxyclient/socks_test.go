package proxyclient_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/proxyclient"
)

func TestMicrosocks(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	_, port, _ := net.SplitHostPort(echo)
	for _, tt := range []struct {
		name string
		opts proxytest.Options
	}{
		{"no auth", proxytest.Options{}},
		{"username and password", proxytest.Options{User: "bob", Password: "pa:ss w@rd"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := proxytest.StartMicrosocks(t, tt.opts)
			for _, scheme := range []string{"socks5", "socks5h"} {
				u := *p.URL
				u.Scheme = scheme
				d := fromURL(t, &u, proxyclient.Options{})
				roundTrip(t, dial(t, d, echo))
				// socks5 resolves "localhost" here: the proxy gets an
				// address it can reach whatever its own resolver says.
				if scheme == "socks5" {
					roundTrip(t, dial(t, d, net.JoinHostPort("localhost", port)))
				}
			}
		})
	}
}

func TestMicrosocksErrors(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	dead := smqtest.DeadAddr(t)
	open := proxytest.StartMicrosocks(t, proxytest.Options{})
	auth := proxytest.StartMicrosocks(t, proxytest.Options{User: "bob", Password: "s3cret"})
	withUser := func(p *proxytest.Proxy, ui *url.Userinfo) *url.URL {
		u := *p.URL
		u.User = ui
		return &u
	}
	for _, tt := range []struct {
		name    string
		proxy   *proxytest.Proxy
		url     *url.URL
		target  string
		errText string
		is      error
	}{
		{"no credentials", auth, withUser(auth, nil), echo,
			"proxy authentication required", proxyclient.ErrProxyAuth},
		{"wrong password", auth, withUser(auth, url.UserPassword("bob", "wrong")), echo,
			"proxy authentication required (credentials rejected)", proxyclient.ErrProxyAuth},
		{"target refuses", open, open.URL, dead,
			"connection refused (SOCKS reply 0x05)", syscall.ECONNREFUSED},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := dialErr(t, fromURL(t, tt.url, proxyclient.Options{}), tt.target)
			checkOpError(t, err, "socks connect", tt.proxy.Addr, tt.target, tt.errText)
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v does not match %v", err, tt.is)
			}
		})
	}
}

// socksRequest is what a fake SOCKS5 server was asked to connect to.
type socksRequest struct {
	atyp byte // 1 IPv4, 3 name, 4 IPv6
	host string
	port int
}

// fakeSOCKS is a SOCKS5 server that accepts no authentication, reports
// each CONNECT request and answers it with reply; on success it echoes.
func fakeSOCKS(t *testing.T, reply byte) (string, <-chan socksRequest) {
	t.Helper()
	reqs := make(chan socksRequest, 16)
	l := smqtest.Listen(t)
	smqtest.Serve(t, l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(smqtest.WaitFor))
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 5 {
			return
		}
		if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil {
			return
		}
		if _, err := c.Write([]byte{5, 0}); err != nil {
			return
		}
		var req [4]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		r := socksRequest{atyp: req[3]}
		var host []byte
		switch r.atyp {
		case 1:
			host = make([]byte, 4)
		case 4:
			host = make([]byte, 16)
		case 3:
			var n [1]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				return
			}
			host = make([]byte, n[0])
		}
		var port [2]byte
		if _, err := io.ReadFull(c, host); err != nil {
			return
		}
		if _, err := io.ReadFull(c, port[:]); err != nil {
			return
		}
		r.host = string(host)
		if r.atyp != 3 {
			ip, _ := netip.AddrFromSlice(host)
			r.host = ip.String()
		}
		r.port = int(binary.BigEndian.Uint16(port[:]))
		reqs <- r
		if _, err := c.Write([]byte{5, reply, 0, 1, 127, 0, 0, 1, 0, 1}); err != nil || reply != 0 {
			return
		}
		c.SetDeadline(time.Time{})
		io.Copy(c, c)
	})
	return l.Addr().String(), reqs
}

// TestSOCKSResolution proves where names are resolved: socks5 sends the
// proxy an address, socks5h the name.
func TestSOCKSResolution(t *testing.T) {
	t.Parallel()
	proxyAddr, reqs := fakeSOCKS(t, 0)
	for _, tt := range []struct {
		scheme string
		target string
		want   socksRequest
	}{
		{"socks5", "localhost:1883", socksRequest{1, "127.0.0.1", 1883}},
		{"socks5h", "localhost:1883", socksRequest{3, "localhost", 1883}},
		{"socks5h", "127.0.0.1:1883", socksRequest{1, "127.0.0.1", 1883}},
		{"socks5h", "[::1]:443", socksRequest{4, "::1", 443}},
		// Go never resolves .onion names (RFC 7686): a resolution
		// failure that needs no DNS server.
		{"socks5", "broker.onion:8883", socksRequest{}},
	} {
		t.Run(tt.scheme+" "+tt.target, func(t *testing.T) {
			d := fromURL(t, &url.URL{Scheme: tt.scheme, Host: proxyAddr}, proxyclient.Options{})
			if tt.want.atyp == 0 {
				err := dialErr(t, d, tt.target)
				checkOpError(t, err, "socks connect", proxyAddr, tt.target, "")
				select {
				case r := <-reqs:
					t.Errorf("proxy was asked for %+v, want no request", r)
				default:
				}
				return
			}
			roundTrip(t, dial(t, d, tt.target))
			if got := <-reqs; got != tt.want {
				t.Errorf("proxy was asked for %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSOCKSReplies(t *testing.T) {
	t.Parallel()
	for reply, want := range map[byte]string{
		1: "general SOCKS server failure (SOCKS reply 0x01)",
		2: "connection not allowed by ruleset (SOCKS reply 0x02)",
		3: "network unreachable (SOCKS reply 0x03)",
		4: "host unreachable (SOCKS reply 0x04)",
		5: "connection refused (SOCKS reply 0x05)",
		6: "TTL expired (SOCKS reply 0x06)",
		7: "command not supported (SOCKS reply 0x07)",
		8: "address type not supported (SOCKS reply 0x08)",
		9: "unknown reply code (SOCKS reply 0x09)",
	} {
		t.Run(strconv.Itoa(int(reply)), func(t *testing.T) {
			proxyAddr, _ := fakeSOCKS(t, reply)
			d := fromURL(t, &url.URL{Scheme: "socks5h", Host: proxyAddr}, proxyclient.Options{})
			err := dialErr(t, d, "broker.example:8883")
			checkOpError(t, err, "socks connect", proxyAddr, "broker.example:8883", want)
			var se *proxyclient.SOCKSError
			if !errors.As(err, &se) || se.Reply != reply {
				t.Errorf("error %v: want a SOCKSError with reply %d", err, reply)
			}
		})
	}
}

func TestSOCKSCanceled(t *testing.T) {
	t.Parallel()
	proxyAddr, received := silentServer(t)
	d := fromURL(t, &url.URL{Scheme: "socks5h", Host: proxyAddr}, proxyclient.Options{})
	checkCanceled(t, d, proxyAddr, received, "broker.example:8883", "socks connect",
		"canceled in the SOCKS5 handshake", "timed out in the SOCKS5 handshake")
}
