// Package proxyclient dials TCP connections through a forward proxy: HTTP
// CONNECT over http:// or https:// (TLS to the proxy itself), or SOCKS5
// (socks5:// resolving names locally, socks5h:// letting the proxy resolve
// them), chosen by a proxy URL or by the conventional environment variables
// (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY). It is the egress half of
// the gateway: upstream.Config.Dialer and the smq client take its dialers.
//
// A failed dial through a proxy is a *net.OpError whose Source is the proxy
// and whose Addr is the target, so its text names both, such as
//
//	proxyconnect tcp 10.0.0.1:3128->broker.example:443: proxy authentication required
//
// and whose Err can be classified with errors.Is and errors.As: ErrProxyAuth,
// *StatusError, *SOCKSError, context.Canceled, context.DeadlineExceeded (a
// timeout also answers Timeout() true).
package proxyclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/smqgw/smqgw/internal/redact"
)

// ContextDialer opens network connections: a *net.Dialer, or a dialer of
// this package. It is the same interface as upstream.ContextDialer and
// golang.org/x/net/proxy.ContextDialer.
type ContextDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Options configures the dialers of FromURL, Parse and FromEnvironment. The
// zero value is ready to use.
type Options struct {
	// Forward opens the TCP connection to the proxy (and, for a direct
	// dial, to the target). Nil means a net.Dialer with the default
	// keep-alive; set a net.Dialer with a Timeout to bound connects without
	// a context deadline.
	Forward ContextDialer

	// TLSConfig configures the TLS connection to an https:// proxy: RootCAs
	// (nil: the system roots), a client certificate (Certificates or
	// GetClientCertificate), ServerName (empty: the proxy URL's host). It
	// is cloned; MinVersion is raised to TLS 1.2 and NextProtos is always
	// http/1.1. It is not used for the target's TLS, which the caller runs
	// inside the tunnel. Nil means the defaults. Setting
	// InsecureSkipVerify exposes proxy credentials to anyone on the path.
	TLSConfig *tls.Config

	// Header holds extra header fields for every CONNECT request, such as
	// a Proxy-Authorization for a scheme other than Basic. The proxy URL's
	// user info, when present, replaces any Proxy-Authorization here; Host
	// is always the target. User-Agent defaults to "smqgw". Nil is fine.
	// It is not used by SOCKS5 proxies.
	Header http.Header
}

// DefaultUserAgent is the User-Agent of CONNECT requests unless
// Options.Header sets one.
const DefaultUserAgent = "smqgw"

// Default ports of proxy URLs that do not give one.
const (
	DefaultHTTPPort   = "80"
	DefaultHTTPSPort  = "443"
	DefaultSOCKS5Port = "1080"
)

// ErrProxyAuth is matched (errors.Is) by the errors of a proxy that refused
// the tunnel for want of valid credentials: HTTP 407 (and 401, which some
// proxies, tinyproxy among them, send for wrong credentials) and SOCKS5
// authentication failures. Its text is "proxy authentication required";
// when credentials were sent and refused, the error reads "proxy
// authentication required (credentials rejected)".
var ErrProxyAuth = errors.New("proxy authentication required")

// errCredentialsRejected is ErrProxyAuth after credentials were sent.
var errCredentialsRejected = fmt.Errorf("%w (credentials rejected)", ErrProxyAuth)

// StatusError is an HTTP proxy's answer to CONNECT other than 2xx. Its text
// is "proxy refused CONNECT: " and the status line, such as "proxy refused
// CONNECT: HTTP/1.1 502 Bad Gateway"; for 401 and 407 it is that of
// ErrProxyAuth, which it then matches.
type StatusError struct {
	// StatusCode is the answer's status code, such as 403, 407 or 502.
	StatusCode int
	// Status is the status line as received, such as "HTTP/1.1 403
	// Forbidden".
	Status string
	// CredentialsSent tells whether the CONNECT request carried a
	// Proxy-Authorization header.
	CredentialsSent bool
}

func (e *StatusError) Error() string {
	switch {
	case !e.auth():
		return "proxy refused CONNECT: " + e.Status
	case e.CredentialsSent:
		return errCredentialsRejected.Error()
	default:
		return ErrProxyAuth.Error()
	}
}

// Is reports whether target is ErrProxyAuth and the status is 401 or 407.
func (e *StatusError) Is(target error) bool { return target == ErrProxyAuth && e.auth() }

func (e *StatusError) auth() bool {
	return e.StatusCode == http.StatusProxyAuthRequired || e.StatusCode == http.StatusUnauthorized
}

// SOCKSError is a SOCKS5 proxy's refusal of a CONNECT request: a reply code
// of RFC 1928, section 6, other than "succeeded". Its text is the code's
// name and number, such as "connection refused (SOCKS reply 0x05)".
type SOCKSError struct {
	// Reply is the reply field: 0x01 general SOCKS server failure, 0x02
	// connection not allowed by ruleset, 0x03 network unreachable, 0x04
	// host unreachable, 0x05 connection refused, 0x06 TTL expired, 0x07
	// command not supported, 0x08 address type not supported.
	Reply byte
}

var socksReplies = [...]string{
	1: "general SOCKS server failure",
	2: "connection not allowed by ruleset",
	3: "network unreachable",
	4: "host unreachable",
	5: "connection refused",
	6: "TTL expired",
	7: "command not supported",
	8: "address type not supported",
}

func (e *SOCKSError) Error() string {
	name := "unknown reply code"
	if int(e.Reply) < len(socksReplies) && socksReplies[e.Reply] != "" {
		name = socksReplies[e.Reply]
	}
	return fmt.Sprintf("%s (SOCKS reply %#02x)", name, e.Reply)
}

// Is makes the replies that mean the same as a failed direct connect match
// its errno: syscall.ENETUNREACH (0x03), syscall.EHOSTUNREACH (0x04),
// syscall.ECONNREFUSED (0x05).
func (e *SOCKSError) Is(target error) bool {
	switch e.Reply {
	case 3:
		return target == syscall.ENETUNREACH
	case 4:
		return target == syscall.EHOSTUNREACH
	case 5:
		return target == syscall.ECONNREFUSED
	}
	return false
}

// FromURL returns a dialer that connects through the proxy u:
//
//   - http://host[:port] and https://host[:port]: HTTP CONNECT, over TLS to
//     the proxy for https (see Options.TLSConfig); user info becomes Basic
//     Proxy-Authorization. Default ports 80 and 443.
//   - socks5://host[:port]: SOCKS5; target names are resolved locally
//     (net.DefaultResolver) and the proxy is sent an IP address, each of
//     the name's addresses in turn while the proxy answers unreachable or
//     refused.
//   - socks5h://host[:port]: SOCKS5; target names are sent to the proxy,
//     which resolves them.
//
// SOCKS5 user info becomes RFC 1929 username/password (a user name of 1
// to 255 bytes, a password of at most 255). Default port 1080. The URL's path and query are ignored. The
// dialers accept the networks "tcp", "tcp4" and "tcp6"; only socks5 with
// local resolution can honour the address family, the other proxies pick
// it themselves.
func FromURL(u *url.URL, opts Options) (ContextDialer, error) {
	if u == nil {
		return nil, errors.New("proxyclient: no proxy url")
	}
	d, err := newDialer(u, opts)
	if err != nil {
		return nil, fmt.Errorf("proxyclient: invalid proxy url %q: %w", u.Redacted(), err)
	}
	return d, nil
}

// newDialer is FromURL; its errors say what is wrong with u without
// quoting it.
func newDialer(u *url.URL, opts Options) (ContextDialer, error) {
	scheme, proxyAddr, auth, err := checkURL(u)
	if err != nil {
		return nil, err
	}
	forward := opts.Forward
	if forward == nil {
		forward = &net.Dialer{}
	}
	if scheme == "socks5" || scheme == "socks5h" {
		return &socksDialer{proxy: proxyAddr, auth: auth, remote: scheme == "socks5h", forward: forward}, nil
	}
	d := &connectDialer{proxy: proxyAddr, forward: forward}
	d.header, d.credentials = connectHeader(u, opts.Header)
	if scheme == "https" {
		d.tls = proxyTLSConfig(opts.TLSConfig, u.Hostname())
	}
	return d, nil
}

// checkURL returns the scheme of the proxy URL u in lower case, the
// proxy's host:port and, for SOCKS5, the credentials; or what is wrong
// with u.
func checkURL(u *url.URL) (scheme, hostport string, auth *proxy.Auth, err error) {
	scheme = strings.ToLower(u.Scheme)
	var port string
	switch scheme {
	case "http":
		port = DefaultHTTPPort
	case "https":
		port = DefaultHTTPSPort
	case "socks5", "socks5h":
		port = DefaultSOCKS5Port
	case "":
		return "", "", nil, errors.New("no scheme: want http, https, socks5 or socks5h")
	default:
		return "", "", nil, fmt.Errorf("unsupported scheme %q: want http, https, socks5 or socks5h", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return "", "", nil, errors.New("no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "", nil, fmt.Errorf("port %s out of range", p)
		}
		port = p
	}
	if u.User != nil && (scheme == "socks5" || scheme == "socks5h") {
		user := u.User.Username()
		pass, _ := u.User.Password()
		if user == "" || len(user) > 255 || len(pass) > 255 {
			return "", "", nil, errors.New("SOCKS5 user name must be 1 to 255 bytes and password at most 255")
		}
		auth = &proxy.Auth{User: user, Password: pass}
	}
	return scheme, net.JoinHostPort(host, port), auth, nil
}

// Parse returns the dialer of a configuration's proxy setting:
//
//   - "" dials directly, with Options.Forward (nil: a net.Dialer);
//   - "env" (any case) is FromEnvironment;
//   - anything else is a proxy URL for FromURL, where a bare "host:port"
//     means "http://host:port".
//
// Surrounding spaces are ignored. Errors never show a password.
func Parse(proxy string, opts Options) (ContextDialer, error) {
	proxy = strings.TrimSpace(proxy)
	switch {
	case proxy == "":
		return direct(opts), nil
	case strings.EqualFold(proxy, "env"):
		return FromEnvironment(opts)
	}
	u, err := parseProxyURL(proxy)
	var d ContextDialer
	if err == nil {
		d, err = newDialer(u, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("proxyclient: invalid proxy url %q: %w", Redact(proxy), err)
	}
	return d, nil
}

// parseProxyURL parses a proxy URL, "http://" being implied when s has no
// scheme. Its errors do not quote s, which may hold a password.
func parseProxyURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, ue.Err
		}
		return nil, errors.New("malformed url")
	}
	return u, nil
}

// Redact hides the password of a URL that may not parse (a proxy URL, an
// upstream URL in a message), as url.URL.Redacted does:
// "http://user:xxxxx@host".
func Redact(s string) string { return redact.Password(s) }

// direct is the dialer for no proxy at all.
func direct(opts Options) ContextDialer {
	if opts.Forward != nil {
		return opts.Forward
	}
	return &net.Dialer{}
}

// proxyTLSConfig is the TLS configuration for an https:// proxy at host.
func proxyTLSConfig(base *tls.Config, host string) *tls.Config {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// checkNetwork accepts the networks a proxy can tunnel.
func checkNetwork(network string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return nil
	}
	return net.UnknownNetworkError(network)
}

// addr is a host:port as given, for net.OpError's Source and Addr.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }

// opError is the error of a failed dial through the proxy at proxyAddr.
func opError(op, network, proxyAddr, target string, err error) error {
	e := &net.OpError{Op: op, Net: network, Addr: addr(target), Err: err}
	if proxyAddr != "" {
		e.Source = addr(proxyAddr)
	}
	return e
}

// aLongTimeAgo is a deadline in the past: setting it makes blocked I/O
// return at once.
var aLongTimeAgo = time.Unix(1, 0)

// Steps of a dial, named in the errors of timeouts and cancellations.
const (
	stepDial    = "connecting to the proxy"
	stepTLS     = "in the TLS handshake with the proxy"
	stepConnect = "waiting for the proxy's answer to CONNECT"
	stepResolve = "resolving the target"
	stepSOCKS   = "in the SOCKS5 handshake"
)

// stepError is a step of the dial ended by the caller's context, or by a
// deadline: "timed out waiting for the proxy's answer to CONNECT". It
// matches the context's error (context.DeadlineExceeded for every timeout)
// and the error the step saw.
type stepError struct {
	step   string
	ctxErr error // context.Canceled or context.DeadlineExceeded
	err    error // what the I/O returned, such as an i/o timeout
}

func (e *stepError) Error() string {
	if e.ctxErr == context.DeadlineExceeded {
		return "timed out " + e.step
	}
	return "canceled " + e.step
}

func (e *stepError) Unwrap() []error { return []error{e.ctxErr, e.err} }

// Timeout reports whether the step ran out of time.
func (e *stepError) Timeout() bool { return e.ctxErr == context.DeadlineExceeded }

// Temporary is Timeout, for net.Error.
func (e *stepError) Temporary() bool { return e.Timeout() }

// stepErr explains err, returned by step: a stepError when ctx has ended
// or err is a timeout, else err itself.
func stepErr(ctx context.Context, step string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return &stepError{step: step, ctxErr: cerr, err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return &stepError{step: step, ctxErr: context.DeadlineExceeded, err: err}
	}
	return err
}
