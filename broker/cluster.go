package broker

// A broker with Config.Cluster is one node of a cluster: the clients of all
// nodes see one SMQ broker. The nodes talk over NATS, one connection each;
// every subject begins with the cluster's prefix (P):
//
//	P.t.<hash of name>  Publish to a topic: sent once by the publishing node,
//	                    subscribed by each node with a subscriber of it
//	P.e.<etid>          Publish to a client, and "is this ETID taken?"
//	                    probes; subscribed by the node the client is on
//	P.u.<hash of uid>   takeover claims (request: the holder answers with
//	                    the ETID and lets its session go) and announcements
//	                    of a new holder (the older holder lets go)
//	P.c.<hash of name>  a node's subscriber count of a topic, sent on each
//	                    change; subscribed by nodes with an observer of it
//	P.g.<etid>          a client went; subscribed by nodes observing it
//	P.n.<node>          questions to one node: a barrier, a topic's count
//	P.hb                heartbeats, and a leaving node's goodbye
//
// Topic IDs are each node's own (the top bit clear) and topic names travel:
// a node delivers a topic message from another node under its own TID.
// ETIDs have the top bit set and are unique in the cluster: a new one is
// checked unused with a probe, and a UID taken over from another node keeps
// its ETID, whose subject then moves with it. So a Publish to an ID that is
// no topic or client here goes to the cluster as one-to-one, and a reply to
// a ptid reaches its sender wherever it is.
//
// Order: a node sends everything on one connection and takes everything
// from one channel, which NATS fills in the order it received, so one
// publisher's messages reach every node in the order sent.

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smqgw/smqgw/smq"
)

// How many messages from the other nodes may wait: Publish messages for
// the data dispatcher, the rest (heartbeats, claims, counts, questions) for
// the control dispatcher, so that a flood of data delays none of them.
// More are dropped (and counted) by NATS as a slow consumer. A Publish is
// at most a raw frame, so the data queue holds at most 4 GiB, in practice
// what the messages weigh (64 B: 6 MiB).
const (
	dataQueue    = 1 << 16
	controlQueue = 1 << 14
)

// clusterNode is the broker's side of a cluster.
type clusterNode struct {
	b     *Broker
	cfg   Cluster
	nc    *nats.Conn
	inc   uint64         // this run of the node: a restarted node is a new peer
	pfx   string         // cfg.Prefix + "."
	in    chan *nats.Msg // Publish messages
	ctl   chan *nats.Msg // the rest
	done  chan struct{}
	loops sync.WaitGroup

	mu       sync.Mutex
	live     map[*nats.Subscription]struct{}
	interest map[string]*interest    // topics with subscribers here
	watched  map[string]*countWatch  // topics observed here
	clients  map[uint32]*heldClient  // the clients here, by ETID
	watching map[uint32]*clientWatch // clients of other nodes observed here
	peers    map[uint64]*peer        // by incarnation
	silent   map[uint64]bool         // peers lost for their silence (bounded): if one speaks again, a partition healed
	seq      uint64                  // of the count updates this node sends
	gone     uint64                  // dropped by subscriptions since ended

	// Barriers: the round waiting to start, and whether one runs.
	bmu      sync.Mutex
	bnext    *barrierRound
	brunning bool

	out, in_, takeOut, takeIn, lost, timeouts, barriers atomic.Uint64
}

// interest is a topic with subscribers here: n of them, and this node's
// NATS subscription to its messages. ready is closed once the other nodes
// know of it.
type interest struct {
	n     uint32
	sub   *nats.Subscription
	ready chan struct{}
}

// countWatch is a topic observed here: refs observations, and the
// subscriber counts of the other nodes.
type countWatch struct {
	refs  int
	sub   *nats.Subscription
	peers map[uint64]peerCount
	ready chan struct{}
}

type peerCount struct {
	seq uint64
	n   uint32
}

// heldClient is a client here (n > 1 while one takes over another): the
// subscriptions that bring its one-to-one messages and takeover claims.
type heldClient struct {
	n          int
	esub, usub *nats.Subscription
}

// clientWatch is a client of another node observed here: refs
// observations, whether it was there when asked, and on which node.
type clientWatch struct {
	refs   int
	sub    *nats.Subscription
	alive  bool
	holder uint64
	ready  chan struct{}
	gone   []uint64 // holders it went from while the probe was out
}

// barrierRound is one round of questions to every peer; done is closed
// when all have answered or timed out.
type barrierRound struct{ done chan struct{} }

type peer struct {
	name string
	last time.Time
}

func newClusterNode(b *Broker, c Cluster) *clusterNode {
	if c.Prefix == "" {
		c.Prefix = DefaultClusterPrefix
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultClusterRequestTimeout
	}
	if c.randID == nil {
		c.randID = rand.Uint32
	}
	cn := &clusterNode{
		b: b, cfg: c, nc: c.Conn, inc: rand.Uint64() | 1, pfx: c.Prefix + ".",
		in: make(chan *nats.Msg, dataQueue), ctl: make(chan *nats.Msg, controlQueue), done: make(chan struct{}),
		live:     make(map[*nats.Subscription]struct{}),
		interest: make(map[string]*interest),
		watched:  make(map[string]*countWatch),
		clients:  make(map[uint32]*heldClient),
		watching: make(map[uint32]*clientWatch),
		peers:    make(map[uint64]*peer),
		silent:   make(map[uint64]bool),
	}
	cn.mu.Lock()
	cn.subscribe(cn.pfx+"hb", cn.ctl)
	cn.subscribe(cn.pfx+"n."+c.Node, cn.ctl)
	cn.mu.Unlock()
	cn.loops.Go(cn.loop)
	cn.loops.Go(cn.dataLoop)
	// Back on NATS after losing it (an external NATS), the others may have
	// let clients with this node's UIDs in meanwhile: announce them again.
	prev := cn.nc.Opts.ReconnectedCB
	cn.nc.SetReconnectHandler(func(nc *nats.Conn) {
		if prev != nil {
			prev(nc)
		}
		cn.reannounce()
	})
	cn.heartbeat('h')
	return cn
}

// Subjects.

func hash64(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return strconv.FormatUint(h.Sum64(), 16)
}

func (cn *clusterNode) topicSubject(name string) string { return cn.pfx + "t." + hash64(name) }
func (cn *clusterNode) countSubject(name string) string { return cn.pfx + "c." + hash64(name) }
func (cn *clusterNode) uidSubject(uid string) string    { return cn.pfx + "u." + hash64(uid) }
func (cn *clusterNode) etidSubject(id uint32) string {
	return cn.pfx + "e." + strconv.FormatUint(uint64(id), 16)
}
func (cn *clusterNode) goneSubject(id uint32) string {
	return cn.pfx + "g." + strconv.FormatUint(uint64(id), 16)
}

// subscribe subscribes the dispatcher to subject. Caller holds mu.
func (cn *clusterNode) subscribe(subject string, ch chan *nats.Msg) *nats.Subscription {
	sub, err := cn.nc.ChanSubscribe(subject, ch)
	if err != nil {
		cn.logErr("cluster subscribe", err)
		return nil
	}
	_ = sub.SetPendingLimits(-1, -1)
	cn.live[sub] = struct{}{}
	return sub
}

// unsubscribe ends sub. Caller holds mu.
func (cn *clusterNode) unsubscribe(sub *nats.Subscription) {
	if sub == nil {
		return
	}
	if n, err := sub.Dropped(); err == nil {
		cn.gone += uint64(n)
	}
	delete(cn.live, sub)
	_ = sub.Unsubscribe()
}

func (cn *clusterNode) publish(subject string, data []byte) {
	if err := cn.nc.Publish(subject, data); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		cn.logErr("cluster publish", err)
	}
}

func (cn *clusterNode) logErr(what string, err error) {
	if l := cn.b.cfg.Logger; l != nil {
		l.Warn(what+" failed", "node", cn.cfg.Node, "err", err)
	}
}

// request asks the others one question; nil when nobody answers (at once:
// nobody listens) or in time (counted).
func (cn *clusterNode) request(subject string, data []byte) *nats.Msg {
	if !cn.nc.IsConnected() {
		return nil
	}
	m, err := cn.nc.Request(subject, data, cn.cfg.RequestTimeout)
	if err != nil {
		if errors.Is(err, nats.ErrTimeout) {
			cn.timeouts.Add(1)
		}
		return nil
	}
	return m
}

// Connecting.

// prepare gives s, about to register, its ETID in the cluster: the one of
// the session with its UID on another node, which lets it go, or a new one
// no node uses. A UID held here is taken over by register as on one broker.
func (cn *clusterNode) prepare(s *session) {
	if _, here := cn.b.reg.local(0, s.uid); here {
		return
	}
	if m := cn.request(cn.uidSubject(s.uid), []byte(s.uid)); m != nil && len(m.Data) == 4 {
		if id := binary.BigEndian.Uint32(m.Data); id != 0 {
			s.etid = id
			cn.takeIn.Add(1)
			return
		}
	}
	for range 8 {
		id := cn.cfg.randID() | clientBit
		if isID, _ := cn.b.reg.local(id, ""); isID {
			continue
		}
		if !cn.nc.IsConnected() {
			s.etid = id
			return
		}
		_, err := cn.nc.Request(cn.etidSubject(id), nil, cn.cfg.RequestTimeout)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			s.etid = id
			return
		case errors.Is(err, nats.ErrTimeout):
			cn.timeouts.Add(1)
			s.etid = id // a node that does not answer in time: use it anyway
			return
		case err != nil:
			s.etid = id
			return
		}
		// Taken on another node: draw again.
	}
}

// held makes the cluster route s's messages and claims to this node, and
// tells the other nodes that s holds its UID now. It returns once the
// others know (a barrier), so that what they send s after its Connack
// reaches it.
func (cn *clusterNode) held(s *session) {
	cn.mu.Lock()
	h := cn.clients[s.etid]
	first := h == nil
	if first {
		h = &heldClient{esub: cn.subscribe(cn.etidSubject(s.etid), cn.in), usub: cn.subscribe(cn.uidSubject(s.uid), cn.ctl)}
		cn.clients[s.etid] = h
	}
	h.n++
	cn.mu.Unlock()
	if first {
		cn.barrier()
	}
	cn.announce(s.uid, s.since)
}

// announce tells the other nodes that a session here since since holds
// uid: an older holder lets go.
func (cn *clusterNode) announce(uid string, since int64) {
	a := binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(uid)), uint64(since))
	a = binary.BigEndian.AppendUint64(a, cn.inc)
	cn.publish(cn.uidSubject(uid), append(a, uid...))
}

// release undoes what a dropped session had in the cluster: its client
// subjects, its topics' interest and counts, its observations of other
// nodes' clients; the nodes observing it learn it went.
func (cn *clusterNode) release(note *dropNote) {
	if note.etid != 0 {
		cn.mu.Lock()
		if h := cn.clients[note.etid]; h != nil {
			if h.n--; h.n <= 0 {
				cn.unsubscribe(h.esub)
				cn.unsubscribe(h.usub)
				delete(cn.clients, note.etid)
			}
		}
		cn.mu.Unlock()
		cn.publish(cn.goneSubject(note.etid), binary.BigEndian.AppendUint64(nil, cn.inc))
	}
	for _, name := range note.unsubscribed {
		cn.unwant(name)
	}
	for _, name := range note.unobserved {
		cn.unwatch(name)
	}
	for _, id := range note.remoteIDs {
		cn.unwatchClient(id)
	}
}

// maxSilent bounds the peers remembered as lost for their silence.
const maxSilent = 1024

// reannounce announces every client here again, so that a node that let
// in another session with one of their UIDs while the two could not talk
// settles which stays (the newer).
func (cn *clusterNode) reannounce() {
	type held struct {
		uid   string
		since int64
	}
	r := &cn.b.reg
	r.mu.RLock()
	all := make([]held, 0, len(r.byUID))
	for uid, s := range r.byUID {
		all = append(all, held{uid, s.since})
	}
	r.mu.RUnlock()
	for _, h := range all {
		cn.announce(h.uid, h.since)
	}
}

// letGo ends the session here with uid, taken over on another node, and
// returns its ETID (0 if there is none).
func (cn *clusterNode) letGo(uid string, newer func(*session) bool) uint32 {
	r := &cn.b.reg
	r.mu.RLock()
	s := r.byUID[uid]
	r.mu.RUnlock()
	if s == nil || (newer != nil && !newer(s)) {
		return 0
	}
	var note dropNote
	if !r.unregister(s, &note) {
		return 0
	}
	cn.takeOut.Add(1)
	s.setReason("taken over by a newer connection with the same uid on another node")
	s.kick(reasonReconnect)
	cn.release(&note)
	return note.etid
}

// Topics.

// want counts one more subscriber here of the named topic. The first
// subscribes this node to the topic's messages and waits until the other
// nodes know (a barrier), so that what they publish after the Suback
// reaches it.
func (cn *clusterNode) want(name string, subscribe func() bool) {
	cn.mu.Lock()
	if !subscribe() {
		cn.mu.Unlock()
		return
	}
	in := cn.interest[name]
	first := in == nil
	if first {
		in = &interest{sub: cn.subscribe(cn.topicSubject(name), cn.in), ready: make(chan struct{})}
		cn.interest[name] = in
	}
	in.n++
	cn.sendCount(name, in.n)
	cn.mu.Unlock()
	if !first {
		<-in.ready
		return
	}
	cn.barrier()
	close(in.ready)
}

// barrier returns once every peer has answered a question sent after the
// caller's subscriptions: NATS keeps the order of what one connection
// sends, and a route keeps it between servers, so by then each peer's
// server knows of them. The callers of a moment share one round: a round
// covers every subscription made before it starts, so at most one runs and
// one waits, however many sessions subscribe at once.
func (cn *clusterNode) barrier() {
	cn.bmu.Lock()
	r := cn.bnext
	if r == nil {
		r = &barrierRound{done: make(chan struct{})}
		cn.bnext = r
		if !cn.brunning {
			cn.brunning = true
			go cn.runBarriers()
		}
	}
	cn.bmu.Unlock()
	<-r.done
}

// runBarriers runs the waiting rounds one after the other.
func (cn *clusterNode) runBarriers() {
	for {
		cn.bmu.Lock()
		r := cn.bnext
		cn.bnext = nil
		if r == nil {
			cn.brunning = false
			cn.bmu.Unlock()
			return
		}
		cn.bmu.Unlock()
		cn.mu.Lock()
		peers := cn.peerNames()
		cn.mu.Unlock()
		cn.askAll(peers, []byte{'s'}, func(*nats.Msg) {})
		cn.barriers.Add(1)
		close(r.done)
	}
}

// unwant counts one subscriber fewer here of the named topic.
func (cn *clusterNode) unwant(name string) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	in := cn.interest[name]
	if in == nil {
		return
	}
	in.n--
	cn.sendCount(name, in.n)
	if in.n == 0 {
		cn.unsubscribe(in.sub)
		delete(cn.interest, name)
	}
}

// sendCount tells the nodes observing the named topic how many subscribers
// it has here. Caller holds mu.
func (cn *clusterNode) sendCount(name string, n uint32) {
	cn.seq++
	m := binary.BigEndian.AppendUint64(make([]byte, 0, 20+len(name)), cn.inc)
	m = binary.BigEndian.AppendUint64(m, cn.seq)
	m = binary.BigEndian.AppendUint32(m, n)
	cn.publish(cn.countSubject(name), append(m, name...))
}

// watch counts one more observation here of the named topic; the first
// learns the other nodes' counts and follows their changes.
func (cn *clusterNode) watch(name string) {
	cn.mu.Lock()
	w := cn.watched[name]
	if w != nil {
		w.refs++
		cn.mu.Unlock()
		<-w.ready
		return
	}
	w = &countWatch{refs: 1, sub: cn.subscribe(cn.countSubject(name), cn.ctl), peers: make(map[uint64]peerCount),
		ready: make(chan struct{})}
	cn.watched[name] = w
	peers := cn.peerNames()
	cn.mu.Unlock()
	cn.askAll(peers, append([]byte{'c'}, name...), func(m *nats.Msg) {
		if len(m.Data) == 20 {
			cn.applyCount(name, binary.BigEndian.Uint64(m.Data), binary.BigEndian.Uint64(m.Data[8:]),
				binary.BigEndian.Uint32(m.Data[16:]))
		}
	})
	close(w.ready)
}

// unwatch counts one observation fewer here of the named topic.
func (cn *clusterNode) unwatch(name string) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	w := cn.watched[name]
	if w == nil {
		return
	}
	if w.refs--; w.refs == 0 {
		cn.unsubscribe(w.sub)
		delete(cn.watched, name)
		cn.b.reg.setRemote(name, 0)
	}
}

// applyCount records node inc's count of a topic observed here, if newer
// than what this node knows, and gives its observers the new total.
func (cn *clusterNode) applyCount(name string, inc, seq uint64, n uint32) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	w := cn.watched[name]
	if w == nil {
		return
	}
	if p := cn.peers[inc]; p == nil {
		cn.peers[inc] = &peer{last: time.Now()}
	}
	if old, ok := w.peers[inc]; ok && old.seq >= seq {
		return
	}
	w.peers[inc] = peerCount{seq: seq, n: n}
	cn.b.reg.setRemote(name, w.total())
}

func (w *countWatch) total() uint32 {
	var sum uint32
	for _, c := range w.peers {
		sum += c.n
	}
	return sum
}

// watchClient counts one more observation here of id, a client of another
// node, and reports whether it is there.
func (cn *clusterNode) watchClient(id uint32) bool {
	cn.mu.Lock()
	w := cn.watching[id]
	if w != nil {
		w.refs++
		cn.mu.Unlock()
		<-w.ready
		cn.mu.Lock()
		defer cn.mu.Unlock()
		return w.alive
	}
	w = &clientWatch{refs: 1, sub: cn.subscribe(cn.goneSubject(id), cn.ctl), ready: make(chan struct{})}
	cn.watching[id] = w
	cn.mu.Unlock()
	m := cn.request(cn.etidSubject(id), nil)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if m != nil && len(m.Data) == 8 {
		w.holder = binary.BigEndian.Uint64(m.Data)
		w.alive = !slices.Contains(w.gone, w.holder) // not gone since it answered
	}
	w.gone = nil
	close(w.ready)
	return w.alive
}

// observeClient makes a session an observer of id, a client of another
// node it found there, with observe, unless id went since (there false).
// Under mu, so that clientGone either comes after and tells the session,
// or came before and the session learns it here.
func (cn *clusterNode) observeClient(id uint32, observe func() (bool, error)) (there, added bool, err error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if w := cn.watching[id]; w == nil || !w.alive {
		return false, false, nil
	}
	added, err = observe()
	return true, added, err
}

// unwatchClient counts one observation fewer here of id, a client of
// another node.
func (cn *clusterNode) unwatchClient(id uint32) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	w := cn.watching[id]
	if w == nil {
		return
	}
	if w.refs--; w.refs == 0 {
		cn.unsubscribe(w.sub)
		delete(cn.watching, id)
	}
}

// clientGone ends the observations here of id, a client that was on node
// holder.
func (cn *clusterNode) clientGone(id uint32, holder uint64) {
	cn.mu.Lock()
	w := cn.watching[id]
	if w != nil && !w.alive {
		select {
		case <-w.ready:
		default: // the probe is out: its answer may predate this
			w.gone = append(w.gone, holder)
		}
	}
	if w == nil || !w.alive || w.holder != holder {
		cn.mu.Unlock()
		return
	}
	cn.unsubscribe(w.sub)
	delete(cn.watching, id)
	cn.mu.Unlock()
	cn.b.reg.remoteGone(id)
}

// Asking the others.

// peerNames returns the names of the live peers. Caller holds mu.
func (cn *clusterNode) peerNames() []string {
	names := make([]string, 0, len(cn.peers))
	for _, p := range cn.peers {
		if p.name != "" {
			names = append(names, p.name)
		}
	}
	return names
}

// askAll asks every peer the same question at once and hands each answer
// to got; it returns when all have answered or timed out.
func (cn *clusterNode) askAll(peers []string, q []byte, got func(*nats.Msg)) {
	var wg sync.WaitGroup
	for _, name := range peers {
		wg.Go(func() {
			if m := cn.request(cn.pfx+"n."+name, q); m != nil {
				got(m)
			}
		})
	}
	wg.Wait()
}

// The dispatcher.

// loop takes the control messages of the other nodes, in the order NATS
// received them, and sends heartbeats, until the broker shuts down.
func (cn *clusterNode) loop() {
	tick := time.NewTicker(cn.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case m := <-cn.ctl:
			cn.dispatch(m)
		case <-tick.C:
			cn.heartbeat('h')
			if len(cn.ctl) == 0 { // with a backlog, heartbeats may be in it
				cn.expire(time.Now())
			}
		case <-cn.done:
			cn.heartbeat('b')
			return
		}
	}
}

// dataLoop delivers the Publish messages of the other nodes, in the order
// NATS received them, until the broker shuts down.
func (cn *clusterNode) dataLoop() {
	for {
		select {
		case m := <-cn.in:
			cn.dispatch(m)
		case <-cn.done:
			return
		}
	}
}

func (cn *clusterNode) heartbeat(kind byte) {
	m := append([]byte{kind}, binary.BigEndian.AppendUint64(nil, cn.inc)...)
	cn.publish(cn.pfx+"hb", append(m, cn.cfg.Node...))
}

// expire ends the peers not heard from within PeerTimeout.
func (cn *clusterNode) expire(now time.Time) {
	cn.mu.Lock()
	var dead []uint64
	for inc, p := range cn.peers {
		if now.Sub(p.last) > cn.cfg.PeerTimeout {
			dead = append(dead, inc)
		}
	}
	cn.mu.Unlock()
	for _, inc := range dead {
		cn.peerLost(inc, true)
	}
}

// peerLost forgets a peer: its clients observed here are gone, its counts
// are dropped. silent says it went quiet (counted, and remembered in case
// it speaks again), rather than said goodbye or restarted.
func (cn *clusterNode) peerLost(inc uint64, silent bool) {
	cn.mu.Lock()
	if _, ok := cn.peers[inc]; !ok {
		cn.mu.Unlock()
		return
	}
	delete(cn.peers, inc)
	if silent {
		cn.lost.Add(1)
		if len(cn.silent) >= maxSilent {
			clear(cn.silent)
		}
		cn.silent[inc] = true
	}
	var gone []uint32
	for id, w := range cn.watching {
		if w.alive && w.holder == inc {
			gone = append(gone, id)
		}
	}
	for name, w := range cn.watched {
		if _, ok := w.peers[inc]; ok {
			delete(w.peers, inc)
			cn.b.reg.setRemote(name, w.total())
		}
	}
	cn.mu.Unlock()
	for _, id := range gone {
		cn.clientGone(id, inc)
	}
}

// dispatch handles one message from another node. Malformed ones are
// ignored: only nodes of the cluster publish on its subjects.
func (cn *clusterNode) dispatch(m *nats.Msg) {
	subj, ok := strings.CutPrefix(m.Subject, cn.pfx)
	if !ok || len(subj) < 2 {
		return
	}
	d := m.Data
	switch subj[:2] {
	case "t.":
		if len(d) < 2 {
			return
		}
		n := int(binary.BigEndian.Uint16(d))
		if len(d) < 2+n {
			return
		}
		name := d[2 : 2+n]
		if sub, ptid, payload, ok := decodeTail(d[2+n:]); ok {
			cn.in_.Add(1)
			cn.b.deliverRemote(name, 0, sub, ptid, payload)
		}
	case "e.":
		id, err := strconv.ParseUint(subj[2:], 16, 32)
		if err != nil {
			return
		}
		if m.Reply != "" { // is it taken? It is here.
			if isID, _ := cn.b.reg.local(uint32(id), ""); isID {
				cn.publish(m.Reply, binary.BigEndian.AppendUint64(nil, cn.inc))
			}
			return
		}
		if sub, ptid, payload, ok := decodeTail(d); ok {
			cn.in_.Add(1)
			cn.b.deliverRemote(nil, uint32(id), sub, ptid, payload)
		}
	case "u.":
		if m.Reply != "" { // a claim: let go, answer with the ETID
			id := cn.letGo(string(d), nil)
			cn.publish(m.Reply, binary.BigEndian.AppendUint32(nil, id))
			return
		}
		if len(d) < 16 {
			return
		}
		since, inc := int64(binary.BigEndian.Uint64(d)), binary.BigEndian.Uint64(d[8:])
		var keep int64
		cn.letGo(string(d[16:]), func(s *session) bool {
			if s.since < since || (s.since == since && cn.inc < inc) {
				return true
			}
			keep = s.since
			return false
		})
		if keep != 0 {
			// The session here is the newer: its own announcement may
			// have gone out before that node listened; say it again.
			cn.announce(string(d[16:]), keep)
		}
	case "c.":
		if len(d) >= 20 {
			cn.applyCount(string(d[20:]), binary.BigEndian.Uint64(d), binary.BigEndian.Uint64(d[8:]),
				binary.BigEndian.Uint32(d[16:]))
		}
	case "g.":
		id, err := strconv.ParseUint(subj[2:], 16, 32)
		if err == nil && len(d) == 8 {
			cn.clientGone(uint32(id), binary.BigEndian.Uint64(d))
		}
	case "n.":
		if m.Reply == "" || len(d) == 0 {
			return
		}
		switch d[0] {
		case 's':
			cn.publish(m.Reply, nil)
		case 'c':
			cn.mu.Lock()
			var n uint32
			if in := cn.interest[string(d[1:])]; in != nil {
				n = in.n
			}
			a := binary.BigEndian.AppendUint64(make([]byte, 0, 20), cn.inc)
			a = binary.BigEndian.AppendUint64(a, cn.seq)
			a = binary.BigEndian.AppendUint32(a, n)
			cn.mu.Unlock()
			cn.publish(m.Reply, a)
		}
	case "hb":
		if len(d) < 9 {
			return
		}
		inc := binary.BigEndian.Uint64(d[1:])
		if d[0] == 'b' {
			cn.peerLost(inc, false)
			return
		}
		name := string(d[9:])
		cn.mu.Lock()
		p := cn.peers[inc]
		isNew := p == nil || p.name == ""
		// A peer back after being lost for its silence, or after missing
		// a few heartbeats: the two may have been cut apart.
		healed := (isNew && cn.silent[inc]) || (!isNew && time.Since(p.last) > 3*cn.cfg.Heartbeat)
		delete(cn.silent, inc)
		if p == nil {
			p = &peer{}
			cn.peers[inc] = p
		}
		p.name, p.last = name, time.Now()
		var old []uint64 // earlier runs of a restarted peer
		for i, q := range cn.peers {
			if i != inc && q.name == name {
				old = append(old, i)
			}
		}
		var names []string
		if isNew {
			for name := range cn.watched {
				names = append(names, name)
			}
		}
		cn.mu.Unlock()
		for _, i := range old {
			cn.peerLost(i, false)
		}
		if healed {
			// Apart, both sides may have let in a client with the same
			// UID: the announcements settle which stays.
			cn.loops.Go(cn.reannounce) // while loop runs: loops is not at zero
		}
		if isNew {
			// Say hello back at once, and learn its counts of what is
			// observed here.
			cn.heartbeat('h')
			cn.loops.Go(func() { // while loop runs: loops is not at zero
				for _, topic := range names {
					cn.askAll([]string{name}, append([]byte{'c'}, topic...), func(m *nats.Msg) {
						if len(m.Data) == 20 {
							cn.applyCount(topic, binary.BigEndian.Uint64(m.Data), binary.BigEndian.Uint64(m.Data[8:]),
								binary.BigEndian.Uint32(m.Data[16:]))
						}
					})
				}
			})
		}
	}
}

// forward sends a Publish of s, which went to the topic or client fwd
// names, to the other nodes. msg is the Publish (type and header).
func (cn *clusterNode) forward(s *session, fwd *forward, msg []byte) {
	b := s.cbuf[:0]
	subject := fwd.subject
	if fwd.topic != "" {
		b = binary.BigEndian.AppendUint16(b, uint16(len(fwd.topic)))
		b = append(b, fwd.topic...)
	} else {
		subject = cn.etidSubject(smq.ID(msg))
	}
	if fwd.hasSub {
		b = binary.BigEndian.AppendUint16(b, uint16(len(fwd.subTopic)))
		b = append(b, fwd.subTopic...)
	} else { // none (0), or an ID no sub-topic has: it travels as it is
		b = binary.BigEndian.AppendUint16(b, noSubTopic)
		b = binary.BigEndian.AppendUint32(b, smq.SubTID(msg))
	}
	b = binary.BigEndian.AppendUint32(b, smq.PTID(msg))
	b = append(b, msg[1+smq.PublishHeaderLen:]...)
	cn.publish(subject, b)
	cn.out.Add(1)
	if cap(b) <= 64<<10 {
		s.cbuf = b // kept for the next; a rare big one is not
	}
}

// noSubTopic in place of a sub-topic name's length says that a sub-topic
// ID follows instead: 0, or one no sub-topic had.
const noSubTopic = 0xFFFF

// remoteSub is the sub-topic of a Publish from another node: its name, or
// (when name is nil) the ID it had.
type remoteSub struct {
	name []byte
	id   uint32
}

// decodeTail splits a cluster Publish after its topic name: the sub-topic,
// the sender's ETID and the payload.
func decodeTail(d []byte) (sub remoteSub, ptid uint32, payload []byte, ok bool) {
	if len(d) < 2 {
		return sub, 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(d))
	if n == noSubTopic {
		if len(d) < 2+4+4 {
			return sub, 0, nil, false
		}
		sub.id = binary.BigEndian.Uint32(d[2:])
		return sub, binary.BigEndian.Uint32(d[6:]), d[10:], true
	}
	if len(d) < 2+n+4 {
		return sub, 0, nil, false
	}
	sub.name = d[2 : 2+n]
	return sub, binary.BigEndian.Uint32(d[2+n:]), d[2+n+4:], true
}

// deliverRemote delivers a Publish from another node to the subscribers
// here of the named topic, or (name nil) to the client with ETID id. A
// sub-topic by name gets this node's ID for it, 0 if it has none.
func (b *Broker) deliverRemote(name []byte, id uint32, rs remoteSub, ptid uint32, payload []byte) {
	r := &b.reg
	r.mu.RLock()
	defer r.mu.RUnlock()
	sub := rs.id
	if rs.name != nil {
		if st := r.subNames[string(rs.name)]; st != nil {
			sub = st.id
		}
	}
	if name == nil {
		if s := r.clients[id]; s != nil {
			msg := (&smq.Publish{TID: id, PTID: ptid, SubTID: sub, Payload: payload}).Append(nil)
			if s.send(msg) {
				b.st.delivered.Add(1)
			}
		}
		return
	}
	t := r.topics[string(name)]
	if t == nil || len(t.subs) == 0 {
		return
	}
	msg := (&smq.Publish{TID: t.tid, PTID: ptid, SubTID: sub, Payload: payload}).Append(nil)
	b.st.delivered.Add(uint64(b.fanOutLocked(t, msg)))
}

// stop says goodbye to the other nodes and ends the dispatcher. The
// connection stays open: it is the caller's.
func (cn *clusterNode) stop() {
	select {
	case <-cn.done:
	default:
		close(cn.done)
	}
	cn.loops.Wait()
	_ = cn.nc.Flush()
}

// stats returns the node's gauges and counters.
func (cn *clusterNode) stats() *ClusterStats {
	cn.mu.Lock()
	names := cn.peerNames()
	dropped := cn.gone
	for sub := range cn.live {
		if n, err := sub.Dropped(); err == nil {
			dropped += uint64(n)
		}
	}
	cn.mu.Unlock()
	slices.Sort(names)
	return &ClusterStats{
		Node: cn.cfg.Node, Peers: names,
		MessagesOut: cn.out.Load(), MessagesIn: cn.in_.Load(),
		Dropped: dropped, Pending: len(cn.in) + len(cn.ctl),
		TakeoversOut: cn.takeOut.Load(), TakeoversIn: cn.takeIn.Load(),
		PeersLost: cn.lost.Load(), RequestTimeouts: cn.timeouts.Load(), Barriers: cn.barriers.Load(),
	}
}
