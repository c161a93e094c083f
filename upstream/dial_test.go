package upstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/upstream"
)

// hostile are bootstrap headers a Request may not set: each would change the
// bootstrap or forge the client address.
var hostile = header(
	"simplemq", "evil",
	"Host", "evil.example",
	"x-forwarded-for", "198.51.100.66",
	"Upgrade", "h2c",
	"Connection", "close",
	"Sec-WebSocket-Key", "forged",
	"SendSmqHttpResponse", "false",
	"Content-Length", "12",
)

// TestDial dials a real broker over each transport, checks that Init comes
// first, that the headers arrived as they should, and that messages flow.
func TestDial(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	clientCA := testpki.NewCA(t)
	serverCert := ca.Server(t)
	tests := []struct {
		scheme    string
		serverTLS *tls.Config
		clientTLS *tls.Config
	}{
		{scheme: "http"},
		{scheme: "ws"},
		{scheme: "https", serverTLS: serverCert.ServerConfig(nil), clientTLS: &tls.Config{RootCAs: ca.Pool}},
		{scheme: "wss", serverTLS: serverCert.ServerConfig(nil), clientTLS: &tls.Config{RootCAs: ca.Pool}},
		// The broker requires a client certificate: the gateway's own.
		{scheme: "https", serverTLS: serverCert.ServerConfig(clientCA.Pool), clientTLS: &tls.Config{
			RootCAs: ca.Pool, Certificates: []tls.Certificate{clientCA.Client(t, "gateway").TLS}}},
		{scheme: "wss", serverTLS: serverCert.ServerConfig(clientCA.Pool), clientTLS: &tls.Config{
			RootCAs: ca.Pool, Certificates: []tls.Certificate{clientCA.Client(t, "gateway").TLS}}},
	}
	for _, tt := range tests {
		name := tt.scheme
		if tt.serverTLS != nil && tt.serverTLS.ClientCAs != nil {
			name += "/client-cert"
		}
		t.Run(name, func(t *testing.T) {
			tb := startBroker(t, tt.serverTLS)
			d := newDialer(t, upstream.Config{Name: "lan", TLS: tt.clientTLS,
				URLs: []string{tt.scheme + "://" + tb.Addr + "/smq"}})
			h := hostile.Clone()
			h.Set("X-SMQ-Client-CN", "device-1")
			c := dial(t, d, upstream.Request{ClientIP: "203.0.113.7", Header: h})
			if c.WebSocket() != strings.HasPrefix(tt.scheme, "ws") {
				t.Errorf("WebSocket() = %v", c.WebSocket())
			}

			// The broker believes loopback proxies: its Init IP is the
			// X-Forwarded-For we sent, not the one in the hostile header.
			if init := readInit(t, c); init.IP != "203.0.113.7" {
				t.Errorf("Init IP %q, want the client's 203.0.113.7", init.IP)
			}
			write(t, c, smq.Connect{Version: 1, UID: "upstream-test"})
			ack, ok := read(t, c).(smq.Connack)
			if !ok || ack.Code != smq.CodeAccepted {
				t.Fatalf("Connack %+v", ack)
			}
			peer := <-tb.Peers
			want := map[string][]string{
				"X-Forwarded-For": {"203.0.113.7"},
				"X-Smq-Client-Cn": {"device-1"},
				"Simplemq":        {"1"},
				"Upgrade":         nil,
				"Content-Length":  nil,
			}
			if peer.WebSocket {
				want["Simplemq"] = nil
				want["Upgrade"] = []string{"websocket"}
			} else {
				want["Sendsmqhttpresponse"] = []string{"true"}
			}
			for k, v := range want {
				if got := peer.Header[k]; !slices.Equal(got, v) {
					t.Errorf("broker got %s: %q, want %q", k, got, v)
				}
			}
			if peer.Header.Get("Sec-Websocket-Key") == "forged" {
				t.Error("the forged Sec-WebSocket-Key reached the broker")
			}

			// Messages flow both ways: a publish to our own topic comes back.
			write(t, c, smq.Subscribe{Topic: "news"})
			sub, ok := read(t, c).(smq.Suback)
			if !ok || sub.Status != smq.AckOK {
				t.Fatalf("Suback %+v", sub)
			}
			write(t, c, &smq.Publish{TID: sub.ID, PTID: ack.ETID, Payload: []byte("hello")})
			if p, ok := read(t, c).(*smq.Publish); !ok || string(p.Payload) != "hello" {
				t.Fatalf("got %+v, want our Publish", p)
			}
		})
	}
}

// TestBootstrapRequest checks the raw bootstrap request on the wire: path
// and query of the URL, the URL's host, the SMQ headers, none of them
// overridden.
func TestBootstrapRequest(t *testing.T) {
	t.Parallel()
	b := broker.New(broker.Config{})
	type seen struct {
		host, uri string
		header    http.Header
	}
	requests := make(chan seen, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- seen{r.Host, r.RequestURI, r.Header.Clone()}
		b.ServeHTTP(w, r)
	})}
	l := listen(t)
	go srv.Serve(l)
	t.Cleanup(func() {
		b.Shutdown(context.Background())
		srv.Close()
	})

	d := newDialer(t, upstream.Config{URLs: []string{"http://" + l.Addr().String() + "/smq.lsp?x=1&y=%20"}})
	c := dial(t, d, upstream.Request{ClientIP: "192.0.2.1", Header: hostile})
	readInit(t, c)
	r := <-requests
	if r.host != l.Addr().String() || r.uri != "/smq.lsp?x=1&y=%20" {
		t.Errorf("request for %q on host %q", r.uri, r.host)
	}
	for k, v := range map[string]string{"Simplemq": "1", "Sendsmqhttpresponse": "true",
		"X-Forwarded-For": "192.0.2.1", "Connection": "", "Upgrade": ""} {
		if got := strings.Join(r.header[k], ","); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

// TestFailover: a dead URL is skipped for the next one, and skipped without
// a dial while it is in back-off.
func TestFailover(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, nil)
	dead := deadAddr(t)
	cd := &countingDialer{}
	var logs logBuffer
	d := newDialer(t, upstream.Config{Name: "lan", Dialer: cd, Backoff: time.Hour, Logger: logs.logger(),
		URLs: []string{"http://" + dead + "/smq", "ws://" + tb.Addr + "/smq"}})

	readInit(t, dial(t, d, upstream.Request{ClientIP: "192.0.2.1"}))
	if got := cd.take(); !slices.Equal(got, []string{dead, tb.Addr}) {
		t.Fatalf("first dial went to %q, want the dead URL, then the live one", got)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN msg=\"upstream failover\" upstream=lan url=http://"+dead) ||
		!strings.Contains(l, "connection refused") || !strings.Contains(l, "next=ws://"+tb.Addr) {
		t.Errorf("log: %s", l)
	}

	readInit(t, dial(t, d, upstream.Request{ClientIP: "192.0.2.1"}))
	if got := cd.take(); !slices.Equal(got, []string{tb.Addr}) {
		t.Fatalf("second dial went to %q, want only the live URL", got)
	}
}

// TestAllDead: when every URL fails, the error lists each with its own
// error, and Reason makes one line of it.
func TestAllDead(t *testing.T) {
	t.Parallel()
	dead1, dead2 := deadAddr(t), deadAddr(t)
	urls := []string{"http://" + dead1 + "/smq", "ws://" + dead2 + "/smq"}
	d := newDialer(t, upstream.Config{Name: "lan", URLs: urls})
	_, err := d.Dial(context.Background(), upstream.Request{})
	var e *upstream.Error
	if !errors.As(err, &e) {
		t.Fatalf("%T %v, want *upstream.Error", err, err)
	}
	if e.Upstream != "lan" || e.Aborted || len(e.Attempts) != 2 {
		t.Fatalf("%+v", e)
	}
	for i, a := range e.Attempts {
		var oe *net.OpError
		if a.URL != urls[i] || !errors.As(a.Err, &oe) || oe.Op != "dial" || oe.Net != "tcp" ||
			!strings.HasSuffix(oe.Addr.String(), []string{dead1, dead2}[i]) {
			t.Errorf("attempt %d: %q %T %v", i, a.URL, a.Err, a.Err)
		}
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%v is not ECONNREFUSED", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "upstream lan unreachable: "+urls[0]+": dial tcp "+dead1) ||
		!strings.Contains(msg, "; "+urls[1]+": dial tcp "+dead2) {
		t.Errorf("error %q", msg)
	}
	reason := upstream.Reason(err)
	if !strings.HasPrefix(reason, "upstream lan unreachable: dial tcp "+dead1+": ") ||
		!strings.Contains(reason, "connection refused; dial tcp "+dead2) || strings.Contains(reason, "http://") {
		t.Errorf("reason %q", reason)
	}
}

// TestBackoff: when every URL is in back-off, the one that failed longest
// ago is tried, alone; a URL whose back-off has passed is tried again.
func TestBackoff(t *testing.T) {
	t.Parallel()
	a, b := deadAddr(t), deadAddr(t)
	urls := []string{"http://" + a, "http://" + b}
	t.Run("all in back-off", func(t *testing.T) {
		cd := &countingDialer{}
		d := newDialer(t, upstream.Config{Dialer: cd, Backoff: time.Hour, URLs: urls})
		for i, want := range [][]string{{a, b}, {a}, {b}, {a}} {
			if _, err := d.Dial(context.Background(), upstream.Request{}); err == nil {
				t.Fatal("dead URLs dialled")
			}
			if got := cd.take(); !slices.Equal(got, want) {
				t.Fatalf("dial %d went to %q, want %q", i, got, want)
			}
		}
	})
	t.Run("back-off passed", func(t *testing.T) {
		cd := &countingDialer{}
		d := newDialer(t, upstream.Config{Dialer: cd, Backoff: time.Nanosecond, URLs: urls})
		for i := range 2 {
			if _, err := d.Dial(context.Background(), upstream.Request{}); err == nil {
				t.Fatal("dead URLs dialled")
			}
			if got := cd.take(); !slices.Equal(got, []string{a, b}) {
				t.Fatalf("dial %d went to %q", i, got)
			}
		}
	})
}

// TestNotABroker: a plain HTTP server answers 404; the error says so.
func TestNotABroker(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tt := range []struct{ scheme, want string }{
		{"http", `bootstrap: smq: bad bootstrap: broker answered "404 Not Found"`},
		{"ws", `websocket upgrade: broker answered "404 Not Found"`},
	} {
		t.Run(tt.scheme, func(t *testing.T) {
			d := newDialer(t, upstream.Config{Name: "web", URLs: []string{tt.scheme + "://" + host + "/"}})
			_, err := d.Dial(context.Background(), upstream.Request{})
			if err == nil {
				t.Fatal("a web server was taken for a broker")
			}
			want := "upstream web unreachable: dial tcp " + host + ": " + tt.want
			if got := upstream.Reason(err); got != want {
				t.Errorf("reason %q\nwant       %q", got, want)
			}
			if tt.scheme == "http" && !errors.Is(err, smq.ErrBadBootstrap) {
				t.Errorf("%v is not smq.ErrBadBootstrap", err)
			}
		})
	}
}

func TestTLSUnknownAuthority(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	tb := startBroker(t, ca.Server(t).ServerConfig(nil))
	for _, scheme := range []string{"https", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			// No TLS config: the system roots, which do not know the test CA.
			d := newDialer(t, upstream.Config{URLs: []string{scheme + "://" + tb.Addr + "/"}})
			_, err := d.Dial(context.Background(), upstream.Request{})
			var ua x509.UnknownAuthorityError
			if !errors.As(err, &ua) {
				t.Fatalf("%v, want an unknown authority", err)
			}
		})
	}
}

// blockingDialer's connects never complete; they end with their context.
type blockingDialer struct{ started chan struct{} }

func (d blockingDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	d.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestSilent: a server that never answers, or a connect that hangs, fails
// the attempt after DialTimeout.
func TestSilent(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	silent, _ := silentServer(t)
	tests := []struct {
		name, url string
		dialer    upstream.ContextDialer
		stage     string
	}{
		{"raw", "http://" + silent + "/smq", nil, "bootstrap: "},
		{"ws", "ws://" + silent + "/smq", nil, "websocket upgrade: "},
		{"connect", "http://192.0.2.1/smq", blockingDialer{make(chan struct{}, 1)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDialer(t, upstream.Config{Name: "lan", DialTimeout: timeout, Dialer: tt.dialer, URLs: []string{tt.url}})
			start := time.Now()
			_, err := d.Dial(context.Background(), upstream.Request{})
			elapsed := time.Since(start)
			if elapsed < timeout || elapsed > timeout+3*time.Second {
				t.Errorf("failed after %v, want %v", elapsed, timeout)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%v is not a timeout", err)
			}
			if e := err.(*upstream.Error); e.Aborted || !e.Timeout() {
				t.Errorf("%+v", e)
			}
			if r := upstream.Reason(err); !strings.HasSuffix(r, ": "+tt.stage+"no answer within 200ms") {
				t.Errorf("reason %q", r)
			}
		})
	}
}

// TestCancel: the caller's context aborts a connect or a bootstrap at once;
// it is not held against the URL.
func TestCancel(t *testing.T) {
	t.Parallel()
	silent, accepted := silentServer(t)
	tb := startBroker(t, nil)
	blocking := blockingDialer{make(chan struct{}, 1)}
	tests := []struct {
		name    string
		url     string
		dialer  upstream.ContextDialer
		started <-chan struct{} // the dial reached the URL
	}{
		{"raw", "http://" + silent + "/smq", nil, accepted},
		{"ws", "ws://" + silent + "/smq", nil, accepted},
		{"connect", "http://192.0.2.1/smq", blocking, blocking.started},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The second URL works: a dial that skipped the first would
			// succeed.
			d := newDialer(t, upstream.Config{Name: "lan", DialTimeout: time.Hour, Dialer: tt.dialer,
				URLs: []string{tt.url, "http://" + tb.Addr + "/"}})
			for round := range 2 { // the second proves the URL is not in back-off
				ctx, cancel := context.WithCancel(context.Background())
				result := make(chan error, 1)
				go func() {
					c, err := d.Dial(ctx, upstream.Request{})
					if err == nil {
						c.Close()
					}
					result <- err
				}()
				select {
				case <-tt.started:
				case err := <-result:
					t.Fatalf("round %d: Dial returned %v without waiting on the first URL", round, err)
				}
				cancel()
				start := time.Now()
				err := <-result
				if time.Since(start) > 2*time.Second {
					t.Errorf("Dial took %v to notice", time.Since(start))
				}
				var e *upstream.Error
				if !errors.Is(err, context.Canceled) || !errors.As(err, &e) || !e.Aborted || len(e.Attempts) != 1 {
					t.Fatalf("round %d: %v, want an aborted dial", round, err)
				}
				if r := upstream.Reason(err); !strings.HasPrefix(r, "upstream lan dial aborted: dial tcp ") ||
					!strings.HasSuffix(r, "context canceled") {
					t.Errorf("reason %q", r)
				}
			}
		})
	}
}

// TestCanceledBeforeDial: a context that has ended dials nothing.
func TestCanceledBeforeDial(t *testing.T) {
	t.Parallel()
	cd := &countingDialer{}
	d := newDialer(t, upstream.Config{Dialer: cd, URLs: []string{"http://" + deadAddr(t)}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := d.Dial(ctx, upstream.Request{})
	if !errors.Is(err, context.Canceled) || len(cd.take()) != 0 {
		t.Fatalf("%v", err)
	}
}

// TestIdleConnDeadlines: the deadlines of the dial are gone once it
// succeeded.
func TestIdleConnDeadlines(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, nil)
	for _, scheme := range []string{"http", "ws"} {
		t.Run(scheme, func(t *testing.T) {
			d := newDialer(t, upstream.Config{DialTimeout: 500 * time.Millisecond,
				URLs: []string{scheme + "://" + tb.Addr + "/"}})
			c := dial(t, d, upstream.Request{ClientIP: "192.0.2.1"})
			readInit(t, c)
			if err := c.SetReadDeadline(time.Time{}); err != nil {
				t.Fatal(err)
			}
			// Past the dial timeout, the conn still works. (Only time can
			// show that no deadline is left.)
			time.Sleep(600 * time.Millisecond)
			write(t, c, smq.Connect{Version: 1, UID: "upstream-test-" + scheme})
			if ack, ok := read(t, c).(smq.Connack); !ok || ack.Code != smq.CodeAccepted {
				t.Fatalf("Connack %+v", ack)
			}
			<-tb.Peers
		})
	}
}

// TestAttemptsReported: OnAttempt hears of each URL tried, State keeps the
// last outcome per URL, and Probe finds the live URL without a session.
func TestAttemptsReported(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, nil)
	dead := deadAddr(t)
	urls := []string{"http://" + dead + "/smq", "ws://" + tb.Addr + "/smq"}
	type try struct {
		url string
		ok  bool
	}
	var mu sync.Mutex
	var tries []try
	d := newDialer(t, upstream.Config{Name: "lan", URLs: urls, Backoff: time.Nanosecond,
		OnAttempt: func(url string, took time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if took <= 0 {
				t.Errorf("%s took %v", url, took)
			}
			tries = append(tries, try{url, err == nil})
		}})
	before := time.Now()
	readInit(t, dial(t, d, upstream.Request{}))
	mu.Lock()
	if want := []try{{urls[0], false}, {urls[1], true}}; !slices.Equal(tries, want) {
		t.Errorf("attempts %v, want %v", tries, want)
	}
	mu.Unlock()
	st := d.State()
	if len(st) != 2 || st[0].URL != urls[0] || st[0].LastFailed.Before(before) || !st[0].LastOK.IsZero() ||
		!errors.Is(st[0].Err, syscall.ECONNREFUSED) {
		t.Errorf("dead URL state %+v", st[0])
	}
	if st[1].LastOK.Before(before) || !st[1].LastFailed.IsZero() || st[1].Err != nil {
		t.Errorf("live URL state %+v", st[1])
	}
	if err := d.Probe(context.Background()); err != nil {
		t.Errorf("Probe with a live URL: %v", err)
	}
	deadOnly := newDialer(t, upstream.Config{Name: "gone", URLs: urls[:1]})
	err := deadOnly.Probe(context.Background())
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.HasPrefix(err.Error(), "upstream gone unreachable: "+urls[0]) {
		t.Errorf("Probe of a dead URL: %v", err)
	}
}
