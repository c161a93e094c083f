// Package client is the Go SMQ client library. It connects to an SMQ broker
// (or to the smqgw gateway in front of one) over raw SMQ (http://, https://)
// or WebSocket (ws://, wss://), and creates, subscribes, publishes and
// observes, with keepalive pings and optional automatic reconnect.
//
// A Client has one reader goroutine, one keepalive goroutine and one
// goroutine that runs message handlers and state callbacks in order. Its
// methods are safe for concurrent use. Close ends all of them.
//
// Contexts bound the waiting of a call: for a session while the client
// reconnects, for its turn to write, for the broker's answer. A write, once
// begun, is bounded by Options.WriteTimeout instead: cutting it short would
// leave half a frame on the stream.
package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
)

// Self is the topic name under which Subscribe receives one-to-one messages
// (those published to this client's ETID), as in the JavaScript client.
// Subscribing to it does not go to the broker.
const Self = "self"

// eventQueue is how many messages and Change notifications may wait for
// their handlers before the reader stops reading from the broker.
const eventQueue = 1024

// Message is one received Publish.
type Message struct {
	Topic    string // the subscribed topic's name, or Self for a one-to-one message
	TID      uint32 // the topic's ID, or this client's ETID for Self
	PTID     uint32 // the sender's ETID (reply with PublishTo)
	SubTID   uint32 // the sub-topic ID, 0 for none
	SubTopic string // the sub-topic's name when this client created it with Createsub, else ""
	Payload  []byte // the handler's own copy
}

// Client is a connection to an SMQ broker. Create it with Dial.
type Client struct {
	url    *url.URL
	dialer smqdial.Dialer
	opts   settings

	ctx    context.Context // ends with Close; stops reconnecting
	cancel context.CancelFunc

	events       chan event
	dispatchDone chan struct{}
	inHandler    atomic.Bool
	closed       atomic.Bool // Close was called: pending handlers are skipped
	final        StateChange // the last OnState call, set before events is closed
	done         chan struct{}
	wg           sync.WaitGroup // restore goroutines

	mu        sync.Mutex
	cn        *conn         // the current session, nil between sessions
	changedCh chan struct{} // closed and replaced when cn changes or the client ends
	closing   bool
	etid      uint32
	err       error
	subs      map[string]*subscription
	observers map[obsKey]*observer
}

type subscription struct{ h func(*Message) }

type observer struct{ fn func(id, count uint32) }

// event is work for the handler goroutine.
type event struct {
	fn    func()
	state bool // a state callback: run even after Close
}

// Dial connects to the broker at rawURL and returns once the broker has
// accepted the client (Connack 0x00). The URL's scheme picks the transport:
// http:// and https:// speak raw SMQ after an HTTP bootstrap, ws:// and
// wss:// WebSocket. A refused Connect is returned as a *RefusedError.
//
// ctx bounds the first connection only; Options.ConnectTimeout bounds it
// too.
func Dial(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("client: invalid url: %w", err)
	}
	c := &Client{url: u, subs: make(map[string]*subscription), observers: make(map[obsKey]*observer)}
	switch u.Scheme {
	case "http", "ws":
	case "https", "wss":
		c.dialer.TLSConfig = opts.tlsConfig(u.Hostname())
	default:
		return nil, fmt.Errorf("client: invalid url %q: scheme must be http, https, ws or wss", rawURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("client: invalid url %q: no host", rawURL)
	}
	if c.opts, err = opts.settle(); err != nil {
		return nil, err
	}
	c.dialer.NetDialer = c.opts.dialer
	cn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.events = make(chan event, eventQueue)
	c.dispatchDone = make(chan struct{})
	c.done = make(chan struct{})
	c.changedCh = make(chan struct{})
	c.cn, c.etid = cn, cn.etid
	c.postState(StateChange{State: Connected, ETID: cn.etid})
	go c.dispatch()
	go c.run(cn)
	return c, nil
}

// connect makes one session: dial, bootstrap, Init, Connect, Connack.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	wc, err := c.dialer.Dial(ctx, c.url, c.opts.Header)
	if err != nil {
		return nil, c.dialErr(err)
	}
	// ctx bounds the handshake too. (Connect's write has a deadline of its
	// own, WriteTimeout; the reads are what wait for the broker.)
	stop := smqdial.Guard(ctx, wc)
	tr := newTransport(wc)
	etid, err := c.handshake(ctx, tr)
	if !stop() && err == nil {
		err = c.stageErr(ctx, "connecting to", ctx.Err())
	}
	if err != nil {
		_ = tr.close()
		return nil, err
	}
	_ = wc.SetReadDeadline(time.Time{})
	_ = wc.SetWriteDeadline(time.Time{})
	return newConn(c, tr, etid), nil
}

// dialErr words a failed dial as the client always has: "client: dial tcp
// 10.0.0.5:80: connect: connection refused", "client: tls handshake with
// HOST: ...", "client: websocket upgrade refused by HOST: 404 Not Found".
// It wraps the *smqdial.Error.
func (c *Client) dialErr(err error) error {
	var e *smqdial.Error
	var oe *net.OpError
	switch {
	case !errors.As(err, &e):
		return fmt.Errorf("client: %w", err)
	case e.Stage == smqdial.StageConnect && errors.As(e.Err, &oe):
		// The dialer's own error names the address (and the proxy).
		return &dialError{msg: "client: " + e.Err.Error(), err: e}
	case e.Stage == smqdial.StageConnect:
		return fmt.Errorf("client: %w", e)
	case e.Status != "":
		return &dialError{msg: fmt.Sprintf("client: websocket upgrade refused by %s: %s", c.url.Host, e.Status), err: e}
	}
	return &dialError{msg: fmt.Sprintf("client: %v with %s: %v", e.Stage, c.url.Host, e.Err), err: e}
}

// stageErr describes an error in one stage of the handshake. When ctx
// ended, that is the cause, whatever I/O error it provoked.
func (c *Client) stageErr(ctx context.Context, stage string, err error) error {
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return fmt.Errorf("client: %s %s: %w", stage, c.url.Host, err)
}

// dialError is a failed dial in the client's words.
type dialError struct {
	msg string
	err *smqdial.Error
}

func (e *dialError) Error() string { return e.msg }
func (e *dialError) Unwrap() error { return e.err }

// handshake waits for Init, and only then sends Connect (never pipelined),
// and reads the Connack.
func (c *Client) handshake(ctx context.Context, tr *transport) (uint32, error) {
	msg, err := tr.read()
	if err != nil {
		return 0, c.stageErr(ctx, "waiting for Init from", err)
	}
	if t := smq.Type(msg[0]); t != smq.TypeInit {
		return 0, c.stageErr(ctx, "waiting for Init from", fmt.Errorf("broker sent %v", t))
	}
	if _, err := smq.Decode(msg); err != nil {
		return 0, c.stageErr(ctx, "waiting for Init from", err)
	}
	connect := smq.Connect{Version: 1, UID: c.opts.UID, Credentials: c.opts.Credentials, Info: c.opts.Info}
	if err := tr.write(connect, time.Now().Add(c.opts.WriteTimeout)); err != nil {
		return 0, c.stageErr(ctx, "sending Connect to", err)
	}
	msg, err = tr.read()
	if err != nil {
		return 0, c.stageErr(ctx, "waiting for Connack from", err)
	}
	m, err := smq.Decode(msg)
	if err != nil {
		return 0, c.stageErr(ctx, "waiting for Connack from", err)
	}
	ack, ok := m.(smq.Connack)
	if !ok {
		return 0, c.stageErr(ctx, "waiting for Connack from", fmt.Errorf("broker sent %v", m.Type()))
	}
	if ack.Code != smq.CodeAccepted {
		return 0, &RefusedError{Code: ack.Code, Reason: ack.Reason}
	}
	return ack.ETID, nil
}

// run serves sessions until the client is finished: it is the reader of
// every connection, and reconnects in between when asked to.
func (c *Client) run(cn *conn) {
	defer close(c.done)
	for {
		err := cn.serve()
		c.mu.Lock()
		c.cn = nil
		closing := c.closing
		c.signalLocked()
		c.mu.Unlock()
		c.wg.Wait() // restore goroutines end with their session
		if closing {
			err = ErrClosed
		}
		if closing || !c.opts.Reconnect || takenOver(err) {
			c.finish(err)
			return
		}
		c.opts.log.Info("smq client: connection lost, reconnecting", "url", c.url.Redacted(), "err", err)
		c.postState(StateChange{State: Reconnecting, Err: err})
		if cn, err = c.reconnect(); cn == nil {
			c.finish(err)
			return
		}
	}
}

// reconnect dials with backoff until it has a session, the client is closed,
// or the broker refuses for good.
func (c *Client) reconnect() (*conn, error) {
	backoff := c.opts.MinBackoff
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		// A random delay in [backoff/2, backoff]: clients kicked out
		// together do not all come back at once.
		t.Reset(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-t.C:
		}
		cn, err := c.connect(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return nil, ErrClosed
			}
			if permanent(err) {
				return nil, err
			}
			c.opts.log.Info("smq client: reconnect failed", "url", c.url.Redacted(), "err", err)
			backoff = min(2*backoff, c.opts.MaxBackoff)
			continue
		}
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			cn.shutdown(ErrClosed)
			_ = cn.tr.close()
			return nil, ErrClosed
		}
		c.cn, c.etid = cn, cn.etid
		c.signalLocked()
		c.wg.Add(1)
		c.mu.Unlock()
		go c.restore(cn)
		return cn, nil
	}
}

// restore subscribes and observes again, in a new session, what the app had
// subscribed and observed, then reports Connected.
func (c *Client) restore(cn *conn) {
	defer c.wg.Done()
	c.mu.Lock()
	var topics []string
	for name := range c.subs {
		if name != Self {
			topics = append(topics, name)
		}
	}
	var keys []obsKey
	for k := range c.observers {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	for _, name := range topics {
		if _, err := cn.request(c.ctx, smq.TypeSubscribe, name); err != nil {
			if cn.isDead() {
				return
			}
			c.opts.log.Warn("smq client: re-subscribe failed", "topic", name, "err", err)
		}
	}
	for _, k := range keys {
		if err := c.observeOn(c.ctx, cn, k); err != nil {
			if cn.isDead() {
				return
			}
			c.opts.log.Warn("smq client: re-observe failed", "topic", k.topic, "etid", k.etid, "err", err)
		}
	}
	if cn.isDead() {
		return
	}
	c.postState(StateChange{State: Connected, ETID: cn.etid})
}

// finish ends the client: Err is set, Done and the handler goroutine end.
func (c *Client) finish(err error) {
	c.mu.Lock()
	c.err = err
	c.closing = true
	c.signalLocked()
	c.mu.Unlock()
	c.cancel()
	c.final = StateChange{State: Closed, Err: err}
	close(c.events)
}

// signalLocked wakes everyone waiting for a session.
func (c *Client) signalLocked() {
	close(c.changedCh)
	c.changedCh = make(chan struct{})
}

// current returns the current session, waiting for one while the client
// reconnects.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ch, closing := c.cn, c.changedCh, c.closing
		var err error
		if closing {
			err = c.closedErrLocked()
		}
		c.mu.Unlock()
		if closing {
			return nil, err
		}
		if cn != nil && !cn.isDead() {
			return cn, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("client: not connected: %w", ctx.Err())
		}
	}
}

// post queues a handler call; it blocks while the queue is full, unless the
// client is closed.
func (c *Client) post(fn func()) {
	select {
	case c.events <- event{fn: fn}:
	case <-c.ctx.Done():
	}
}

func (c *Client) postState(sc StateChange) {
	if c.opts.OnState == nil {
		return
	}
	select {
	case c.events <- event{fn: func() { c.opts.OnState(sc) }, state: true}:
	case <-c.ctx.Done():
	}
}

// dispatch runs handlers and state callbacks in order.
func (c *Client) dispatch() {
	defer close(c.dispatchDone)
	for ev := range c.events {
		if c.closed.Load() && !ev.state {
			continue
		}
		c.inHandler.Store(true)
		ev.fn()
		c.inHandler.Store(false)
	}
	if c.opts.OnState != nil {
		c.inHandler.Store(true)
		c.opts.OnState(c.final)
		c.inHandler.Store(false)
	}
}

func (c *Client) received(m *Message) {
	c.mu.Lock()
	s := c.subs[m.Topic]
	c.mu.Unlock()
	if s != nil {
		s.h(m)
	}
}

func (c *Client) changed(k obsKey, id, count uint32) {
	c.mu.Lock()
	o := c.observers[k]
	c.mu.Unlock()
	if o != nil {
		o.fn(id, count)
	}
}

// ETID returns the client's ETID, the ID other clients publish to for
// one-to-one messages. It may change after a reconnect.
func (c *Client) ETID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.etid
}

// Done is closed when the client is finished: after Close, or when the
// connection was lost and is not being re-established.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client finished, nil before Done is closed:
// ErrClosed after Close, a *DisconnectError when the broker said why
// (Reason "shutdown", "reconnect", ...), a *RefusedError when a reconnect
// was refused, or the connection error.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close sends Disconnect, closes the connection and waits until the
// client's goroutines have ended. When called from a handler or state
// callback, or while one is running, it does not wait for that call to
// return. Close is idempotent; it always returns nil.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.mu.Lock()
	already := c.closing
	c.closing = true
	cn := c.cn
	c.mu.Unlock()
	if !already {
		if cn != nil {
			cn.shutdown(ErrClosed)
		}
		c.cancel()
	}
	<-c.done
	if !c.inHandler.Load() {
		<-c.dispatchDone
	}
	return nil
}

var errNilHandler = errors.New("client: nil handler")
