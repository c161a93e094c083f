package broker

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// Disconnect reasons the broker sends.
const (
	reasonShutdown     = "shutdown"
	reasonReconnect    = "reconnect"
	reasonCorruptFrame = "corrupt frame"
	reasonSlowConsumer = "slow consumer"
)

// finalWriteTimeout bounds the write of a last Disconnect to a client that is
// being dropped.
const finalWriteTimeout = 2 * time.Second

// session is one client connection.
type session struct {
	b    *Broker
	tr   wire.Conn
	peer Peer

	etid uint32
	uid  string

	// subs, observing, held, heldSubs and dropped are guarded by the
	// registry's lock. held and heldSubs are the topics and sub-topics the
	// session keeps alive: those it created, subscribed to or observed,
	// until it ends (at most MaxTopicsPerSession together).
	subs      map[uint32]struct{}
	observing map[uint32]struct{}
	held      map[uint32]struct{} // TIDs
	heldSubs  map[uint32]struct{} // sub-topic IDs
	dropped   bool                // taken over or gone: must not subscribe or observe again

	q           outQueue
	writerDone  chan struct{}
	abortOnce   sync.Once
	closeReason atomic.Pointer[string] // why the session ended, first one wins

	frag []byte // PubFrag reassembly buffer

	// In a cluster: when the session registered (takeovers across nodes go
	// to the newest), where its Publish goes on to, and a buffer for it.
	since int64
	fwd   forward
	cbuf  []byte

	// ending is set once the last message is queued: whatever the client
	// sends after that is read and ignored until it closes or the linger
	// deadline passes.
	ending atomic.Bool
}

// setReason records why the session ends, unless a reason is already set.
func (s *session) setReason(r string) { s.closeReason.CompareAndSwap(nil, &r) }

// errKicked ends a session whose last message, a Disconnect, is queued.
var errKicked = errors.New("kicked")

// errProtocol ends a session silently, like the reference broker does on
// malformed input.
var errProtocol = errors.New("protocol error")

// ServeConn serves one client on conn, an already bootstrapped raw
// connection: Init is sent at once. It returns when the session has ended;
// conn is closed by then. peer.IP should be set; it is sent in Init.
func (b *Broker) ServeConn(conn net.Conn, peer Peer) error {
	if peer.IP == "" {
		// Clients need an IP in Init (the C client at least 3 characters).
		peer.IP = smq.HostIP(conn.RemoteAddr().String())
	}
	return b.serve(wire.NewRaw(conn, nil), peer)
}

func (b *Broker) serve(tr wire.Conn, peer Peer) error {
	s := &session{
		b: b, tr: tr, peer: peer,
		subs:       make(map[uint32]struct{}),
		observing:  make(map[uint32]struct{}),
		held:       make(map[uint32]struct{}),
		heldSubs:   make(map[uint32]struct{}),
		writerDone: make(chan struct{}),
	}
	lim := b.limits()
	s.q.init(lim.QueueBytes, lim.QueueMessages, &b.queued)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = tr.Close()
		return ErrClosed
	}
	b.sessions[s] = struct{}{}
	b.sessWG.Add(1)
	b.mu.Unlock()
	b.st.sessions.Add(1)
	defer func() {
		b.st.sessions.Add(-1)
		b.mu.Lock()
		delete(b.sessions, s)
		b.mu.Unlock()
		b.sessWG.Done()
	}()

	go s.writeLoop()
	err := s.run()
	if b.cl == nil {
		b.reg.unregister(s, nil)
	} else if note := (dropNote{}); b.reg.unregister(s, &note) {
		b.cl.release(&note)
	}
	if errors.Is(err, errProtocol) {
		b.st.protocolErrors.Add(1)
	}
	// Let the writer send what is queued (a Connack refusal, a Disconnect),
	// then close.
	s.end(nil, false, websocket.CloseNormalClosure)
	<-s.writerDone
	// Linger: read until the client closes or the deadline the writer set
	// passes, so a close with unread input cannot reset the connection
	// before the client has read our last message.
	for {
		if _, err := tr.Read(); err != nil {
			break
		}
	}
	_ = tr.Close()
	b.logEnd(s, err)
	return nil
}

func (b *Broker) logEnd(s *session, err error) {
	if b.cfg.Logger == nil {
		return
	}
	reason := ""
	if r := s.closeReason.Load(); r != nil {
		reason = *r
	} else {
		switch {
		case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
			websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
			reason = "closed"
		default:
			reason = err.Error()
		}
	}
	b.cfg.Logger.Info("smq session ended", "ip", s.peer.IP, "uid", s.uid, "etid", s.etid,
		"websocket", s.peer.WebSocket, "reason", reason)
}

// send queues msg for the client; it reports whether it was queued. A client
// whose queue overflows is disconnected as a slow consumer; a message that
// would take the broker past its budget (MaxQueuedBytes) first disconnects
// the clients that hold the most.
func (s *session) send(msg []byte) bool {
	if !s.fits(msg) {
		return false
	}
	s.b.reserve(int64(len(msg)))
	return s.queue(msg)
}

// fits reports whether the client can take msg: a raw client takes no
// message larger than a raw frame holds. It counts the drop if not.
func (s *session) fits(msg []byte) bool {
	if len(msg) > smq.MaxRawMessage && !s.tr.WebSocket() {
		s.b.st.droppedTooBig.Add(1)
		return false
	}
	return true
}

// queue queues msg, whose bytes the caller has reserved in the budget, and
// reports whether it did; if not, the bytes are given back.
func (s *session) queue(msg []byte) bool {
	switch s.q.push(msg) {
	case pushed:
		return true
	case overflowBytes, overflowMessages:
		s.b.queued.Add(-int64(len(msg)))
		s.b.st.droppedSlow.Add(1)
		s.slow(&s.b.st.slowQueue)
	default:
		s.b.queued.Add(-int64(len(msg)))
	}
	return false
}

// slow disconnects the client as a slow consumer: what is queued to it is
// dropped, and it gets Disconnect "slow consumer". counter counts the
// disconnect, by the limit that caused it.
func (s *session) slow(counter *atomic.Uint64) {
	s.setReason(reasonSlowConsumer)
	ok, dropped := s.q.finish(smq.Disconnect{Reason: reasonSlowConsumer}.Append(nil), true, websocket.ClosePolicyViolation)
	s.b.st.droppedSlow.Add(uint64(dropped))
	if !ok {
		return
	}
	s.ending.Store(true)
	counter.Add(1)
	// Cut short the write the client is not reading.
	_ = s.tr.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
}

// end queues the session's last message (nil for none) and marks it ending;
// with discard, what is still queued is dropped. It reports false if the
// session was already ending.
func (s *session) end(last []byte, discard bool, wsCode int) bool {
	if ok, _ := s.q.finish(last, discard, wsCode); !ok {
		return false
	}
	s.ending.Store(true)
	return true
}

// kick sends Disconnect with reason after what is already queued, then ends
// the session.
func (s *session) kick(reason string) {
	code := websocket.CloseNormalClosure
	if reason == reasonShutdown {
		code = websocket.CloseGoingAway
	}
	if s.end(smq.Disconnect{Reason: reason}.Append(nil), false, code) {
		_ = s.tr.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
	}
}

// abort closes the connection at once.
func (s *session) abort() {
	s.abortOnce.Do(func() { _ = s.tr.Close() })
}

// writeLoop writes queued messages in batches until the queue is final and
// empty. Then it closes the sending side and gives the reader a deadline to
// see the client close; on a write error it closes the connection, which
// ends the reader at once.
func (s *session) writeLoop() {
	defer close(s.writerDone)
	defer s.q.close() // what is left is never written
	wt := s.b.cfg.writeTimeout()
	for range s.q.wake {
		batch, final := s.q.take()
		deadline := time.Now().Add(wt)
		if final {
			deadline = time.Now().Add(finalWriteTimeout)
		}
		if len(batch) > 0 {
			if err := writeBatch(s.tr, batch, deadline); err != nil {
				s.abort()
				return
			}
			s.q.written()
			clear(batch) // written: an idle client keeps none of it
		}
		if final {
			if err := s.tr.CloseWrite(s.q.closeCode(), "", deadline); err != nil {
				s.abort()
				return
			}
			_ = s.tr.SetReadDeadline(deadline)
			return
		}
	}
}

// writeBatch writes msgs in order and flushes them, under one deadline.
func writeBatch(c wire.Conn, msgs [][]byte, deadline time.Time) error {
	if err := c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	for _, m := range msgs {
		if err := c.Write(m); err != nil {
			return err
		}
	}
	return c.Flush()
}

// reply queues a message built by the session itself.
func (s *session) reply(m smq.Message) {
	s.send(m.Append(nil))
}

// refuse answers Connect with a refusing Connack and ends the session.
func (s *session) refuse(code smq.ConnackCode, reason string) error {
	s.b.st.refused.Add(1)
	s.reply(smq.Connack{Code: code, Reason: reason})
	s.setReason(fmt.Sprintf("refused %v: %s", code, reason))
	return nil
}

func (s *session) run() error {
	seed := rand.Uint32()
	s.reply(smq.Init{Version: 1, Seed: seed, IP: s.peer.IP})

	_ = s.tr.SetReadDeadline(time.Now().Add(s.b.cfg.connectTimeout()))
	msg, err := s.tr.Read()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return s.refuse(smq.CodeServerUnavailable, "no Connect received in time")
		}
		return err
	}
	_ = s.tr.SetReadDeadline(time.Time{})
	if s.ending.Load() {
		return nil // shut down while waiting for Connect
	}
	if len(msg) == 0 || smq.Type(msg[0]) != smq.TypeConnect {
		return s.refuse(smq.CodeBadVersion, "expected Connect")
	}
	m, err := smq.Decode(msg)
	if err != nil {
		return s.refuse(smq.CodeBadVersion, err.Error())
	}
	c := m.(smq.Connect)
	if len(c.UID) <= 5 {
		return s.refuse(smq.CodeBadVersion, "uid must be longer than 5 bytes")
	}
	if auth := s.b.cfg.Authenticate; auth != nil {
		if code, reason := auth(&ConnectRequest{Peer: s.peer, Seed: seed, Connect: c}); code != smq.CodeAccepted {
			return s.refuse(code, reason)
		}
	}
	s.uid = c.UID
	if cl := s.b.cl; cl == nil {
		if old := s.b.reg.register(s, nil); old != nil {
			s.tookOver(old)
		}
	} else {
		cl.prepare(s)
		s.since = time.Now().UnixNano()
		var note dropNote
		old := s.b.reg.register(s, &note)
		cl.held(s)
		if old != nil {
			s.tookOver(old)
			cl.release(&note)
		}
	}
	s.b.st.accepted.Add(1)
	s.reply(smq.Connack{Code: smq.CodeAccepted, ETID: s.etid})

	for {
		msg, err := s.tr.Read()
		if err != nil {
			var me *smq.MessageError
			if errors.As(err, &me) {
				return fmt.Errorf("%w: %v", errProtocol, err)
			}
			return err
		}
		if s.ending.Load() {
			continue // the last message is queued; wait for the close
		}
		if err := s.handle(msg); err != nil {
			return err
		}
	}
}

// tookOver kicks old, which had the session's UID.
func (s *session) tookOver(old *session) {
	s.b.st.takeovers.Add(1)
	old.setReason("taken over by a newer connection with the same uid")
	old.kick(reasonReconnect)
}

func (s *session) client() *Client {
	return &Client{ETID: s.etid, UID: s.uid, Peer: s.peer}
}

// handle processes one message from a connected client.
func (s *session) handle(msg []byte) error {
	if err := smq.Check(msg); err != nil {
		return fmt.Errorf("%w: %v", errProtocol, err)
	}
	reg := &s.b.reg
	cfg := &s.b.cfg
	switch t := smq.Type(msg[0]); t {
	case smq.TypePublish:
		return s.publish(msg)
	case smq.TypePubFrag:
		return s.pubFrag(msg)
	case smq.TypeSubscribe, smq.TypeCreate:
		name := string(msg[1:])
		ack := smq.Suback{Status: smq.AckDenied, Topic: name}
		lim := s.b.limits()
		if s.nameFits(name, lim) && (cfg.PermitTopic == nil || cfg.PermitTopic(s.client(), t, name)) {
			var err error
			if t == smq.TypeSubscribe {
				if cl := s.b.cl; cl != nil {
					// Counted in the cluster under its lock, so that a
					// takeover dropping s cannot release it first.
					cl.want(name, func() (added bool) {
						ack.ID, added, err = reg.subscribe(s, name, lim.MaxTopicsPerSession)
						return added
					})
				} else {
					ack.ID, _, err = reg.subscribe(s, name, lim.MaxTopicsPerSession)
				}
			} else {
				ack.ID, err = reg.create(s, name, lim.MaxTopicsPerSession)
			}
			s.granted(&ack.Status, err)
		}
		if t == smq.TypeSubscribe {
			s.reply(ack)
		} else {
			s.reply(smq.Createack(ack))
		}
	case smq.TypeCreatesub:
		name := string(msg[1:])
		ack := smq.Createsuback{Status: smq.AckDenied, Topic: name}
		lim := s.b.limits()
		if s.nameFits(name, lim) && (cfg.PermitSubTopic == nil || cfg.PermitSubTopic(s.client(), name)) {
			var err error
			ack.ID, err = reg.subTopic(s, name, lim.MaxTopicsPerSession)
			s.granted(&ack.Status, err)
		}
		s.reply(ack)
	case smq.TypeUnsubscribe:
		if name, ok := reg.unsubscribe(s, smq.ID(msg)); ok && s.b.cl != nil {
			s.b.cl.unwant(name)
		}
	case smq.TypeObserve:
		s.granted(nil, s.observe(smq.ID(msg)))
	case smq.TypeUnobserve:
		s.unobserve(smq.ID(msg))
	case smq.TypePing:
		s.reply(smq.Pong{})
	case smq.TypePong:
	case smq.TypeDisconnect:
		s.setReason("client disconnected")
		return io.EOF
	default:
		// Connect again, or a message only a broker sends.
		return fmt.Errorf("%w: unexpected %v from client", errProtocol, t)
	}
	return nil
}

// nameFits reports whether a topic or sub-topic name is within
// MaxTopicName, and counts a refusal if not.
func (s *session) nameFits(name string, lim *limits.Broker) bool {
	if len(name) <= lim.MaxTopicName {
		return true
	}
	s.b.st.refusedTopicName.Add(1)
	return false
}

// granted sets status (if not nil) from the registry's answer and counts a
// refusal by MaxTopicsPerSession.
func (s *session) granted(status *smq.AckStatus, err error) {
	if err == errTooMany {
		s.b.st.refusedTopics.Add(1)
	}
	if status != nil && err == nil {
		*status = smq.AckOK
	}
}

// publish checks and delivers one Publish; msg is only valid during the call.
func (s *session) publish(msg []byte) error {
	if smq.PTID(msg) != s.etid {
		s.setReason(fmt.Sprintf("publish with ptid %d, not its etid %d", smq.PTID(msg), s.etid))
		s.kick(reasonCorruptFrame)
		return errKicked
	}
	if hook := s.b.cfg.OnPublish; hook != nil {
		p, _ := smq.DecodePublish(msg)
		if !hook(s.client(), &p) {
			return nil
		}
	}
	s.b.st.published.Add(1)
	var fwd *forward
	if s.b.cl != nil {
		s.fwd = forward{}
		fwd = &s.fwd
	}
	// Subscribers share one copy; msg itself belongs to the reader.
	n, to := s.b.deliver(smq.ID(msg), append([]byte(nil), msg...), fwd)
	s.b.st.delivered.Add(uint64(n))
	if fwd != nil && (fwd.subject != "" || (to == toNobody && smq.ID(msg)&clientBit != 0)) {
		s.b.cl.forward(s, fwd, msg) // the other nodes may have subscribers, or the client
		return nil
	}
	switch to {
	case toNobody:
		s.b.st.droppedUnknown.Add(1)
	case toNoSubscribers:
		s.b.st.droppedNoSubscribers.Add(1)
	}
	return nil
}

// observe makes the session an observer of id: a topic, a client here
// or, in a cluster, a client of another node.
func (s *session) observe(id uint32) error {
	reg, cl, limit := &s.b.reg, s.b.cl, s.b.limits().MaxTopicsPerSession
	if cl == nil {
		_, err := reg.observe(s, id, limit, false)
		return err
	}
	if id == s.etid {
		return nil
	}
	if name, ok := reg.topicName(id); ok {
		cl.watch(name)
		added, err := reg.observe(s, id, limit, false)
		if !added {
			cl.unwatch(name)
		}
		return err
	}
	if isID, _ := reg.local(id, ""); isID || id&clientBit == 0 || !cl.watchClient(id) {
		if !isID && id&clientBit != 0 {
			cl.unwatchClient(id) // not there
		}
		_, err := reg.observe(s, id, limit, false)
		return err
	}
	there, added, err := cl.observeClient(id, func() (bool, error) { return reg.observe(s, id, limit, true) })
	if !there { // it went since the probe: as if never there
		_, err = reg.observe(s, id, limit, false)
	}
	if !added {
		cl.unwatchClient(id)
	}
	return err
}

// unobserve stops the session observing id.
func (s *session) unobserve(id uint32) {
	name, was := s.b.reg.unobserve(s, id)
	if cl := s.b.cl; cl != nil && was {
		if name != "" {
			cl.unwatch(name)
		} else if id&clientBit != 0 {
			cl.unwatchClient(id)
		}
	}
}

// pubFrag reassembles PubFrag fragments; the last (non-zero tid) is
// delivered as one Publish with its header.
func (s *session) pubFrag(msg []byte) error {
	if s.tr.WebSocket() {
		return fmt.Errorf("%w: PubFrag over WebSocket", errProtocol)
	}
	payload := msg[1+smq.PublishHeaderLen:]
	acc := len(payload)
	if s.frag != nil {
		acc += len(s.frag) - 1 - smq.PublishHeaderLen
	}
	if acc > smq.MaxPayload {
		s.frag = nil
		return fmt.Errorf("%w: PubFrag reassembly over %d bytes", errProtocol, smq.MaxPayload)
	}
	tid := smq.ID(msg)
	if tid == 0 {
		if s.frag == nil {
			s.frag = make([]byte, 1+smq.PublishHeaderLen, 4096)
		}
		s.frag = append(s.frag, payload...)
		return nil
	}
	if s.frag == nil {
		s.frag = make([]byte, 1+smq.PublishHeaderLen, 1+smq.PublishHeaderLen+len(payload))
	}
	whole := append(s.frag, payload...)
	s.frag = nil
	if len(whole) > smq.MaxPayload {
		return nil // dropped silently, like the reference broker
	}
	whole[0] = byte(smq.TypePublish)
	copy(whole[1:1+smq.PublishHeaderLen], msg[1:1+smq.PublishHeaderLen])
	return s.publish(whole)
}
