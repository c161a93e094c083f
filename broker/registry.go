package broker

import (
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
}

// registry holds the broker's shared state: topics and clients share one ID
// table (TIDs and ETIDs), sub-topics have their own. Publishing takes the read
// lock; everything else the write lock.
type registry struct {
	mu        sync.RWMutex
	topics    map[string]*topic
	byID      map[uint32]*topic   // TID -> topic
	clients   map[uint32]*session // ETID -> session
	byUID     map[string]*session // UID -> session
	observers map[uint32]map[*session]struct{}
	subNames  map[string]uint32
	subIDs    map[uint32]string
}

func (r *registry) init() {
	r.topics = make(map[string]*topic)
	r.byID = make(map[uint32]*topic)
	r.clients = make(map[uint32]*session)
	r.byUID = make(map[string]*session)
	r.observers = make(map[uint32]map[*session]struct{})
	r.subNames = make(map[string]uint32)
	r.subIDs = make(map[uint32]string)
}

// newID returns a random ID unused in the TID/ETID table. Caller holds mu.
func (r *registry) newID() uint32 {
	for {
		id := rand.Uint32()
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

// topic returns the named topic, creating it. Caller holds mu.
func (r *registry) topic(name string) *topic {
	t := r.topics[name]
	if t == nil {
		t = &topic{name: name, tid: r.newID(), subs: make(map[*session]struct{})}
		r.topics[name] = t
		r.byID[t.tid] = t
	}
	return t
}

// subTopic returns the ID of the named sub-topic, creating it.
func (r *registry) subTopic(name string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.subNames[name]; ok {
		return id
	}
	for {
		id := rand.Uint32()
		if _, used := r.subIDs[id]; id != 0 && !used {
			r.subNames[name] = id
			r.subIDs[id] = name
			return id
		}
	}
}

// register makes s a connected client. If another session has the same UID,
// it is taken over as the reference broker does: its subscriptions and
// observations are removed (with Change to the topics' observers), the
// observers of its ETID get Change(etid, 0) and are dropped, and s gets the
// same ETID. The old session is returned; it still has to be kicked.
func (r *registry) register(s *session) (old *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.byUID[s.uid]
	if old != nil {
		s.etid = old.etid
		r.dropLocked(old)
	} else {
		s.etid = r.newID()
	}
	r.clients[s.etid] = s
	r.byUID[s.uid] = s
	return old
}

// unregister removes s if it is still registered: its subscriptions (with
// Change to the topics' observers), its observations, and itself (with
// Change(etid, 0) to its observers).
func (r *registry) unregister(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients[s.etid] != s {
		return // never registered, or taken over
	}
	r.dropLocked(s)
}

// dropLocked removes s's subscriptions and observations, s itself, and the
// observers of its ETID, notifying them all.
func (r *registry) dropLocked(s *session) {
	for tid := range s.subs {
		if t := r.byID[tid]; t != nil {
			delete(t.subs, s)
			r.notifyLocked(tid, uint32(len(t.subs)))
		}
	}
	clear(s.subs)
	for id := range s.observing {
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

// subscribe adds s to the named topic's subscribers and returns its TID.
func (r *registry) subscribe(s *session, name string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.topic(name)
	if _, dup := t.subs[s]; !dup && !s.dropped {
		t.subs[s] = struct{}{}
		s.subs[t.tid] = struct{}{}
		r.notifyLocked(t.tid, uint32(len(t.subs)))
	}
	return t.tid
}

// create returns the named topic's TID, creating the topic.
func (r *registry) create(name string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.topic(name).tid
}

func (r *registry) unsubscribe(s *session, tid uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.byID[tid]
	if t == nil {
		return
	}
	if _, ok := t.subs[s]; ok {
		delete(t.subs, s)
		delete(s.subs, tid)
		r.notifyLocked(tid, uint32(len(t.subs)))
	}
}

// observe adds s as an observer of id: a topic gets an immediate Change with
// its count, a peer ETID a Change(etid, 0) when it goes, an unknown ID an
// immediate Change(id, 0). Observing oneself is ignored.
func (r *registry) observe(s *session, id uint32) {
	if id == s.etid {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, isTopic := r.byID[id]
	_, isClient := r.clients[id]
	if !isTopic && !isClient {
		s.send(smq.Change{ID: id}.Append(make([]byte, 0, 9)))
		return
	}
	if s.dropped {
		return
	}
	set := r.observers[id]
	if set == nil {
		set = make(map[*session]struct{})
		r.observers[id] = set
	}
	set[s] = struct{}{}
	s.observing[id] = struct{}{}
	if isTopic {
		s.send(smq.Change{ID: id, Count: uint32(len(t.subs))}.Append(make([]byte, 0, 9)))
	}
}

func (r *registry) unobserve(s *session, id uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if set := r.observers[id]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(r.observers, id)
		}
	}
	delete(s.observing, id)
}

// deliver queues msg (a Publish, type + body, owned by the callee from now
// on) to the subscribers of its TID or to the client with that ETID. Unknown
// IDs are dropped silently. It returns the number of clients it was queued to.
func (r *registry) deliver(tid uint32, msg []byte) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t := r.byID[tid]; t != nil {
		n := 0
		for s := range t.subs {
			if s.send(msg) {
				n++
			}
		}
		return n
	}
	if s := r.clients[tid]; s != nil && s.send(msg) {
		return 1
	}
	return 0
}
