package broker

import (
	"errors"
	"math/rand/v2"
	"sync"

	"github.com/smqgw/smqgw/smq"
)

// serverETID is the ETID of the reference broker's own server-side client;
// it is never handed out.
const serverETID = 1

// topic is a named topic and its subscribers.
type topic struct {
	name string
	tid  uint32
	subs map[*session]struct{}
	refs int // sessions that hold it (session.held)

	// In a cluster: the NATS subject of its messages, and the subscribers
	// the other nodes have, as far as this node keeps count (only while a
	// session here observes it).
	subject string
	remote  uint32
}

// subTopic is a named sub-topic.
type subTopic struct {
	name string
	id   uint32
	refs int // sessions that hold it (session.heldSubs)
}

// registry holds the broker's shared state: topics and clients share one ID
// table (TIDs and ETIDs), sub-topics have their own. Publishing takes the read
// lock; everything else the write lock.
//
// A topic or sub-topic lives while a session holds it: the sessions that
// created, subscribed to or observed it, until they end. Subscribers and
// observers are sessions that hold it, so a topic nobody holds has neither,
// and is freed; a later request for its name makes it anew, with a new ID.
type registry struct {
	mu            sync.RWMutex
	topics        map[string]*topic
	byID          map[uint32]*topic   // TID -> topic
	clients       map[uint32]*session // ETID -> session
	byUID         map[string]*session // UID -> session
	observers     map[uint32]map[*session]struct{}
	subNames      map[string]*subTopic
	subIDs        map[uint32]*subTopic
	subscriptions int

	// split is set in a cluster: client ETIDs have the top bit set, topic
	// IDs have it clear, so that an ID no topic here has may be a client
	// on another node. subjects makes a topic's NATS subject.
	split    bool
	subjects func(name string) string

	// The most entries the topic and sub-topic tables had since they were
	// last made: they are made anew, smaller, once most are freed, as a Go
	// map never gives its memory back.
	topicsPeak, subsPeak int
}

// Answers of the registry to a request it does not grant.
var (
	errTooMany = errors.New("broker: the session holds its MaxTopicsPerSession topics")
	errGone    = errors.New("broker: the session has been dropped")
)

func (r *registry) init() {
	r.topics = make(map[string]*topic)
	r.byID = make(map[uint32]*topic)
	r.clients = make(map[uint32]*session)
	r.byUID = make(map[string]*session)
	r.observers = make(map[uint32]map[*session]struct{})
	r.subNames = make(map[string]*subTopic)
	r.subIDs = make(map[uint32]*subTopic)
}

// counts returns the numbers of topics, sub-topics and subscriptions.
func (r *registry) counts() (topics, subTopics, subscriptions int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.topics), len(r.subNames), r.subscriptions
}

// clientBit is set in every client ETID, and in no topic ID, of a cluster
// node (registry.split).
const clientBit = 1 << 31

// newID returns a random ID unused in the TID/ETID table, for a client or a
// topic. Caller holds mu.
func (r *registry) newID(client bool) uint32 {
	for {
		id := rand.Uint32()
		if r.split {
			if id &^= clientBit; client {
				id |= clientBit
			}
		}
		if id == 0 || id == serverETID {
			continue
		}
		if _, ok := r.byID[id]; ok {
			continue
		}
		if _, ok := r.clients[id]; ok {
			continue
		}
		return id
	}
}

// holdTopic returns the named topic, creating it, and makes s hold it. It
// refuses with errTooMany if s would hold more than limit topics and
// sub-topics, and errGone if s has been dropped. Caller holds mu.
func (r *registry) holdTopic(s *session, name string, limit int) (*topic, error) {
	if s.dropped {
		return nil, errGone
	}
	t := r.topics[name]
	if t != nil {
		if _, ok := s.held[t.tid]; ok {
			return t, nil
		}
	}
	if len(s.held)+len(s.heldSubs) >= limit {
		return nil, errTooMany
	}
	if t == nil {
		t = &topic{name: name, tid: r.newID(false), subs: make(map[*session]struct{})}
		if r.subjects != nil {
			t.subject = r.subjects(name)
		}
		r.topics[name] = t
		r.byID[t.tid] = t
		r.topicsPeak = max(r.topicsPeak, len(r.topics))
	}
	t.refs++
	s.held[t.tid] = struct{}{}
	return t, nil
}

// subTopic returns the ID of the named sub-topic, creating it, and makes s
// hold it; it refuses as holdTopic does.
func (r *registry) subTopic(s *session, name string, limit int) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.dropped {
		return 0, errGone
	}
	st := r.subNames[name]
	if st != nil {
		if _, ok := s.heldSubs[st.id]; ok {
			return st.id, nil
		}
	}
	if len(s.held)+len(s.heldSubs) >= limit {
		return 0, errTooMany
	}
	if st == nil {
		st = &subTopic{name: name}
		for st.id == 0 {
			if id := rand.Uint32(); r.subIDs[id] == nil {
				st.id = id
			}
		}
		r.subNames[name] = st
		r.subIDs[st.id] = st
		r.subsPeak = max(r.subsPeak, len(r.subNames))
	}
	st.refs++
	s.heldSubs[st.id] = struct{}{}
	return st.id, nil
}

// register makes s a connected client. If another session has the same UID,
// it is taken over as the reference broker does: its subscriptions and
// observations are removed (with Change to the topics' observers), the
// observers of its ETID get Change(etid, 0) and are dropped, and s gets the
// same ETID. The old session is returned; it still has to be kicked. In a
// cluster, s may come with an ETID already (taken over from another node,
// or checked unused there), which it keeps unless a client here has it;
// note gathers what the old session gave up.
func (r *registry) register(s *session, note *dropNote) (old *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.byUID[s.uid]
	switch {
	case old != nil:
		s.etid = old.etid
		r.dropLocked(old, note)
	case s.etid == 0 || r.clients[s.etid] != nil || r.byID[s.etid] != nil:
		s.etid = r.newID(true)
	}
	r.clients[s.etid] = s
	r.byUID[s.uid] = s
	return old
}

// unregister removes s if it is still registered: its subscriptions (with
// Change to the topics' observers), its observations, what it holds, and
// itself (with Change(etid, 0) to its observers). It reports whether s
// was registered; note (if not nil) gathers what s gave up.
func (r *registry) unregister(s *session, note *dropNote) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients[s.etid] != s {
		return false // never registered, or taken over
	}
	r.dropLocked(s, note)
	return true
}

// dropNote is what a dropped session gave up, for a cluster node to tell
// the others: the topics it subscribed to and observed (by name), and the
// clients of other nodes it observed.
type dropNote struct {
	etid         uint32
	uid          string
	unsubscribed []string
	unobserved   []string
	remoteIDs    []uint32
}

// dropLocked removes s's subscriptions and observations, s itself, and the
// observers of its ETID, notifying them all; then it releases the topics and
// sub-topics s held, freeing those nobody else holds. note, if not nil,
// gathers what s gave up.
func (r *registry) dropLocked(s *session, note *dropNote) {
	if note != nil {
		note.etid, note.uid = s.etid, s.uid
	}
	for tid := range s.subs {
		if t := r.byID[tid]; t != nil {
			delete(t.subs, s)
			r.subscriptions--
			r.notifyLocked(tid, t.count())
			if note != nil {
				note.unsubscribed = append(note.unsubscribed, t.name)
			}
		}
	}
	clear(s.subs)
	for id := range s.observing {
		if note != nil {
			if t := r.byID[id]; t != nil {
				note.unobserved = append(note.unobserved, t.name)
			} else if r.clients[id] == nil {
				note.remoteIDs = append(note.remoteIDs, id)
			}
		}
		if set := r.observers[id]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(r.observers, id)
			}
		}
	}
	clear(s.observing)
	s.dropped = true
	delete(r.clients, s.etid)
	delete(r.byUID, s.uid)
	r.notifyLocked(s.etid, 0)
	delete(r.observers, s.etid)

	for tid := range s.held {
		if t := r.byID[tid]; t != nil {
			if t.refs--; t.refs == 0 {
				delete(r.topics, t.name)
				delete(r.byID, tid)
				delete(r.observers, tid) // none: observers hold it
			}
		}
	}
	clear(s.held)
	for id := range s.heldSubs {
		if st := r.subIDs[id]; st != nil {
			if st.refs--; st.refs == 0 {
				delete(r.subNames, st.name)
				delete(r.subIDs, id)
			}
		}
	}
	clear(s.heldSubs)
	r.shrinkLocked()
}

// shrinkLocked makes the topic and sub-topic tables anew when fewer than a
// quarter of their most entries are left, so that memory freed topics
// took in them is given back too.
func (r *registry) shrinkLocked() {
	const least = 1024 // tables this small are left alone
	if r.topicsPeak > least && len(r.topics) < r.topicsPeak/4 {
		r.topics, r.byID = remake(r.topics), remake(r.byID)
		r.observers = remake(r.observers)
		r.topicsPeak = len(r.topics)
	}
	if r.subsPeak > least && len(r.subNames) < r.subsPeak/4 {
		r.subNames, r.subIDs = remake(r.subNames), remake(r.subIDs)
		r.subsPeak = len(r.subNames)
	}
}

// remake returns a copy of m in a map sized for its entries.
func remake[K comparable, V any](m map[K]V) map[K]V {
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// notifyLocked sends Change(id, count) to the observers of id.
func (r *registry) notifyLocked(id, count uint32) {
	set := r.observers[id]
	if len(set) == 0 {
		return
	}
	msg := smq.Change{ID: id, Count: count}.Append(make([]byte, 0, 9))
	for o := range set {
		o.send(msg)
	}
}

// subscribe adds s to the named topic's subscribers and returns its TID,
// and whether s was not a subscriber before; it refuses as holdTopic does.
func (r *registry) subscribe(s *session, name string, limit int) (uint32, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, err := r.holdTopic(s, name, limit)
	if err != nil {
		return 0, false, err
	}
	if _, dup := t.subs[s]; dup {
		return t.tid, false, nil
	}
	t.subs[s] = struct{}{}
	s.subs[t.tid] = struct{}{}
	r.subscriptions++
	r.notifyLocked(t.tid, t.count())
	return t.tid, true, nil
}

// create returns the named topic's TID, creating the topic; it refuses as
// holdTopic does.
func (r *registry) create(s *session, name string, limit int) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, err := r.holdTopic(s, name, limit)
	if err != nil {
		return 0, err
	}
	return t.tid, nil
}

// unsubscribe removes s from a topic's subscribers, and returns the
// topic's name if s was one. s still holds the topic until it ends.
func (r *registry) unsubscribe(s *session, tid uint32) (name string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.byID[tid]
	if t == nil {
		return "", false
	}
	if _, ok := t.subs[s]; ok {
		delete(t.subs, s)
		delete(s.subs, tid)
		r.subscriptions--
		r.notifyLocked(tid, t.count())
		return t.name, true
	}
	return "", false
}

// observe adds s as an observer of id: a topic gets an immediate Change with
// its count, a peer ETID a Change(etid, 0) when it goes, an unknown ID an
// immediate Change(id, 0). Observing oneself is ignored. An observed topic
// is held by s; when s may hold no more, errTooMany, and nothing is sent.
// remote says id is a client of another node of the cluster, known to be
// there. It reports whether s observes id now and did not before.
func (r *registry) observe(s *session, id uint32, limit int, remote bool) (bool, error) {
	if id == s.etid {
		return false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, isTopic := r.byID[id]
	_, isClient := r.clients[id]
	if !isTopic && !isClient && !remote {
		s.send(smq.Change{ID: id}.Append(make([]byte, 0, 9)))
		return false, nil
	}
	if s.dropped {
		return false, errGone
	}
	if isTopic {
		if _, err := r.holdTopic(s, t.name, limit); err != nil {
			return false, err
		}
	}
	_, before := s.observing[id]
	set := r.observers[id]
	if set == nil {
		set = make(map[*session]struct{})
		r.observers[id] = set
	}
	set[s] = struct{}{}
	s.observing[id] = struct{}{}
	if isTopic {
		s.send(smq.Change{ID: id, Count: t.count()}.Append(make([]byte, 0, 9)))
	}
	return !before, nil
}

// unobserve stops s observing id; it reports whether s did, and the
// topic's name if id is a topic.
func (r *registry) unobserve(s *session, id uint32) (name string, was bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if set := r.observers[id]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(r.observers, id)
		}
	}
	_, was = s.observing[id]
	delete(s.observing, id)
	if t := r.byID[id]; t != nil {
		name = t.name
	}
	return name, was
}

// Where deliver sent a message.
type destination int

const (
	toSubscribers   destination = iota // a topic's subscribers, or a client
	toNoSubscribers                    // a topic nobody subscribes to
	toNobody                           // an ID that is no topic and no client
)

// forward is where a clustered node sends a Publish on to the other nodes:
// the topic's subject and name (empty for a client of another node) and
// the name of its sub-topic.
type forward struct {
	subject, topic, subTopic string
	hasSub                   bool // subTopic is set: the ID is a sub-topic's
}

// deliver queues msg (a Publish, type + body, owned by the callee from now
// on) to the subscribers of its TID or to the client with that ETID.
// Unknown IDs and topics without subscribers are dropped silently. It
// returns the number of clients it was queued to, and where it went. The
// bytes of all the copies are reserved in the budget at once. fwd, set
// only in a cluster, receives where the other nodes get it.
func (b *Broker) deliver(tid uint32, msg []byte, fwd *forward) (int, destination) {
	r := &b.reg
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t := r.byID[tid]; t != nil {
		if fwd != nil {
			fwd.subject, fwd.topic = t.subject, t.name
			if st := r.subIDs[smq.SubTID(msg)]; st != nil {
				fwd.subTopic, fwd.hasSub = st.name, true
			}
		}
		if len(t.subs) == 0 {
			return 0, toNoSubscribers
		}
		return b.fanOutLocked(t, msg), toSubscribers
	}
	if s := r.clients[tid]; s != nil {
		if s.send(msg) {
			return 1, toSubscribers
		}
		return 0, toSubscribers
	}
	if fwd != nil && tid&clientBit != 0 {
		if st := r.subIDs[smq.SubTID(msg)]; st != nil {
			fwd.subTopic, fwd.hasSub = st.name, true
		}
	}
	return 0, toNobody
}

// fanOutLocked queues msg to t's subscribers, reserving all the copies'
// bytes at once, and returns to how many it was queued. Caller holds mu
// (read).
func (b *Broker) fanOutLocked(t *topic, msg []byte) int {
	b.reserve(int64(len(t.subs) * len(msg)))
	n := 0
	for s := range t.subs {
		switch {
		case !s.fits(msg):
			b.queued.Add(-int64(len(msg)))
		case s.queue(msg):
			n++
		}
	}
	return n
}

// count is the topic's subscriber count: here and, in a cluster, on the
// nodes this one keeps count of.
func (t *topic) count() uint32 { return uint32(len(t.subs)) + t.remote }

// setRemote sets the subscribers the other nodes have of the named topic,
// telling its observers here if the total changes.
func (r *registry) setRemote(name string, n uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.topics[name]; t != nil && t.remote != n {
		t.remote = n
		r.notifyLocked(t.tid, t.count())
	}
}

// remoteGone tells the observers of id, a client of another node, that it
// went, and drops them as observers of it.
func (r *registry) remoteGone(id uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notifyLocked(id, 0)
	for o := range r.observers[id] {
		delete(o.observing, id)
	}
	delete(r.observers, id)
}

// topicName returns the name of the topic with ID id, if there is one.
func (r *registry) topicName(id uint32) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t := r.byID[id]; t != nil {
		return t.name, true
	}
	return "", false
}

// local reports whether id is a topic or a client here, and whether a
// client here has uid.
func (r *registry) local(id uint32, uid string) (isID, hasUID bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, topic := r.byID[id]
	_, client := r.clients[id]
	_, hasUID = r.byUID[uid]
	return topic || client, hasUID
}
