package smqdial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smqdial"
)

// prompt is how long a cancelled dial may take to end. A cancellation that
// got lost would wait for the context's deadline, an hour away.
const prompt = 5 * time.Second

// cancellingDialer connects, then cancels the dial's context before it
// returns the connection: the context ends between the connect and the
// guard, the moment a deadline set after the guard's would undo the
// cancellation.
// It reports on cancelled when it has.
type cancellingDialer struct {
	net.Dialer
	cancel    context.CancelFunc
	cancelled chan struct{}
}

func (d *cancellingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	d.cancel()
	d.cancelled <- struct{}{}
	return c, err
}

// TestCancel: the caller's context aborts a dial at once, in every stage,
// on every transport, and leaves no goroutine behind.
func TestCancel(t *testing.T) {
	noLeak(t)
	ca := testpki.NewCA(t)
	serverTLS := ca.Server(t).ServerConfig(nil)
	const (
		atConnect   = iota // in the connect itself
		connected          // right after the connect (cancellingDialer)
		atHandshake        // the server got the TLS ClientHello and stays silent
		atRequest          // the server read the bootstrap request or upgrade and stays silent
	)
	for _, tc := range []struct {
		name      string
		scheme    string
		serverTLS bool
		when      int
		stage     smqdial.Stage
	}{
		{"connect", "ws", false, atConnect, smqdial.StageConnect},
		{"connected", "http", false, connected, smqdial.StageBootstrap},
		{"connected/ws", "ws", false, connected, smqdial.StageUpgrade},
		{"connected/tls", "wss", true, connected, smqdial.StageTLS},
		{"tls handshake", "https", false, atHandshake, smqdial.StageTLS},
		{"tls handshake/ws", "wss", false, atHandshake, smqdial.StageTLS},
		{"bootstrap", "http", false, atRequest, smqdial.StageBootstrap},
		{"bootstrap/tls", "https", true, atRequest, smqdial.StageBootstrap},
		{"upgrade", "ws", false, atRequest, smqdial.StageUpgrade},
		{"upgrade/tls", "wss", true, atRequest, smqdial.StageUpgrade},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stc *tls.Config
			if tc.serverTLS {
				stc = serverTLS
			}
			srv := silentServer(t, stc)
			addr := srv.addr
			// Rounds make the moment of the cancellation vary against
			// the guard's goroutine.
			for range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				d := &smqdial.Dialer{TLSConfig: &tls.Config{RootCAs: ca.Pool}}
				var reached <-chan struct{}
				switch tc.when {
				case atConnect:
					bd := blockingDialer{make(chan struct{}, 1)}
					d.NetDialer, reached = bd, bd.started
					addr = "192.0.2.1" // TEST-NET: no connect would complete
				case connected:
					cd := &cancellingDialer{cancel: cancel, cancelled: make(chan struct{}, 1)}
					d.NetDialer, reached = cd, cd.cancelled
				case atHandshake:
					reached = srv.heard
				case atRequest:
					reached = srv.requested
				}
				result := make(chan error, 1)
				go func() {
					c, err := d.Dial(ctx, mustURL(tc.scheme+"://"+addr+"/smq"), nil)
					if err == nil {
						c.Close()
					}
					result <- err
				}()
				if reached != nil {
					select {
					case <-reached:
					case err := <-result:
						select {
						case <-reached: // both were ready
							result <- err
						default:
							t.Fatalf("the dial ended before its stage: %v", err)
						}
					case <-time.After(smqtest.WaitFor):
						t.Fatal("the dial did not reach its stage")
					}
				}
				cancel() // already done by a cancellingDialer
				start := time.Now()
				var err error
				select {
				case err = <-result:
				case <-time.After(prompt):
					t.Fatalf("the dial went on %v after its context was cancelled", prompt)
				}
				var e *smqdial.Error
				if !errors.As(err, &e) || e.Kind != smqdial.Aborted || e.Stage != tc.stage ||
					!errors.Is(err, context.Canceled) || e.Timeout() {
					t.Fatalf("%v (%v at %v, %T), want aborted at %v", err, e.Kind, e.Stage, e.Err, tc.stage)
				}
				if r := smqdial.Reason(err); r != "dial aborted" {
					t.Errorf("reason %q", r)
				}
				if took := time.Since(start); took > prompt {
					t.Errorf("the dial took %v to end", took)
				}
			}
		})
	}
}

// TestCanceledBefore: a context that has ended dials nothing.
func TestCanceledBefore(t *testing.T) {
	bd := blockingDialer{make(chan struct{}, 1)}
	d := &smqdial.Dialer{NetDialer: bd}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, scheme := range []string{"http", "wss"} {
		_, err := d.Dial(ctx, mustURL(scheme+"://192.0.2.1/"), nil)
		var e *smqdial.Error
		if !errors.As(err, &e) || e.Kind != smqdial.Aborted || e.Stage != smqdial.StageConnect ||
			err.Error() != "dial tcp 192.0.2.1:"+map[string]string{"http": "80", "wss": "443"}[scheme]+": context canceled" {
			t.Errorf("%s: %v", scheme, err)
		}
	}
	if _, err := d.Connect(ctx, mustURL("http://192.0.2.1/")); !errors.Is(err, context.Canceled) {
		t.Errorf("Connect: %v", err)
	}
	if len(bd.started) != 0 {
		t.Error("a dial was made")
	}
}

// TestGuard: a guarded connection's blocked read ends with the context;
// stop tells whether it did.
func TestGuard(t *testing.T) {
	noLeak(t)
	l := smqtest.Listen(t)
	smqtest.Serve(t, l, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	stop := smqdial.Guard(ctx, c)
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()
	cancel()
	if err := smqtest.Recv(t, read, "the read's end"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read: %v", err)
	}
	if stop() {
		t.Error("stop reports true after the context ended")
	}

	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	stop = smqdial.Guard(ctx, c)
	if !stop() {
		t.Error("stop reports false while the context is alive")
	}
}

// TestCancelAfterGuard: the context ends right after the guard has put its
// deadline on the connection, and any deadline in the future set after that
// waits until the guard's deadline in the past has landed: the worst
// order. The dial must still end with the context. (It did not when
// gorilla/websocket's Dialer was given the context: it set the context's
// deadline on the connection after the guard, over the deadline in the
// past, and the upgrade then waited out the context's deadline.)
func TestCancelAfterGuard(t *testing.T) {
	noLeak(t)
	ca := testpki.NewCA(t)
	for _, tc := range []struct {
		scheme    string
		serverTLS *tls.Config
	}{{"http", nil}, {"ws", nil}, {"wss", ca.Server(t).ServerConfig(nil)}} {
		t.Run(tc.scheme, func(t *testing.T) {
			srv := silentServer(t, tc.serverTLS)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			d := &smqdial.Dialer{NetDialer: &worstOrderDialer{cancel: cancel}, TLSConfig: &tls.Config{RootCAs: ca.Pool}}
			result := make(chan error, 1)
			go func() {
				c, err := d.Dial(ctx, mustURL(tc.scheme+"://"+srv.addr+"/smq"), nil)
				if err == nil {
					c.Close()
				}
				result <- err
			}()
			select {
			case err := <-result:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("%v, want an aborted dial", err)
				}
			case <-time.After(prompt):
				t.Fatalf("the dial went on %v after its context was cancelled", prompt)
			}
		})
	}
}

// worstOrderDialer connects and returns a worstOrderConn.
type worstOrderDialer struct {
	net.Dialer
	cancel context.CancelFunc
}

func (d *worstOrderDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &worstOrderConn{Conn: c, cancel: d.cancel, past: make(chan struct{})}, nil
}

// worstOrderConn cancels the dial's context once the first deadline (the
// guard's) is set, and holds any later deadline in the future until one in
// the past has been set.
type worstOrderConn struct {
	net.Conn
	cancel context.CancelFunc
	past   chan struct{} // closed when a deadline in the past is set
	mu     sync.Mutex
	calls  int
	once   sync.Once
}

func (c *worstOrderConn) SetDeadline(t time.Time) error { return c.set(t, c.Conn.SetDeadline) }
func (c *worstOrderConn) SetReadDeadline(t time.Time) error {
	return c.set(t, c.Conn.SetReadDeadline)
}
func (c *worstOrderConn) SetWriteDeadline(t time.Time) error {
	return c.set(t, c.Conn.SetWriteDeadline)
}

func (c *worstOrderConn) set(t time.Time, apply func(time.Time) error) error {
	c.mu.Lock()
	first := c.calls == 0
	c.calls++
	c.mu.Unlock()
	inPast := !t.IsZero() && t.Before(time.Now())
	if !first && !t.IsZero() && !inPast {
		select {
		case <-c.past:
		case <-time.After(smqtest.WaitFor): // no deadline in the past is coming
		}
	}
	err := apply(t)
	if inPast {
		c.once.Do(func() { close(c.past) })
	}
	if first {
		c.cancel()
	}
	return err
}
