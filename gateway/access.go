package gateway

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/smq"
)

// Topic permissions: a route with an access policy gives each session the
// grants of its identity (access.Policy.For) and checks every client
// message against them before it goes upstream, whatever the upstream:
//
//   - Subscribe, Create, Createsub of a name not granted: answered by the
//     gateway with status 1 and ID 0, never forwarded;
//   - Publish (and PubFrag's last fragment) to an ID the session may not
//     publish to (a topic not granted, or a client it may not address one
//     to one), or with a sub-topic ID it was not granted: not forwarded;
//     the session ends with Disconnect "access denied";
//   - Observe of an ID not granted: answered with Change(id, 0), as the
//     broker answers an unknown ID; Unobserve and Unsubscribe of one:
//     dropped (they could only undo what was never done).
//
// The gateway learns which IDs stand for which names from the broker's
// acks on the session: an ID is granted by the name the broker acked it
// for, so a client can publish only to IDs it got from a Create (or
// Subscribe) of a granted name in this session.

// maxGrantedIDs bounds the topic and sub-topic IDs one session's guard
// holds, requests in flight included: beyond, Subscribe, Create and
// Createsub are denied at the gateway (a real client uses a handful).
const maxGrantedIDs = 4096

// maxSenders bounds the sender ETIDs a session remembers for one-to-one
// replies; beyond, about the least recently heard is forgotten for each
// new one.
const maxSenders = 4096

// denyLogRate is how many access-denied lines per second the gateway
// logs at most; the next line that gets through says how many were not.
const denyLogRate = 10

// serverETID is the ETID of the reference broker's own server-side client.
const serverETID = 1

// guard is a session's permissions and what it has learned of its IDs.
type guard struct {
	grants *access.Grants
	policy string // the policy's name, for the log

	mu sync.Mutex
	// topics are the topic IDs acked to the session, with what it may do
	// with them.
	topics map[uint32]access.Rights
	// subtopics are the sub-topic IDs acked for granted names.
	subtopics map[uint32]struct{}
	// pending counts Subscribe, Create and Createsub forwarded and not
	// acked yet.
	pending int
	// senders are the ETIDs that sent the session a message (one_to_one
	// reply or any), each with the sequence number of its latest message;
	// heard counts the messages.
	senders map[uint32]uint64
	heard   uint64
}

func newGuard(g *access.Grants, policy string) *guard {
	return &guard{grants: g, policy: policy, topics: map[uint32]access.Rights{},
		subtopics: map[uint32]struct{}{}, senders: map[uint32]uint64{}}
}

// permit applies the session's permissions to msg, a client message that
// passed checkFromClient, and reports whether it goes upstream. A denied
// request is answered here; a denied Publish ends the session.
func (s *session) permit(msg []byte) bool {
	gd := s.guard
	switch t := smq.Type(msg[0]); t {
	case smq.TypeSubscribe, smq.TypeCreate, smq.TypeCreatesub:
		name := string(msg[1:])
		var ok bool
		switch t {
		case smq.TypeSubscribe:
			ok = gd.grants.Topic(name)&access.CanSubscribe != 0
		case smq.TypeCreate:
			ok = gd.grants.Topic(name)&(access.CanPublish|access.CanObserve) != 0
		default:
			ok = gd.grants.SubTopic(name)
		}
		why := "not granted"
		gd.mu.Lock()
		if ok && len(gd.topics)+len(gd.subtopics)+gd.pending >= maxGrantedIDs {
			ok, why = false, fmt.Sprintf("the session holds %d topic and sub-topic IDs", maxGrantedIDs)
		}
		if ok {
			gd.pending++
		}
		gd.mu.Unlock()
		if ok {
			return true
		}
		s.denied(t, name, 0, why, "answered status 1")
		var ack smq.Message = smq.Suback{Status: 1, Topic: name}
		switch t {
		case smq.TypeCreate:
			ack = smq.Createack{Status: 1, Topic: name}
		case smq.TypeCreatesub:
			ack = smq.Createsuback{Status: 1, Topic: name}
		}
		if err := s.writeClient(ack); err != nil {
			s.end(ReasonWriteError, "client: "+err.Error())
		}
		return false
	case smq.TypePublish, smq.TypePubFrag:
		tid := smq.ID(msg)
		if tid == 0 { // a PubFrag fragment before the last
			return true
		}
		sub := binary.BigEndian.Uint32(msg[9:])
		verdict, why := s.mayPublish(tid, sub)
		switch verdict {
		case publishOK:
			return true
		case publishDrop:
			s.denied(t, "", tid, why, "dropped")
			return false
		}
		s.denied(t, "", tid, why, "session ended")
		_ = s.up.Flush() // what came before it still goes
		s.end(ReasonAccessDenied, fmt.Sprintf("%v to %#x: %s", t, tid, why))
		return false
	case smq.TypeObserve, smq.TypeUnobserve, smq.TypeUnsubscribe:
		id := smq.ID(msg)
		want := access.CanObserve
		if t == smq.TypeUnsubscribe {
			want = access.CanSubscribe
		}
		gd.mu.Lock()
		ok := gd.topics[id]&want != 0
		if _, known := gd.topics[id]; !known && t != smq.TypeUnsubscribe {
			ok = s.mayAddressLocked(id)
		}
		gd.mu.Unlock()
		if ok {
			return true
		}
		if t != smq.TypeObserve {
			s.denied(t, "", id, "not granted", "dropped")
			return false
		}
		s.denied(t, "", id, "not granted", "answered Change(id, 0)")
		if err := s.writeClient(smq.Change{ID: id}); err != nil {
			s.end(ReasonWriteError, "client: "+err.Error())
		}
		return false
	}
	return true
}

// What mayPublish decides.
type publishVerdict int

const (
	publishOK   publishVerdict = iota
	publishDeny                // the session ends
	publishDrop                // the message is dropped, the session goes on
)

// mayPublish decides a Publish to tid (a topic or a client's ETID) with
// sub-topic ID sub (0 for none), and says why when it is not allowed. For
// a topic it was granted: one lookup, no allocation.
//
// A topic the session knows but may not publish to, a sub-topic it was
// not granted, or (one_to_one "none") an ID that is no granted topic is
// denied. With one_to_one "reply" or "any", an ID the session may not
// address is dropped instead, as the broker drops a message to a client
// that has left: the gateway's memory of senders is bounded, and a
// client that left is no longer one it knows.
func (s *session) mayPublish(tid, sub uint32) (publishVerdict, string) {
	gd := s.guard
	gd.mu.Lock()
	defer gd.mu.Unlock()
	if sub != 0 {
		if _, ok := gd.subtopics[sub]; !ok {
			return publishDeny, fmt.Sprintf("sub-topic %#x not granted", sub)
		}
	}
	if r, known := gd.topics[tid]; known {
		if r&access.CanPublish == 0 {
			return publishDeny, "publish not granted for this topic"
		}
		return publishOK, ""
	}
	if s.mayAddressLocked(tid) {
		return publishOK, ""
	}
	if gd.grants.OneToOne == access.None {
		return publishDeny, "not a topic ID from a granted Create, and one_to_one is none"
	}
	return publishDrop, fmt.Sprintf("not a topic ID from a granted Create, nor a client one_to_one %v allows (now)", gd.grants.OneToOne)
}

// mayAddressLocked reports whether the session may send one-to-one
// messages to (and observe) id as a client's ETID. Caller holds gd.mu.
func (s *session) mayAddressLocked(id uint32) bool {
	gd := s.guard
	switch gd.grants.OneToOne {
	case access.Reply:
		_, ok := gd.senders[id]
		return ok
	case access.Any:
		if _, ok := gd.senders[id]; ok || id == serverETID {
			return true
		}
		return s.g.clients.has(s.route.Upstream.Name(), id)
	}
	return false
}

// learn records what the broker's message to the client tells the guard:
// the IDs of acked names, the senders of messages.
func (s *session) learn(msg []byte) {
	gd := s.guard
	if smq.Check(msg) != nil {
		return // relayed as it came; it names nothing
	}
	switch t := smq.Type(msg[0]); t {
	case smq.TypeSuback, smq.TypeCreateack, smq.TypeCreatesuback:
		status, id := msg[1], binary.BigEndian.Uint32(msg[2:])
		name := string(msg[6:])
		var rights access.Rights
		granted := false
		if t == smq.TypeCreatesuback {
			granted = gd.grants.SubTopic(name)
		} else {
			rights = gd.grants.Topic(name)
			granted = rights != 0
		}
		gd.mu.Lock()
		if gd.pending > 0 {
			gd.pending--
		}
		if status == 0 && id != 0 && granted {
			if t == smq.TypeCreatesuback {
				gd.subtopics[id] = struct{}{}
			} else {
				gd.topics[id] |= rights
			}
		}
		gd.mu.Unlock()
	case smq.TypePublish:
		if gd.grants.OneToOne == access.None {
			return
		}
		ptid := smq.PTID(msg)
		gd.mu.Lock()
		gd.heard++
		if _, ok := gd.senders[ptid]; !ok && len(gd.senders) >= maxSenders {
			gd.forgetSenderLocked()
		}
		gd.senders[ptid] = gd.heard
		gd.mu.Unlock()
	}
}

// evictSample is how many senders forgetSenderLocked looks at.
const evictSample = 16

// forgetSenderLocked forgets the sender heard from longest ago among a
// sample of them (Go's map order is random): nearly the least recently
// heard, at a bounded cost. Caller holds gd.mu.
func (gd *guard) forgetSenderLocked() {
	var oldest uint32
	seen, n := uint64(math.MaxUint64), 0
	for id, at := range gd.senders {
		if at < seen {
			oldest, seen = id, at
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(gd.senders, oldest)
}

// denied counts and logs one denial; the log lines are rate-limited
// gateway-wide.
func (s *session) denied(t smq.Type, name string, id uint32, why, action string) {
	op := opName(t)
	s.g.m.denials.WithLabelValues(s.listener, s.route.Path, op).Inc()
	first := s.deniedCount.Add(1) == 1
	// A session's first denial is always logged, so that no client can
	// hide another's behind its own; the rest within the gateway's rate.
	suppressed, ok := s.g.denyLog.allow(time.Now(), first)
	if !ok {
		return
	}
	attrs := []any{"session", s.id, "listener", s.listener, "route", s.route.Path,
		"permissions", s.guard.policy, "op", op}
	if t == smq.TypeSubscribe || t == smq.TypeCreate || t == smq.TypeCreatesub {
		attrs = append(attrs, "topic", name)
	} else {
		attrs = append(attrs, "id", fmt.Sprintf("%#x", id))
	}
	attrs = append(attrs, "why", why, "action", action, "identity", s.identityName(), "uid", s.uid)
	if suppressed > 0 {
		attrs = append(attrs, "suppressed_before", suppressed)
	}
	s.g.log.Warn("access denied", attrs...)
}

// identityName is the session's verified subject, or "anonymous".
func (s *session) identityName() string {
	if s.identity != nil {
		return s.identity.Subject
	}
	return "anonymous"
}

// opName is the operation label of a denial.
func opName(t smq.Type) string {
	switch t {
	case smq.TypeSubscribe:
		return "subscribe"
	case smq.TypeCreate:
		return "create"
	case smq.TypeCreatesub:
		return "createsub"
	case smq.TypePublish, smq.TypePubFrag:
		return "publish"
	case smq.TypeObserve:
		return "observe"
	case smq.TypeUnobserve:
		return "unobserve"
	case smq.TypeUnsubscribe:
		return "unsubscribe"
	}
	return "other"
}

// deniedOps are the op labels of smqgw_access_denied_total.
var deniedOps = []string{"subscribe", "create", "createsub", "publish", "observe", "unobserve", "unsubscribe"}

// logLimiter lets through at most perSecond lines per second and counts
// the others.
type logLimiter struct {
	mu         sync.Mutex
	perSecond  int
	window     time.Time
	n          int
	suppressed int
}

// allow reports whether a line may be logged now (always, with force),
// and how many were suppressed since the last one that was.
func (l *logLimiter) allow(now time.Time, force bool) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= l.perSecond && !force {
		l.suppressed++
		return 0, false
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return suppressed, true
}

// clientSet holds the ETIDs of the gateway's connected sessions by
// upstream name: the clients one_to_one "any" may address.
type clientSet struct {
	mu sync.Mutex
	m  map[string]map[uint32]int // upstream → ETID → sessions holding it
}

func (c *clientSet) add(upstream string, etid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[uint32]int{}
	}
	if c.m[upstream] == nil {
		c.m[upstream] = map[uint32]int{}
	}
	c.m[upstream][etid]++
}

func (c *clientSet) remove(upstream string, etid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := c.m[upstream]
	if ids == nil {
		return
	}
	if ids[etid]--; ids[etid] <= 0 {
		delete(ids, etid)
	}
}

func (c *clientSet) has(upstream string, etid uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[upstream][etid] > 0
}
