package proxyclient

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"unicode"
)

// Env is a snapshot of the proxy environment variables. The zero value
// means no proxy for any target.
//
// Each proxy variable holds a URL for FromURL (http, https, socks5 or
// socks5h), or a bare "host:port" meaning http://host:port. Which one
// applies to a target depends on the scheme of the URL being dialled:
//
//   - "https" and "wss": HTTPSProxy, else AllProxy;
//   - "http" and "ws": HTTPProxy, else AllProxy;
//   - any other scheme: AllProxy.
//
// An empty variable counts as unset. Then NoProxy may exempt the target.
//
// NoProxy is a list of entries separated by commas or spaces (empty
// entries are skipped); matching ignores case and a final dot:
//
//   - "*" matches every target;
//   - "example.com", ".example.com" and "*.example.com" all match
//     example.com and every name below it (foo.example.com), never
//     badexample.com;
//   - an IP address ("192.0.2.7", "2001:db8::1", "[2001:db8::1]") matches
//     that address, written in any form (IPv4-mapped IPv6 too);
//   - a CIDR prefix ("10.0.0.0/8", "fd00::/8") matches the addresses in it;
//   - any of the above with ":port" ("example.com:8443",
//     "[2001:db8::1]:443") matches that port only.
//
// Names and addresses are compared as written: a name never matches an IP
// entry or prefix (nothing is resolved). Loopback targets (localhost,
// 127.0.0.1, ::1) are proxied like any other unless listed: a proxy, not
// this process, then connects to its own loopback, which is what a sidecar
// proxy or a test wants; list "localhost,127.0.0.0/8,::1" to keep them
// local. Entries that fit none of the forms are ignored.
//
// Compared with golang.org/x/net/http/httpproxy (net/http's rules): the
// same lower-case precedence as its current version; in addition
// ALL_PROXY and socks5/socks5h proxies; ".example.com" also matches example.com itself; loopback is
// not exempt by default; REQUEST_METHOD (CGI) is not looked at.
type Env struct {
	HTTPSProxy string // https_proxy or HTTPS_PROXY
	HTTPProxy  string // http_proxy or HTTP_PROXY
	AllProxy   string // all_proxy or ALL_PROXY
	NoProxy    string // no_proxy or NO_PROXY
}

// EnvFromOS reads the variables from the process environment. Where both
// the lower-case and the upper-case variable are set and not empty, the
// lower-case one wins, as in curl, Python and
// golang.org/x/net/http/httpproxy (net/http of Go 1.26 still lets the
// upper-case one win).
func EnvFromOS() Env {
	return Env{
		HTTPSProxy: getenv("https_proxy"),
		HTTPProxy:  getenv("http_proxy"),
		AllProxy:   getenv("all_proxy"),
		NoProxy:    getenv("no_proxy"),
	}
}

func getenv(lower string) string {
	if v := os.Getenv(lower); v != "" {
		return v
	}
	return os.Getenv(strings.ToUpper(lower))
}

// ProxyFor returns the proxy for a connection to addr ("host:port") made
// for a URL of the given scheme, or nil when no variable applies or
// NoProxy exempts addr. The error, naming the variable, is for a proxy
// variable that applies but is not a valid proxy URL.
func (e Env) ProxyFor(scheme, addr string) (*url.URL, error) {
	name, value := e.pick(scheme)
	if value == "" {
		return nil, nil
	}
	u, err := parseEnvProxy(name, value)
	if err != nil {
		return nil, err
	}
	if parseNoProxy(e.NoProxy).match(addr) {
		return nil, nil
	}
	return u, nil
}

// pick returns the variable that applies to scheme, and its value.
func (e Env) pick(scheme string) (name, value string) {
	switch strings.ToLower(scheme) {
	case "https", "wss":
		name, value = "HTTPS_PROXY", e.HTTPSProxy
	case "http", "ws":
		name, value = "HTTP_PROXY", e.HTTPProxy
	}
	if value == "" {
		name, value = "ALL_PROXY", e.AllProxy
	}
	return name, value
}

// parseEnvProxy parses and checks the value of the proxy variable name.
func parseEnvProxy(name, value string) (*url.URL, error) {
	u, err := parseProxyURL(strings.TrimSpace(value))
	if err == nil {
		_, _, _, err = checkURL(u)
	}
	if err != nil {
		return nil, fmt.Errorf("proxyclient: invalid %s %q: %w", name, Redact(value), err)
	}
	return u, nil
}

// Dialer returns a dialer that applies e to every dial: through the proxy
// that ProxyFor names for the target, or directly (with Options.Forward)
// when there is none. The scheme is the one WithScheme put in the dial's
// context, "https" when none: a tunnel is made as for an https URL. Every
// proxy variable that is set must be a valid proxy URL.
func (e Env) Dialer(opts Options) (ContextDialer, error) {
	d := &envDialer{env: e, noProxy: parseNoProxy(e.NoProxy), direct: direct(opts), proxies: map[string]ContextDialer{}}
	for _, v := range [...]struct{ name, value string }{
		{"HTTPS_PROXY", e.HTTPSProxy}, {"HTTP_PROXY", e.HTTPProxy}, {"ALL_PROXY", e.AllProxy},
	} {
		name, value := v.name, v.value
		if value == "" {
			continue
		}
		u, err := parseEnvProxy(name, value)
		if err != nil {
			return nil, err
		}
		pd, err := newDialer(u, opts)
		if err != nil {
			return nil, fmt.Errorf("proxyclient: invalid %s %q: %w", name, Redact(value), err)
		}
		d.proxies[name] = pd
	}
	return d, nil
}

// FromEnvironment is EnvFromOS().Dialer(opts): the environment is read
// once, now.
func FromEnvironment(opts Options) (ContextDialer, error) {
	return EnvFromOS().Dialer(opts)
}

type schemeKey struct{}

// WithScheme returns a copy of ctx telling a dialer of Env.Dialer or
// FromEnvironment the scheme of the URL it dials for ("https", "wss",
// "http", "ws"), which picks the proxy variable. Other dialers ignore it.
func WithScheme(ctx context.Context, scheme string) context.Context {
	return context.WithValue(ctx, schemeKey{}, scheme)
}

// envDialer is the dialer of Env.Dialer.
type envDialer struct {
	env     Env
	noProxy noProxy
	direct  ContextDialer
	proxies map[string]ContextDialer // by variable name; read-only
}

func (d *envDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	scheme, ok := ctx.Value(schemeKey{}).(string)
	if !ok {
		scheme = "https"
	}
	name, _ := d.env.pick(scheme)
	pd := d.proxies[name]
	if pd == nil || d.noProxy.match(addr) {
		return d.direct.DialContext(ctx, network, addr)
	}
	return pd.DialContext(ctx, network, addr)
}

// noProxy is a parsed NO_PROXY list.
type noProxy struct {
	all     bool
	entries []noProxyEntry
}

// noProxyEntry is one NO_PROXY entry: exactly one of domain, ip and prefix
// is set.
type noProxyEntry struct {
	domain string       // lower case, without leading or final dots
	ip     netip.Addr   // unmapped, no zone
	prefix netip.Prefix // masked
	port   int          // 0: any port
}

func parseNoProxy(s string) noProxy {
	var np noProxy
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	for _, f := range fields {
		if f == "*" {
			np.all = true
			continue
		}
		if e, ok := parseNoProxyEntry(strings.ToLower(f)); ok {
			np.entries = append(np.entries, e)
		}
	}
	return np
}

func parseNoProxyEntry(s string) (noProxyEntry, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return noProxyEntry{prefix: p.Masked()}, true
	}
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		if h, p, err := net.SplitHostPort(s); err == nil {
			host, port = h, p
		} else {
			host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
	}
	var e noProxyEntry
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return e, false
		}
		e.port = n
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		e.ip = ip.Unmap().WithZone("")
		return e, true
	}
	host = strings.TrimPrefix(host, "*")
	host = strings.TrimPrefix(host, ".")
	host = strings.TrimSuffix(host, ".")
	if host == "" || strings.ContainsAny(host, "*/[]:") {
		return e, false
	}
	e.domain = host
	return e, true
}

// match reports whether the entries exempt addr ("host:port" or a bare
// host).
func (np noProxy) match(addr string) bool {
	if np.all {
		return true
	}
	if len(np.entries) == 0 {
		return false
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		host, portStr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), ""
	}
	port, _ := strconv.Atoi(portStr)
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	ip, err := netip.ParseAddr(host)
	isIP := err == nil
	if isIP {
		ip = ip.Unmap().WithZone("")
	}
	for _, e := range np.entries {
		if e.port != 0 && e.port != port {
			continue
		}
		switch {
		case e.prefix.IsValid():
			if isIP && e.prefix.Contains(ip) {
				return true
			}
		case e.ip.IsValid():
			if isIP && e.ip == ip {
				return true
			}
		default:
			if !isIP && (host == e.domain || strings.HasSuffix(host, "."+e.domain)) {
				return true
			}
		}
	}
	return false
}
