package proxyclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/proxyclient"
)

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		proxy string
		want  string
	}{
		{"ftp://proxy.lan", `proxyclient: invalid proxy url "ftp://proxy.lan": unsupported scheme "ftp": want http, https, socks5 or socks5h`},
		{"http://", `proxyclient: invalid proxy url "http://": no host`},
		{"socks5://:1080", `proxyclient: invalid proxy url "socks5://:1080": no host`},
		{"http://proxy.lan:0", `proxyclient: invalid proxy url "http://proxy.lan:0": port 0 out of range`},
		{"http://proxy.lan:70000", `proxyclient: invalid proxy url "http://proxy.lan:70000": port 70000 out of range`},
		{"http://user:secret@proxy.lan:http", `proxyclient: invalid proxy url "http://user:xxxxx@proxy.lan:http": invalid port ":http" after host`},
		{"http://user:secret@[::1", `proxyclient: invalid proxy url "http://user:xxxxx@[::1": missing ']' in host`},
		{"socks5h://:secret@proxy.lan", `proxyclient: invalid proxy url "socks5h://:xxxxx@proxy.lan": SOCKS5 user name must be 1 to 255 bytes and password at most 255`},
		{"socks5://" + strings.Repeat("u", 256) + "@proxy.lan", `proxyclient: invalid proxy url "socks5://` + strings.Repeat("u", 256) + `@proxy.lan": SOCKS5 user name must be 1 to 255 bytes and password at most 255`},
	} {
		_, err := proxyclient.Parse(tt.proxy, proxyclient.Options{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q): error %v, want %q", tt.proxy, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q): error %q shows the password", tt.proxy, err)
		}
	}
	if _, err := proxyclient.FromURL(nil, proxyclient.Options{}); err == nil {
		t.Error("FromURL(nil) succeeded")
	}
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	for _, proxy := range []string{
		"http://proxy.lan", "HTTP://proxy.lan:3128", "https://u:p@proxy.lan", "proxy.lan:3128",
		"socks5://proxy.lan", "socks5h://u:p@[2001:db8::1]:1080", " http://proxy.lan ",
	} {
		if _, err := proxyclient.Parse(proxy, proxyclient.Options{}); err != nil {
			t.Errorf("Parse(%q): %v", proxy, err)
		}
	}
}

// countingDialer is a net.Dialer that records the addresses it dials.
type countingDialer struct {
	net.Dialer
	addrs []string
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.addrs = append(d.addrs, addr)
	return d.Dialer.DialContext(ctx, network, addr)
}

// TestForward checks that Options.Forward reaches the proxies, and the
// target when there is no proxy.
func TestForward(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	l := smqtest.Listen(t)
	connectProxy(t, l, func(*http.Request) (int, string) { return http.StatusOK, "" })
	socksAddr, _ := fakeSOCKS(t, 0)

	for _, tt := range []struct {
		proxy string
		want  string // the address Forward must dial
	}{
		{"", echo},
		{"http://" + l.Addr().String(), l.Addr().String()},
		{"socks5://" + socksAddr, socksAddr},
	} {
		cd := &countingDialer{}
		d, err := proxyclient.Parse(tt.proxy, proxyclient.Options{Forward: cd})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, dial(t, d, echo))
		if len(cd.addrs) != 1 || cd.addrs[0] != tt.want {
			t.Errorf("Parse(%q): Forward dialled %v, want [%s]", tt.proxy, cd.addrs, tt.want)
		}
	}
}

func TestParseEnv(t *testing.T) {
	echo := smqtest.Echo(t)
	for _, n := range []string{"https_proxy", "http_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"} {
		t.Setenv(n, "")
	}
	dead := smqtest.DeadAddr(t)
	t.Setenv("HTTPS_PROXY", "http://"+dead)
	d, err := proxyclient.Parse("ENV", proxyclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = dialErr(t, d, echo)
	checkOpError(t, err, "proxyconnect", dead, echo, "")

	t.Setenv("HTTPS_PROXY", "gopher://proxy")
	if _, err := proxyclient.Parse("env", proxyclient.Options{}); err == nil {
		t.Error(`Parse("env") with HTTPS_PROXY=gopher://proxy succeeded`)
	}
}

func TestUnsupportedNetwork(t *testing.T) {
	t.Parallel()
	for _, proxy := range []string{"http://127.0.0.1:1", "socks5://127.0.0.1:1"} {
		d, err := proxyclient.Parse(proxy, proxyclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.DialContext(context.Background(), "udp", "127.0.0.1:53")
		var ue net.UnknownNetworkError
		if !errors.As(err, &ue) {
			t.Errorf("%s: dial udp: error %v, want net.UnknownNetworkError", proxy, err)
		}
	}
}

func TestErrorTexts(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&proxyclient.StatusError{StatusCode: 407, Status: "HTTP/1.1 407 Proxy Authentication Required"}, "proxy authentication required"},
		{&proxyclient.StatusError{StatusCode: 407, CredentialsSent: true}, "proxy authentication required (credentials rejected)"},
		{&proxyclient.StatusError{StatusCode: 502, Status: "HTTP/1.1 502 Bad Gateway"}, "proxy refused CONNECT: HTTP/1.1 502 Bad Gateway"},
		{&proxyclient.SOCKSError{Reply: 2}, "connection not allowed by ruleset (SOCKS reply 0x02)"},
		{&proxyclient.SOCKSError{Reply: 0xff}, "unknown reply code (SOCKS reply 0xff)"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.err, got, tt.want)
		}
	}
	if errors.Is(&proxyclient.StatusError{StatusCode: 403}, proxyclient.ErrProxyAuth) {
		t.Error("403 matches ErrProxyAuth")
	}
}

// Parse takes the proxy setting of a configuration. Its errors hide
// passwords.
func ExampleParse() {
	for _, proxy := range []string{
		"",
		"proxy.corp:3128",
		"socks5h://user:secret@proxy.corp",
		"ftp://user:secret@proxy.corp",
	} {
		_, err := proxyclient.Parse(proxy, proxyclient.Options{})
		fmt.Printf("%q: %v\n", proxy, err)
	}
	// Output:
	// "": <nil>
	// "proxy.corp:3128": <nil>
	// "socks5h://user:secret@proxy.corp": <nil>
	// "ftp://user:secret@proxy.corp": proxyclient: invalid proxy url "ftp://user:xxxxx@proxy.corp": unsupported scheme "ftp": want http, https, socks5 or socks5h
}
