// Package upstream dials the SMQ broker a gateway session is forwarded to,
// with failover across an upstream's URLs and a back-off for the ones that
// failed; package smqdial makes each connection (TCP or TLS, then the raw
// SMQ bootstrap or a WebSocket upgrade). Embedded reaches a broker in the
// same process instead. Either way the caller gets a wire.Conn whose next
// message is the broker's Init.
package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smqdial"
	"github.com/smqgw/smqgw/wire"
)

// Defaults of Config's zero fields.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultBackoff     = 5 * time.Second
	DefaultKeepAlive   = 30 * time.Second
)

// ContextDialer opens network connections: a *net.Dialer, or a proxy dialer.
type ContextDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Request is what the gateway passes for one session.
type Request struct {
	// ClientIP is the client's address. It is sent as X-Forwarded-For on the
	// bootstrap request (and is the Init IP of an Embedded broker). Empty: no
	// X-Forwarded-For is sent.
	ClientIP string
	// Header holds extra bootstrap headers, such as the verified identity
	// (X-SMQ-Client-*). It cannot set the headers that make the bootstrap
	// (Host, SimpleMQ, SendSmqHttpResponse, Upgrade, Connection,
	// Sec-WebSocket-*), message framing (Content-Length, Transfer-Encoding)
	// or X-Forwarded-For, which comes from ClientIP alone; those keys are
	// dropped, whatever their case. Nil is fine.
	Header http.Header
}

// Upstream is where a route's sessions go.
type Upstream interface {
	// Dial connects and bootstraps. On success the next message read from
	// the Conn is the broker's Init. ctx bounds the whole dial; its end
	// aborts a connect or bootstrap in progress.
	Dial(ctx context.Context, req Request) (wire.Conn, error)
	// Name names the upstream in logs and errors.
	Name() string
}

// Config configures a Dialer.
type Config struct {
	// Name names the upstream in logs and errors ("lan"). Empty is allowed.
	Name string
	// URLs are the broker's addresses, tried in order: http:// and https://
	// for raw SMQ (the bootstrap request goes to the URL's path and query),
	// ws:// and wss:// for WebSocket. At least one is required.
	URLs []string
	// DialTimeout bounds one URL's attempt: TCP connect, TLS handshake and
	// bootstrap, until the broker's HTTP answer (raw) or upgrade (WebSocket).
	// Zero means DefaultDialTimeout (5 s).
	DialTimeout time.Duration
	// Backoff is how long a URL that failed is skipped. When every URL is
	// in back-off, the one that failed longest ago is tried. Zero means
	// DefaultBackoff (5 s).
	Backoff time.Duration
	// Dialer opens the TCP connections, directly or through a proxy. Nil
	// means a net.Dialer with DefaultKeepAlive.
	Dialer ContextDialer
	// Logger receives a warning for each failover from one URL to the next.
	// Nil discards.
	Logger *slog.Logger
	// TLS configures https:// and wss:// URLs: RootCAs (nil: the system
	// roots), client Certificates or GetClientCertificate, ServerName (empty:
	// the URL's host). It is cloned; NextProtos is always http/1.1 and
	// MinVersion at least TLS 1.2. Nil means the defaults.
	TLS *tls.Config
	// OnAttempt, when not nil, is told of each URL attempt a Dial makes:
	// the URL as configured, how long it took, and its error (nil: the
	// session is bootstrapped). Attempts the caller's context aborted are
	// not reported: they say nothing about the URL. For metrics; it must
	// not block.
	OnAttempt func(url string, took time.Duration, err error)
}

// Dialer is an Upstream reached over the network. Create it with New; it is
// safe for concurrent use.
type Dialer struct {
	name    string
	backoff time.Duration
	log     *slog.Logger
	targets []*target
	onTry   func(url string, took time.Duration, err error)

	mu sync.Mutex // guards target.failed, ok, lastErr
}

// target is one URL of an upstream.
type target struct {
	url    string   // as configured
	u      *url.URL // parsed
	dial   smqdial.Dialer
	failed time.Time // when it last failed; zero: it did not, or it worked since
	ok     time.Time // when it last worked
	// lastErr is why the last attempt failed, nil when it worked.
	lastErr error
}

var (
	_ Upstream = (*Dialer)(nil)
	_ Upstream = Embedded{}
)

// New validates cfg and returns its Dialer.
func New(cfg Config) (*Dialer, error) {
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("upstream: %s has no urls", label(cfg.Name))
	}
	if cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("upstream: invalid dial timeout %v: must not be negative", cfg.DialTimeout)
	}
	if cfg.Backoff < 0 {
		return nil, fmt.Errorf("upstream: invalid backoff %v: must not be negative", cfg.Backoff)
	}
	d := &Dialer{
		name:    cfg.Name,
		backoff: orDefault(cfg.Backoff, DefaultBackoff),
		log:     cfg.Logger,
		onTry:   cfg.OnAttempt,
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	dialer := cfg.Dialer
	if dialer == nil {
		dialer = &net.Dialer{KeepAlive: DefaultKeepAlive}
	}
	for _, raw := range cfg.URLs {
		t, err := parseTarget(raw, cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("upstream: invalid url %q: %w", proxyclient.Redact(raw), err)
		}
		t.dial.NetDialer = dialer
		t.dial.Timeout = orDefault(cfg.DialTimeout, DefaultDialTimeout)
		d.targets = append(d.targets, t)
	}
	return d, nil
}

func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func parseTarget(raw string, tc *tls.Config) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err // it would repeat the URL
		}
		return nil, err
	}
	t := &target{url: raw, u: u}
	secure := false
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
	case "https", "wss":
		secure = true
	case "":
		return nil, fmt.Errorf("no scheme: want http, https, ws or wss")
	default:
		return nil, fmt.Errorf("unsupported scheme %q: want http, https, ws or wss", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("no host")
	}
	if u.User != nil {
		return nil, fmt.Errorf("user info is not supported")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("invalid port %q", port)
		}
	}
	if secure {
		t.dial.TLSConfig = tlsConfig(tc, u.Hostname())
	}
	return t, nil
}

// tlsConfig returns the client configuration for one host.
func tlsConfig(base *tls.Config, host string) *tls.Config {
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	// The bootstrap is HTTP/1.1, for raw SMQ and WebSocket alike.
	c.NextProtos = []string{"http/1.1"}
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// Name returns the upstream's name.
func (d *Dialer) Name() string { return d.name }

// URLs returns the upstream's URLs as configured.
func (d *Dialer) URLs() []string {
	urls := make([]string, len(d.targets))
	for i, t := range d.targets {
		urls[i] = t.url
	}
	return urls
}

// Dial connects to the first URL that works, trying the URLs in order and
// skipping those in back-off, and bootstraps an SMQ session on it: the next
// message read from the Conn is the broker's Init. The Conn is a *Conn,
// which names the URL. Each attempt is bounded by
// the dial timeout, the whole Dial by ctx, whose end aborts the attempt in
// progress and stops the failover; it does not count as the URL's failure.
//
// When no URL works the error is an *Error listing each URL tried with why it
// failed; URLs skipped for their back-off are not in it.
func (d *Dialer) Dial(ctx context.Context, req Request) (wire.Conn, error) {
	hdr := bootstrapHeader(req)
	e := &Error{Upstream: d.name}
	plan := d.plan(time.Now())
	for i, t := range plan {
		// A ctx that has ended dials nothing: the attempt fails at once.
		began := time.Now()
		conn, err := t.dial.Dial(ctx, t.u, hdr)
		if err == nil {
			d.report(t, began, nil)
			return &Conn{Conn: conn, URL: t.url}, nil
		}
		e.Attempts = append(e.Attempts, Attempt{URL: t.url, Err: err})
		if ctx.Err() != nil {
			e.Aborted = true // the caller gave up; the URL is not to blame
			break
		}
		d.report(t, began, err)
		if i+1 < len(plan) {
			d.log.Warn("upstream failover", "upstream", d.name, "url", t.url, "err", err,
				"next", plan[i+1].url)
		}
	}
	return nil, e
}

// Conn is the connection a Dialer's Dial returns: the broker's, and the
// URL (as configured) that it was made to, which after a failover is not
// the first.
type Conn struct {
	wire.Conn
	URL string
}

// plan returns the URLs to try now: those not in back-off, in order; if all
// are, the one that failed longest ago.
func (d *Dialer) plan(now time.Time) []*target {
	d.mu.Lock()
	defer d.mu.Unlock()
	plan := make([]*target, 0, len(d.targets))
	var oldest *target
	for _, t := range d.targets {
		if t.failed.IsZero() || now.Sub(t.failed) >= d.backoff {
			plan = append(plan, t)
		} else if oldest == nil || t.failed.Before(oldest.failed) {
			oldest = t
		}
	}
	if len(plan) == 0 {
		plan = append(plan, oldest)
	}
	return plan
}

// report records an attempt on t that began at began: its success (nil
// err) or failure.
func (d *Dialer) report(t *target, began time.Time, err error) {
	now := time.Now()
	d.mu.Lock()
	if err == nil {
		t.failed, t.ok = time.Time{}, now
	} else {
		t.failed = now
	}
	t.lastErr = err
	d.mu.Unlock()
	if d.onTry != nil {
		d.onTry(t.url, now.Sub(began), err)
	}
}

// URLState is what the last attempt on one URL showed.
type URLState struct {
	URL string // as configured
	// LastOK is when a dial to it last worked, zero if never.
	LastOK time.Time
	// LastFailed is when it last failed, zero if it never did or worked
	// since.
	LastFailed time.Time
	// Err is why the last attempt failed, nil if it worked or none was
	// made.
	Err error
}

// State reports the outcome of the last attempt on each URL, in order.
func (d *Dialer) State() []URLState {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := make([]URLState, len(d.targets))
	for i, t := range d.targets {
		st[i] = URLState{URL: t.url, LastOK: t.ok, LastFailed: t.failed, Err: t.lastErr}
	}
	return st
}

// Probe checks that at least one URL takes a connection: a TCP connect
// (through the proxy, if the dialer has one) under the dial timeout, closed
// at once; no TLS, no session. It returns nil on the first that does, else
// an *Error naming each URL's failure. For health checks: it does not touch
// the back-off state.
func (d *Dialer) Probe(ctx context.Context) error {
	e := &Error{Upstream: d.name}
	for _, t := range d.targets {
		c, err := t.dial.Connect(ctx, t.u)
		if err == nil {
			c.Close()
			return nil
		}
		e.Attempts = append(e.Attempts, Attempt{URL: t.url, Err: err})
		if ctx.Err() != nil {
			e.Aborted = true
			break
		}
	}
	return e
}

// bootstrapHeader returns req's headers as sent upstream: canonical keys,
// those the bootstrap owns dropped, X-Forwarded-For from ClientIP alone.
func bootstrapHeader(req Request) http.Header {
	h := make(http.Header, len(req.Header)+1)
	for k, vs := range req.Header {
		ck := http.CanonicalHeaderKey(k)
		if smqdial.ReservedHeader(ck) || ck == "X-Forwarded-For" || len(vs) == 0 {
			continue
		}
		h[ck] = append(h[ck], vs...)
	}
	if req.ClientIP != "" {
		h["X-Forwarded-For"] = []string{req.ClientIP}
	}
	return h
}

// label is how an upstream is named in messages: "upstream lan", or
// "upstream" when it has no name.
func label(name string) string {
	if name == "" {
		return "upstream"
	}
	return "upstream " + name
}
