package smqdial_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// TestMain checks that no test leaves a goroutine behind: every dial,
// guard and server must have ended.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noLeak fails t if goroutines started during t outlive it and its
// cleanups. Call it first: it checks after every later cleanup.
func noLeak(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// startBroker serves a real broker on a loopback port, behind TLS when tc
// is set, until the test ends. Each accepted Connect's bootstrap headers
// are sent on the returned channel.
func startBroker(t *testing.T, tc *tls.Config) (addr string, headers <-chan http.Header) {
	t.Helper()
	hs := make(chan http.Header, 16)
	b := broker.New(broker.Config{Authenticate: func(req *broker.ConnectRequest) (smq.ConnackCode, string) {
		hs <- req.Peer.Header
		return smq.CodeAccepted, ""
	}})
	l := smqtest.Listen(t)
	addr = l.Addr().String()
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
		<-served
	})
	return addr, hs
}

// silent is a server that never answers.
type silent struct {
	addr string
	// accepted, heard and requested receive (while they have room) when a
	// connection is accepted, when its first bytes arrived (a TLS
	// ClientHello, a request), and when a whole HTTP head was read (a
	// bootstrap request, an upgrade).
	accepted, heard, requested chan struct{}
}

// silentServer starts a silent server, behind TLS when tc is set.
func silentServer(t *testing.T, tc *tls.Config) *silent {
	t.Helper()
	s := &silent{accepted: make(chan struct{}, 16), heard: make(chan struct{}, 16), requested: make(chan struct{}, 16)}
	l := smqtest.Listen(t)
	s.addr = l.Addr().String()
	smqtest.Serve(t, l, func(c net.Conn) {
		signal(s.accepted)
		br := bufio.NewReader(c)
		if _, err := br.Peek(1); err != nil {
			return
		}
		signal(s.heard)
		var r io.Reader = br
		if tc != nil {
			r = tls.Server(readConn{c, br}, tc)
		}
		if _, err := http.ReadRequest(bufio.NewReader(r)); err == nil {
			signal(s.requested)
		}
		_, _ = io.Copy(io.Discard, r) // until the dialer or the test closes c
	})
	return s
}

// signal sends on ch if it has room.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// readConn is a net.Conn whose reads go through r.
type readConn struct {
	net.Conn
	r io.Reader
}

func (c readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// mustURL parses a URL the test wrote.
func mustURL(s string) *url.URL { return must(url.Parse(s)) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// exchange sends m, unless it is nil, then reads and decodes the next
// message, all under one deadline.
func exchange(t *testing.T, c wire.Conn, m smq.Message) smq.Message {
	t.Helper()
	deadline := time.Now().Add(smqtest.WaitFor)
	_ = c.SetWriteDeadline(deadline)
	_ = c.SetReadDeadline(deadline)
	var err error
	if m != nil {
		if err = c.Write(m.Append(nil)); err == nil {
			err = c.Flush()
		}
	}
	var msg []byte
	if err == nil {
		msg, err = c.Read()
	}
	var got smq.Message
	if err == nil {
		got, err = smq.Decode(msg)
	}
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return got
}

// blockingDialer's connects never complete; they end with their context.
// Each reports on started.
type blockingDialer struct{ started chan struct{} }

func (d blockingDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	d.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}
