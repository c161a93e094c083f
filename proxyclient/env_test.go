package proxyclient_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/proxyclient"
)

func TestProxyFor(t *testing.T) {
	t.Parallel()
	const (
		httpsP = "http://https-proxy:3128"
		httpP  = "http://http-proxy:3128"
		allP   = "socks5h://all-proxy:1080"
	)
	// only sets HTTPS_PROXY and NO_PROXY: the common case.
	only := func(noProxy string) proxyclient.Env {
		return proxyclient.Env{HTTPSProxy: httpsP, NoProxy: noProxy}
	}
	for _, tt := range []struct {
		name    string
		env     proxyclient.Env
		scheme  string
		addr    string
		want    string // "" for no proxy
		wantErr string
	}{
		// Which variable applies.
		{"nothing set", proxyclient.Env{}, "https", "broker.example:443", "", ""},
		{"https", proxyclient.Env{HTTPSProxy: httpsP, HTTPProxy: httpP}, "https", "broker.example:443", httpsP, ""},
		{"wss", proxyclient.Env{HTTPSProxy: httpsP, HTTPProxy: httpP}, "wss", "broker.example:443", httpsP, ""},
		{"http", proxyclient.Env{HTTPSProxy: httpsP, HTTPProxy: httpP}, "http", "broker.example:80", httpP, ""},
		{"ws", proxyclient.Env{HTTPSProxy: httpsP, HTTPProxy: httpP}, "ws", "broker.example:80", httpP, ""},
		{"scheme case", proxyclient.Env{HTTPSProxy: httpsP}, "HTTPS", "broker.example:443", httpsP, ""},
		{"http without HTTP_PROXY", proxyclient.Env{HTTPSProxy: httpsP}, "http", "broker.example:80", "", ""},
		{"ALL_PROXY fallback for https", proxyclient.Env{HTTPProxy: httpP, AllProxy: allP}, "https", "broker.example:443", allP, ""},
		{"ALL_PROXY fallback for http", proxyclient.Env{HTTPSProxy: httpsP, AllProxy: allP}, "ws", "broker.example:80", allP, ""},
		{"HTTPS_PROXY before ALL_PROXY", proxyclient.Env{HTTPSProxy: httpsP, AllProxy: allP}, "https", "broker.example:443", httpsP, ""},
		{"other scheme: ALL_PROXY only", proxyclient.Env{HTTPSProxy: httpsP, HTTPProxy: httpP, AllProxy: allP}, "mqtt", "broker.example:1883", allP, ""},
		{"other scheme without ALL_PROXY", proxyclient.Env{HTTPSProxy: httpsP}, "", "broker.example:1883", "", ""},
		{"socks5 in HTTPS_PROXY", proxyclient.Env{HTTPSProxy: "socks5://u:p@sock:1080"}, "https", "broker.example:443", "socks5://u:p@sock:1080", ""},
		{"bare host:port is http", proxyclient.Env{HTTPSProxy: "proxy.lan:8080"}, "https", "broker.example:443", "http://proxy.lan:8080", ""},
		{"surrounding spaces", proxyclient.Env{HTTPSProxy: "  https://proxy.lan  "}, "https", "broker.example:443", "https://proxy.lan", ""},

		// NO_PROXY: names.
		{"domain matches itself", only("example.com"), "https", "example.com:443", "", ""},
		{"domain matches subdomains", only("example.com"), "https", "a.b.example.com:443", "", ""},
		{"domain is not a suffix of a label", only("example.com"), "https", "badexample.com:443", httpsP, ""},
		{".domain matches the domain too", only(".example.com"), "https", "example.com:443", "", ""},
		{".domain matches subdomains", only(".example.com"), "https", "broker.example.com:443", "", ""},
		{"*.domain wildcard", only("*.example.com"), "https", "broker.example.com:443", "", ""},
		{"case of entry and host", only("EXAMPLE.com"), "https", "Broker.Example.COM:443", "", ""},
		{"final dots", only("example.com."), "https", "broker.example.com.:443", "", ""},
		{"other domain", only("example.com"), "https", "example.org:443", httpsP, ""},
		{"host without port", only("example.com"), "https", "broker.example.com", "", ""},

		// NO_PROXY: "*", lists.
		{"star", only("*"), "https", "anything.example:443", "", ""},
		{"star among others", only("foo.example, *"), "https", "anything.example:443", "", ""},
		{"star in a name is not a wildcard", only("broker*.example"), "https", "broker1.example:443", httpsP, ""},
		{"spaces and empty entries", only(" , foo.example ,, example.com\tbar.example "), "https", "x.example.com:443", "", ""},
		{"only separators", only(" ,, "), "https", "example.com:443", httpsP, ""},

		// NO_PROXY: addresses.
		{"IPv4", only("192.0.2.7"), "https", "192.0.2.7:443", "", ""},
		{"IPv4 other", only("192.0.2.7"), "https", "192.0.2.8:443", httpsP, ""},
		{"IPv4 CIDR", only("10.0.0.0/8"), "https", "10.20.30.40:443", "", ""},
		{"IPv4 CIDR outside", only("10.0.0.0/8"), "https", "11.0.0.1:443", httpsP, ""},
		{"CIDR does not match names", only("10.0.0.0/8"), "https", "ten.example:443", httpsP, ""},
		{"IPv4-mapped target", only("192.0.2.0/24"), "https", "[::ffff:192.0.2.7]:443", "", ""},
		{"IPv6 bare", only("2001:db8::1"), "https", "[2001:db8::1]:443", "", ""},
		{"IPv6 bracketed", only("[2001:DB8::1]"), "https", "[2001:db8:0::1]:443", "", ""},
		{"IPv6 CIDR", only("fd00::/8"), "https", "[fd12:3456::1]:8883", "", ""},
		{"IPv6 CIDR outside", only("fd00::/8"), "https", "[2001:db8::1]:8883", httpsP, ""},

		// NO_PROXY: ports.
		{"host:port same port", only("example.com:8443"), "https", "broker.example.com:8443", "", ""},
		{"host:port other port", only("example.com:8443"), "https", "broker.example.com:443", httpsP, ""},
		{"IPv4:port", only("192.0.2.7:443"), "https", "192.0.2.7:443", "", ""},
		{"IPv6 with port", only("[2001:db8::1]:8443"), "https", "[2001:db8::1]:8443", "", ""},
		{"IPv6 with other port", only("[2001:db8::1]:8443"), "https", "[2001:db8::1]:443", httpsP, ""},

		// Loopback is proxied unless listed.
		{"localhost proxied", only(""), "https", "localhost:443", httpsP, ""},
		{"127.0.0.1 proxied", only("example.com"), "https", "127.0.0.1:443", httpsP, ""},
		{"loopback listed", only("localhost,127.0.0.0/8,::1"), "https", "[::1]:443", "", ""},
		{"localhost listed", only("localhost,127.0.0.0/8,::1"), "https", "localhost:443", "", ""},

		// Invalid proxy variables.
		{"unsupported scheme", proxyclient.Env{HTTPSProxy: "ftp://proxy.lan"}, "https", "broker.example:443", "",
			`proxyclient: invalid HTTPS_PROXY "ftp://proxy.lan": unsupported scheme "ftp": want http, https, socks5 or socks5h`},
		{"malformed, password hidden", proxyclient.Env{AllProxy: "http://user:secret@[::1"}, "wss", "broker.example:443", "",
			`proxyclient: invalid ALL_PROXY "http://user:xxxxx@[::1": missing ']' in host`},
		{"no host", proxyclient.Env{HTTPProxy: "socks5://"}, "http", "broker.example:80", "",
			`proxyclient: invalid HTTP_PROXY "socks5://": no host`},
		{"invalid even when exempt", proxyclient.Env{HTTPSProxy: "gopher://x", NoProxy: "*"}, "https", "broker.example:443", "",
			`proxyclient: invalid HTTPS_PROXY "gopher://x": unsupported scheme "gopher": want http, https, socks5 or socks5h`},
		{"invalid but not used", proxyclient.Env{HTTPProxy: "gopher://x", HTTPSProxy: httpsP}, "https", "broker.example:443", httpsP, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.env.ProxyFor(tt.scheme, tt.addr)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ProxyFor(%q, %q) error %v, want %q", tt.scheme, tt.addr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ProxyFor(%q, %q): %v", tt.scheme, tt.addr, err)
			}
			if s := urlString(got); s != tt.want {
				t.Errorf("ProxyFor(%q, %q) = %q, want %q", tt.scheme, tt.addr, s, tt.want)
			}
		})
	}
}

func urlString(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}

func TestEnvFromOS(t *testing.T) {
	names := []string{
		"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
		"all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
	}
	for _, tt := range []struct {
		name string
		vars map[string]string
		want proxyclient.Env
	}{
		{"none", nil, proxyclient.Env{}},
		{"upper case", map[string]string{"HTTPS_PROXY": "a", "HTTP_PROXY": "b", "ALL_PROXY": "c", "NO_PROXY": "d"},
			proxyclient.Env{HTTPSProxy: "a", HTTPProxy: "b", AllProxy: "c", NoProxy: "d"}},
		{"lower case", map[string]string{"https_proxy": "a", "http_proxy": "b", "all_proxy": "c", "no_proxy": "d"},
			proxyclient.Env{HTTPSProxy: "a", HTTPProxy: "b", AllProxy: "c", NoProxy: "d"}},
		{"lower case wins", map[string]string{
			"https_proxy": "a", "HTTPS_PROXY": "A", "http_proxy": "b", "HTTP_PROXY": "B",
			"all_proxy": "c", "ALL_PROXY": "C", "no_proxy": "d", "NO_PROXY": "D",
		}, proxyclient.Env{HTTPSProxy: "a", HTTPProxy: "b", AllProxy: "c", NoProxy: "d"}},
		{"empty lower case is unset", map[string]string{"https_proxy": "", "HTTPS_PROXY": "A", "no_proxy": "", "NO_PROXY": "D"},
			proxyclient.Env{HTTPSProxy: "A", NoProxy: "D"}},
		{"mixed", map[string]string{"HTTPS_PROXY": "A", "http_proxy": "b", "NO_PROXY": "D"},
			proxyclient.Env{HTTPSProxy: "A", HTTPProxy: "b", NoProxy: "D"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, n := range names {
				t.Setenv(n, tt.vars[n])
			}
			if got := proxyclient.EnvFromOS(); got != tt.want {
				t.Errorf("EnvFromOS() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestEnvDialer checks that the dialer of an Env takes the proxy ProxyFor
// names, per scheme, and dials NO_PROXY targets directly.
func TestEnvDialer(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	l := smqtest.Listen(t)
	proxied := make(chan string, 16)
	connectProxy(t, l, func(req *http.Request) (int, string) {
		proxied <- req.RequestURI
		return http.StatusOK, ""
	})
	live, dead := "http://"+l.Addr().String(), "http://"+smqtest.DeadAddr(t)

	for _, tt := range []struct {
		name    string
		env     proxyclient.Env
		ctx     context.Context
		proxied bool   // through the live proxy
		failVia string // the dead proxy address the dial fails through
	}{
		{"no variables", proxyclient.Env{}, context.Background(), false, ""},
		{"HTTPS_PROXY by default", proxyclient.Env{HTTPSProxy: live, HTTPProxy: dead}, context.Background(), true, ""},
		{"HTTP_PROXY for http", proxyclient.Env{HTTPSProxy: dead, HTTPProxy: live}, proxyclient.WithScheme(context.Background(), "http"), true, ""},
		{"ALL_PROXY fallback", proxyclient.Env{HTTPProxy: dead, AllProxy: live}, proxyclient.WithScheme(context.Background(), "wss"), true, ""},
		{"NO_PROXY", proxyclient.Env{HTTPSProxy: dead, NoProxy: "127.0.0.0/8"}, context.Background(), false, ""},
		{"dead proxy", proxyclient.Env{HTTPSProxy: dead, NoProxy: "example.com"}, context.Background(), false, strings.TrimPrefix(dead, "http://")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.env.Dialer(proxyclient.Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.DialContext(tt.ctx, "tcp", echo)
			if tt.failVia != "" {
				if err == nil {
					c.Close()
					t.Fatal("dial succeeded, want it to fail through the dead proxy")
				}
				checkOpError(t, err, "proxyconnect", tt.failVia, echo, "")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c)
			select {
			case target := <-proxied:
				if !tt.proxied || target != echo {
					t.Errorf("proxied to %s; want proxied %v", target, tt.proxied)
				}
			default:
				if tt.proxied {
					t.Error("dialled directly, want through the proxy")
				}
			}
		})
	}
}

func TestEnvDialerInvalid(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env  proxyclient.Env
		want string
	}{
		{proxyclient.Env{HTTPSProxy: "ftp://proxy"}, `proxyclient: invalid HTTPS_PROXY "ftp://proxy": unsupported scheme "ftp": want http, https, socks5 or socks5h`},
		{proxyclient.Env{AllProxy: "socks5://:pw@proxy"}, `proxyclient: invalid ALL_PROXY "socks5://:xxxxx@proxy": SOCKS5 user name must be 1 to 255 bytes and password at most 255`},
	} {
		_, err := tt.env.Dialer(proxyclient.Options{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("%+v.Dialer: error %v, want %q", tt.env, err, tt.want)
		}
	}
}

func ExampleEnv_ProxyFor() {
	env := proxyclient.Env{
		HTTPSProxy: "http://proxy.corp:3128",
		AllProxy:   "socks5h://socks.corp",
		NoProxy:    ".corp, 10.0.0.0/8, broker.example:1883",
	}
	for _, target := range []struct{ scheme, addr string }{
		{"wss", "broker.example:443"},
		{"https", "broker.example:1883"},
		{"https", "10.1.2.3:443"},
		{"http", "broker.example:80"},
	} {
		u, _ := env.ProxyFor(target.scheme, target.addr)
		fmt.Println(target.scheme, target.addr, "->", u)
	}
	// Output:
	// wss broker.example:443 -> http://proxy.corp:3128
	// https broker.example:1883 -> <nil>
	// https 10.1.2.3:443 -> <nil>
	// http broker.example:80 -> socks5h://socks.corp
}
