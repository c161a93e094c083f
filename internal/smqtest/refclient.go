package smqtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// RefKind is a reference client whose reconnect rules a RefClient follows
// (SMQ-WIRE §5).
type RefKind int

const (
	// SMQJS is the JavaScript client smq.js in a page whose onclose
	// returns a retry delay: over WebSocket, it reconnects after a close or
	// error without an SMQ refusal and restores its subscriptions; it
	// stops for good after any Connack other than 0x00 and after any
	// Disconnect from the broker.
	SMQJS RefKind = iota
	// CClient is the C client as its examples (LED-SMQ) use it: raw SMQ,
	// bootstrapped with "GET path HTTP/1.0" and "User-Agent: SimpleMQ/1";
	// it reconnects after socket errors and a Disconnect (negative
	// statuses) and subscribes again; it exits for good on any Connack
	// refusal (a positive status).
	CClient
)

func (k RefKind) String() string {
	if k == SMQJS {
		return "smq.js"
	}
	return "C client"
}

// RefClient is a client that reconnects as a reference client does, kept
// subscribed to one topic. Start it with StartRef; it runs until it stops
// for good or the test ends.
type RefClient struct {
	Kind  RefKind
	URL   string // ws://host:port/path for SMQJS, host:port/path for CClient
	UID   string
	Topic string
	// Retry is the delay before each reconnect.
	Retry time.Duration
	// Messages receives the payloads published to Topic.
	Messages chan string

	mu        sync.Mutex
	connected bool
	sessions  int   // accepted Connacks so far
	stopped   error // why it stopped for good, nil while it goes on
	last      error // why the last connection ended
	changed   chan struct{}
}

// StartRef runs a reference client of kind k to url (see RefClient.URL)
// as uid, subscribed to topic, reconnecting retry after each loss.
func StartRef(tb testing.TB, k RefKind, url, uid, topic string, retry time.Duration) *RefClient {
	tb.Helper()
	c := &RefClient{Kind: k, URL: url, UID: uid, Topic: topic, Retry: retry,
		Messages: make(chan string, 64), changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return c
}

// State reports whether the client is connected, how many sessions it has
// had, and why it stopped for good (nil while it goes on).
func (c *RefClient) State() (connected bool, sessions int, stopped error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.sessions, c.stopped
}

// LastEnd is why the client's last connection ended.
func (c *RefClient) LastEnd() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *RefClient) set(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// finalError is an end a reference client does not retry after.
type finalError struct{ why string }

func (e *finalError) Error() string { return e.why }

func (c *RefClient) run(ctx context.Context) {
	for {
		err := c.session(ctx)
		var fe *finalError
		c.set(func() {
			c.connected, c.last = false, err
			if errors.As(err, &fe) {
				c.stopped = err
			}
		})
		if fe != nil || ctx.Err() != nil {
			return
		}
		select {
		case <-time.After(c.Retry):
		case <-ctx.Done():
			return
		}
	}
}

// peer is one connection's framing.
type peer struct {
	read  func() ([]byte, error)
	write func(msg []byte) error
	close func()
}

// session runs one connection to its end.
func (c *RefClient) session(ctx context.Context) error {
	p, err := c.dial()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, p.close)
	defer stop()
	defer p.close()
	msg, err := p.read()
	if err != nil {
		return fmt.Errorf("waiting for Init: %w", err)
	}
	if smq.Type(msg[0]) != smq.TypeInit {
		return fmt.Errorf("got %v, want Init", smq.Type(msg[0]))
	}
	if err := p.write(smq.Connect{Version: 1, UID: c.UID}.Append(nil)); err != nil {
		return err
	}
	if msg, err = p.read(); err != nil {
		return fmt.Errorf("waiting for Connack: %w", err)
	}
	m, err := smq.Decode(msg)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case smq.Connack:
		if m.Code != smq.CodeAccepted {
			return &finalError{fmt.Sprintf("%v refused: Connack %v %q", c.Kind, m.Code, m.Reason)}
		}
	case smq.Disconnect:
		return c.disconnected(m)
	default:
		return fmt.Errorf("got %v, want Connack", m.Type())
	}
	if err := p.write(smq.Subscribe{Topic: c.Topic}.Append(nil)); err != nil {
		return err
	}
	var tid uint32
	for tid == 0 {
		if msg, err = p.read(); err != nil {
			return err
		}
		m, _ := smq.Decode(msg)
		switch m := m.(type) {
		case smq.Suback:
			if m.Status != smq.AckOK {
				return fmt.Errorf("subscription to %q denied", c.Topic)
			}
			tid = m.ID
		case smq.Disconnect:
			return c.disconnected(m)
		}
	}
	c.set(func() { c.connected = true; c.sessions++ })
	for {
		msg, err := p.read()
		if err != nil {
			return err
		}
		m, _ := smq.Decode(msg)
		switch m := m.(type) {
		case *smq.Publish:
			if m.TID == tid {
				select {
				case c.Messages <- string(m.Payload):
				default:
				}
			}
		case smq.Ping:
			_ = p.write(smq.Pong{}.Append(nil))
		case smq.Disconnect:
			return c.disconnected(m)
		}
	}
}

// disconnected is the end after the broker's Disconnect: final for smq.js.
func (c *RefClient) disconnected(d smq.Disconnect) error {
	if c.Kind == SMQJS {
		return &finalError{fmt.Sprintf("%v got Disconnect %q", c.Kind, d.Reason)}
	}
	return fmt.Errorf("Disconnect %q", d.Reason)
}

// dial opens a connection as the client does.
func (c *RefClient) dial() (*peer, error) {
	if c.Kind == SMQJS {
		d := websocket.Dialer{HandshakeTimeout: DefaultTimeout}
		ws, _, err := d.Dial(c.URL, nil)
		if err != nil {
			return nil, err
		}
		return &peer{
			read: func() ([]byte, error) {
				for {
					typ, p, err := ws.ReadMessage()
					if err != nil || typ == websocket.BinaryMessage && len(p) > 0 {
						return p, err
					}
				}
			},
			write: func(msg []byte) error {
				_ = ws.SetWriteDeadline(time.Now().Add(DefaultTimeout))
				return ws.WriteMessage(websocket.BinaryMessage, msg)
			},
			close: func() { ws.Close() },
		}, nil
	}
	host, path := c.URL, "/"
	for i := range c.URL {
		if c.URL[i] == '/' {
			host, path = c.URL[:i], c.URL[i:]
			break
		}
	}
	conn, err := net.DialTimeout("tcp", host, DefaultTimeout)
	if err != nil {
		return nil, err
	}
	req := RawRequest("GET "+path+" HTTP/1.0", "Host: "+host, "SimpleMQ: 1", "User-Agent: SimpleMQ/1")
	if _, err := conn.Write(req); err != nil {
		conn.Close()
		return nil, err
	}
	r := smq.NewReader(bufio.NewReader(conn))
	return &peer{
		read: r.Read,
		write: func(msg []byte) error {
			f, err := smq.AppendRaw(nil, msg)
			if err != nil {
				return err
			}
			_ = conn.SetWriteDeadline(time.Now().Add(DefaultTimeout))
			_, err = conn.Write(f)
			return err
		},
		close: func() { conn.Close() },
	}, nil
}

// WaitSessions waits until every client has had at least n sessions and
// is connected, failing the test if one stops for good or d passes. It
// returns how long it took.
func WaitSessions(tb testing.TB, d time.Duration, n int, clients ...*RefClient) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for _, c := range clients {
		for {
			c.mu.Lock()
			connected, sessions, stopped, changed := c.connected, c.sessions, c.stopped, c.changed
			c.mu.Unlock()
			if stopped != nil {
				tb.Fatalf("smqtest: %v %s stopped for good: %v", c.Kind, c.UID, stopped)
			}
			if connected && sessions >= n {
				break
			}
			select {
			case <-changed:
			case <-deadline.C:
				tb.Fatalf("smqtest: %v %s: %d sessions (connected %v) after %v, want %d; last end: %v",
					c.Kind, c.UID, sessions, connected, d, n, c.LastEnd())
			}
		}
	}
	return time.Since(start)
}

// WaitStopped waits until c stops for good and returns why, failing the
// test after d.
func WaitStopped(tb testing.TB, d time.Duration, c *RefClient) error {
	tb.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		stopped, changed := c.stopped, c.changed
		c.mu.Unlock()
		if stopped != nil {
			return stopped
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("smqtest: %v %s still running after %v", c.Kind, c.UID, d)
		}
	}
}
