package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// closeGrace is how long Close waits for the broker to close its side after
// our Disconnect.
const closeGrace = 2 * time.Second

// conn is one session with the broker: from Connack 0x00 to the end of the
// connection. Topic and sub-topic IDs are cached per conn, since a new
// session (perhaps with a restarted broker) may hand out new ones.
type conn struct {
	c     *Client
	tr    *transport
	etid  uint32
	start time.Time

	// wsem is the write token: one message write at a time, and waiting for
	// it respects a context.
	wsem chan struct{}

	mu         sync.Mutex
	topics     map[string]uint32 // topic name -> TID, from Suback and Createack
	subscribed map[uint32]string // TID -> name, topics this session subscribed
	subtopics  map[string]uint32 // sub-topic name -> ID
	subNames   map[uint32]string
	observed   map[uint32]obsKey // observed TID or ETID -> what the app asked for
	calls      map[callKey]*call // requests waiting for an ack
	pings      []chan struct{}   // Pings waiting for a Pong, oldest first

	lastRecv atomic.Int64 // time since start of the last message received

	endOnce sync.Once
	err     error         // why the session ended; set before dead is closed
	dead    chan struct{} // closed when the session ended (or began to end)
	kaDone  chan struct{} // closed when the keepalive goroutine has returned
}

type callKey struct {
	kind smq.Type // TypeSubscribe, TypeCreate or TypeCreatesub
	name string
}

// call is one request in flight; every caller asking for the same name
// while it is in flight waits for the same ack.
type call struct {
	done chan struct{}
	id   uint32
	err  error
}

// obsKey is what the app observes: a topic by name, or a peer by ETID.
type obsKey struct {
	topic string
	etid  uint32 // non-zero: a peer
}

func newConn(c *Client, tr *transport, etid uint32) *conn {
	return &conn{
		c: c, tr: tr, etid: etid, start: time.Now(),
		wsem:       make(chan struct{}, 1),
		topics:     make(map[string]uint32),
		subscribed: make(map[uint32]string),
		subtopics:  make(map[string]uint32),
		subNames:   make(map[uint32]string),
		observed:   make(map[uint32]obsKey),
		calls:      make(map[callKey]*call),
		dead:       make(chan struct{}),
		kaDone:     make(chan struct{}),
	}
}

// end records why the session ends (the first reason wins) and, unless
// graceful, closes the connection at once, which ends the reader.
func (cn *conn) end(err error, graceful bool) {
	cn.endOnce.Do(func() {
		cn.err = err
		close(cn.dead)
	})
	if !graceful {
		_ = cn.tr.close()
	}
}

func (cn *conn) isDead() bool {
	select {
	case <-cn.dead:
		return true
	default:
		return false
	}
}

// serve runs the session on the calling goroutine: it reads until the
// connection ends, and returns why it ended once the keepalive goroutine has
// returned too.
func (cn *conn) serve() error {
	go cn.keepalive()
	for {
		msg, err := cn.tr.read()
		if err != nil {
			cn.end(fmt.Errorf("client: connection lost: %w", err), false)
			break
		}
		cn.lastRecv.Store(int64(time.Since(cn.start)))
		if cn.isDead() {
			continue // closing: drain until the broker closes
		}
		if err := cn.handle(msg); err != nil {
			cn.end(err, false)
			break
		}
	}
	_ = cn.tr.close()
	<-cn.kaDone
	return cn.err
}

// handle processes one message from the broker.
func (cn *conn) handle(msg []byte) error {
	m, err := smq.Decode(msg)
	if err != nil {
		return fmt.Errorf("client: bad message from broker: %w", err)
	}
	switch m := m.(type) {
	case *smq.Publish:
		cn.deliver(m)
	case smq.Suback:
		cn.acked(smq.TypeSubscribe, m.Status, m.ID, m.Topic)
	case smq.Createack:
		cn.acked(smq.TypeCreate, m.Status, m.ID, m.Topic)
	case smq.Createsuback:
		cn.acked(smq.TypeCreatesub, m.Status, m.ID, m.Topic)
	case smq.Change:
		cn.mu.Lock()
		key, ok := cn.observed[m.ID]
		cn.mu.Unlock()
		if ok {
			cn.c.post(func() { cn.c.changed(key, m.ID, m.Count) })
		}
	case smq.Ping:
		return cn.write(context.Background(), smq.Pong{})
	case smq.Pong:
		cn.mu.Lock()
		var ch chan struct{}
		if len(cn.pings) > 0 {
			ch = cn.pings[0]
			cn.pings[0] = nil
			cn.pings = cn.pings[1:]
		}
		cn.mu.Unlock()
		if ch != nil {
			close(ch)
		}
	case smq.Disconnect:
		return &DisconnectError{Reason: m.Reason}
	default:
		cn.c.opts.log.Debug("smq client: ignoring unexpected message", "type", m.Type())
	}
	return nil
}

// deliver hands a Publish to the handler of its topic, or of Self when it is
// addressed to our ETID.
func (cn *conn) deliver(p *smq.Publish) {
	cn.mu.Lock()
	name, ok := cn.subscribed[p.TID]
	if p.TID == cn.etid {
		name, ok = Self, true
	}
	sub := cn.subNames[p.SubTID]
	cn.mu.Unlock()
	if !ok {
		return
	}
	msg := &Message{Topic: name, TID: p.TID, PTID: p.PTID, SubTID: p.SubTID, SubTopic: sub,
		Payload: bytes.Clone(p.Payload)}
	cn.c.post(func() { cn.c.received(msg) })
}

// acked completes the request an ack answers and caches the ID.
func (cn *conn) acked(kind smq.Type, status smq.AckStatus, id uint32, name string) {
	ok := status == smq.AckOK && id != 0
	key := callKey{kind, name}
	cn.mu.Lock()
	if ok {
		switch kind {
		case smq.TypeSubscribe:
			cn.topics[name] = id
			cn.subscribed[id] = name
		case smq.TypeCreate:
			cn.topics[name] = id
		case smq.TypeCreatesub:
			cn.subtopics[name] = id
			cn.subNames[id] = name
		}
	}
	cl := cn.calls[key]
	delete(cn.calls, key)
	cn.mu.Unlock()
	if cl == nil {
		return
	}
	if ok {
		cl.id = id
	} else {
		cl.err = fmt.Errorf("%w: %s %q", ErrDenied, verb(kind), name)
	}
	close(cl.done)
}

func verb(kind smq.Type) string {
	switch kind {
	case smq.TypeSubscribe:
		return "subscribe to"
	case smq.TypeCreate:
		return "create topic"
	}
	return "create sub-topic"
}

// cachedLocked returns the ID of a request already answered in this session.
func (cn *conn) cachedLocked(kind smq.Type, name string) (uint32, bool) {
	switch kind {
	case smq.TypeSubscribe:
		tid, ok := cn.topics[name]
		if ok {
			_, ok = cn.subscribed[tid]
		}
		return tid, ok
	case smq.TypeCreate:
		tid, ok := cn.topics[name]
		return tid, ok
	default:
		id, ok := cn.subtopics[name]
		return id, ok
	}
}

// request sends Subscribe, Create or Createsub for name, unless this session
// already knows the answer or has the same request in flight, and waits for
// the ack.
func (cn *conn) request(ctx context.Context, kind smq.Type, name string) (uint32, error) {
	key := callKey{kind, name}
	cn.mu.Lock()
	if id, ok := cn.cachedLocked(kind, name); ok {
		cn.mu.Unlock()
		return id, nil
	}
	cl, inFlight := cn.calls[key]
	if !inFlight {
		cl = &call{done: make(chan struct{})}
		cn.calls[key] = cl
	}
	cn.mu.Unlock()
	if !inFlight {
		var m smq.Message
		switch kind {
		case smq.TypeSubscribe:
			m = smq.Subscribe{Topic: name}
		case smq.TypeCreate:
			m = smq.Create{Topic: name}
		default:
			m = smq.Createsub{Topic: name}
		}
		if err := cn.write(ctx, m); err != nil {
			cn.mu.Lock()
			if cn.calls[key] == cl {
				delete(cn.calls, key)
				cl.err = err
				close(cl.done)
			}
			cn.mu.Unlock()
			return 0, err
		}
	}
	select {
	case <-cl.done:
		return cl.id, cl.err
	case <-cn.dead:
		return 0, cn.err
	case <-ctx.Done():
		return 0, fmt.Errorf("client: %s %q: %w", verb(kind), name, ctx.Err())
	}
}

// acquire takes the write token.
func (cn *conn) acquire(ctx context.Context) error {
	select {
	case cn.wsem <- struct{}{}:
	case <-cn.dead:
		return cn.err
	case <-ctx.Done():
		return fmt.Errorf("client: write: %w", ctx.Err())
	}
	if cn.isDead() {
		<-cn.wsem
		return cn.err
	}
	if err := ctx.Err(); err != nil {
		<-cn.wsem
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}

func (cn *conn) release() { <-cn.wsem }

// write sends one message. ctx bounds the wait for the write token. An
// error other than a message too big for the transport (refused before
// anything is written) ends the session: a partial frame cannot be taken
// back.
func (cn *conn) write(ctx context.Context, m smq.Message) error {
	if err := cn.acquire(ctx); err != nil {
		return err
	}
	defer cn.release()
	return cn.writeLocked(m)
}

// writeAll writes messages together, flushing once.
func (cn *conn) writeAll(ctx context.Context, ms []smq.Message) error {
	if err := cn.acquire(ctx); err != nil {
		return err
	}
	defer cn.release()
	err := cn.tr.writeAll(ms, time.Now().Add(cn.c.opts.WriteTimeout))
	if err == nil {
		return nil
	}
	if errors.Is(err, smq.ErrTooBig) {
		return fmt.Errorf("client: %w", err)
	}
	cn.end(fmt.Errorf("client: connection lost: %w", err), false)
	return cn.err
}

// writeLocked writes m under the write token. Contexts bound only the
// waiting, not the write itself: an interrupted write would leave a partial
// frame and so end the session. WriteTimeout bounds a blocked write.
func (cn *conn) writeLocked(m smq.Message) error {
	err := cn.tr.write(m, time.Now().Add(cn.c.opts.WriteTimeout))
	if err == nil {
		return nil
	}
	if errors.Is(err, smq.ErrTooBig) {
		return fmt.Errorf("client: %w", err) // refused before anything was written
	}
	cn.end(fmt.Errorf("client: connection lost: %w", err), false)
	return cn.err
}

// ping sends a Ping and waits for its Pong.
func (cn *conn) ping(ctx context.Context) (time.Duration, error) {
	ch := make(chan struct{})
	if err := cn.acquire(ctx); err != nil {
		return 0, err
	}
	cn.mu.Lock()
	cn.pings = append(cn.pings, ch)
	cn.mu.Unlock()
	start := time.Now()
	err := cn.writeLocked(smq.Ping{})
	cn.release()
	if err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-cn.dead:
		return 0, cn.err
	case <-ctx.Done():
		return 0, fmt.Errorf("client: ping: %w", ctx.Err())
	}
}

// keepalive pings a silent broker and ends the session when it does not
// answer.
func (cn *conn) keepalive() {
	defer close(cn.kaDone)
	idle, wait := cn.c.opts.PingIdle, cn.c.opts.PongTimeout
	if idle < 0 {
		<-cn.dead
		return
	}
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-cn.dead:
			return
		case <-t.C:
		}
		silent := time.Since(cn.start) - time.Duration(cn.lastRecv.Load())
		if silent < idle {
			t.Reset(idle - silent)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, err := cn.ping(ctx)
		cancel()
		if err != nil {
			cn.end(fmt.Errorf("%w within %v", ErrNoPong, wait), false)
			return
		}
		t.Reset(idle)
	}
}

// shutdown ends the session the polite way: Disconnect, half-close, and a
// short wait for the broker to close, so our last bytes are not lost to a
// reset.
func (cn *conn) shutdown(err error) {
	cn.end(err, true)
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	select {
	case cn.wsem <- struct{}{}:
	case <-ctx.Done():
		_ = cn.tr.close()
		return
	}
	defer cn.release()
	deadline := time.Now().Add(closeGrace)
	if cn.tr.write(smq.Disconnect{}, deadline) != nil || cn.tr.closeWrite(deadline) != nil {
		_ = cn.tr.close()
		return
	}
	_ = cn.tr.setReadDeadline(deadline)
}
