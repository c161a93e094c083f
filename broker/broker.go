// Package broker is an embedded SMQ broker that behaves on the wire like the
// reference broker of Barracuda App Server / Mako Server, minus its bugs:
// Unobserve works, and a message too large for a raw subscriber is dropped for
// that subscriber instead of being sent with a wrapped length.
//
// Unlike the reference broker, it cannot be grown without bound by its
// clients: a topic or sub-topic is freed once no session holds it (created,
// subscribed to or observed it), names and the topics one session holds are
// bounded, and so are the bytes queued to each client and to all of them
// together (Config's limits; Stats counts what they refuse).
//
// One Broker serves raw SMQ (both bootstrap forms) and WebSocket on one
// http.Handler, and accepts already-bootstrapped connections with ServeConn,
// which is how the gateway reaches it in-process.
package broker

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smqgw/smqgw/limits"
)

// ErrClosed is returned by Serve and ServeConn after Shutdown.
var ErrClosed = errors.New("broker: closed")

// Stats are the broker's gauges, and its counters since New.
type Stats struct {
	Sessions      int64 // open sessions (connected or not yet)
	Topics        int   // topics held by a session
	SubTopics     int   // sub-topics held by a session
	Subscriptions int   // subscriptions of all sessions to all topics
	QueuedBytes   int64 // bytes queued to clients or being written to them

	Accepted  uint64 // Connack 0x00 sent
	Refused   uint64 // refusing Connack sent
	Published uint64 // Publish messages accepted for delivery
	Delivered uint64 // messages queued to subscribers

	// Messages dropped, by why.
	DroppedTooBig        uint64 // too big for a raw subscriber (per subscriber)
	DroppedUnknownID     uint64 // published to an ID that is no topic and no client
	DroppedNoSubscribers uint64 // published to a topic without subscribers
	DroppedSlowConsumer  uint64 // discarded from the queues of slow consumers (per subscriber)

	// SlowDisconnects counts the clients disconnected as slow consumers:
	// for overflowing their queue (QueueBytes, QueueMessages), or, of
	// those, BudgetDisconnects for holding the most when the broker's
	// budget (MaxQueuedBytes) ran out.
	SlowDisconnects   uint64
	BudgetDisconnects uint64

	// Requests refused by a limit: a name over MaxTopicName, a topic or
	// sub-topic beyond MaxTopicsPerSession.
	RefusedTopicName        uint64
	RefusedTopicsPerSession uint64

	ProtocolErrors uint64 // sessions closed for malformed input
	Takeovers      uint64 // sessions kicked by a newer one with the same UID

	// Cluster is set when the broker is a node of a cluster.
	Cluster *ClusterStats
}

// ClusterStats are a cluster node's gauges, and its counters since New.
type ClusterStats struct {
	Node  string   // this node's name
	Peers []string // names of the other nodes heard from within PeerTimeout, sorted

	MessagesOut uint64 // Publish messages sent to the other nodes (to a topic, or one-to-one)
	MessagesIn  uint64 // Publish messages received from the other nodes
	// Dropped counts messages from the other nodes lost before delivery:
	// this node did not take them off NATS fast enough.
	Dropped uint64
	Pending int // messages from the other nodes waiting to be delivered

	TakeoversOut    uint64 // sessions here taken over by a connection on another node
	TakeoversIn     uint64 // sessions here that took over one held on another node
	PeersLost       uint64 // peers that went silent for PeerTimeout
	RequestTimeouts uint64 // questions to the other nodes left unanswered in RequestTimeout
	// Barriers counts the rounds of questions to every peer that made sure
	// the others knew of new subscriptions before a Connack or Suback;
	// sessions subscribing at once share a round.
	Barriers uint64
}

type counters struct {
	sessions                                                   atomic.Int64
	accepted, refused, published, delivered                    atomic.Uint64
	droppedTooBig, droppedUnknown, droppedNoSubscribers        atomic.Uint64
	droppedSlow, slowQueue, slowBudget                         atomic.Uint64
	refusedTopicName, refusedTopics, protocolErrors, takeovers atomic.Uint64
}

// Broker is an SMQ broker. Create it with New.
type Broker struct {
	cfg Config
	st  counters
	lim atomic.Pointer[limits.Broker]

	// queued counts the bytes all sessions' queues hold (queued or being
	// written); a message is reserved here before it is queued. It has a
	// cache line of its own: every send and every write changes it.
	_      [64]byte
	queued atomic.Int64
	_      [56]byte
	shedMu sync.Mutex // one shed at a time

	mu       sync.Mutex
	closed   bool
	servers  map[*http.Server]struct{}
	sessions map[*session]struct{}
	sessWG   sync.WaitGroup

	reg registry
	cl  *clusterNode // nil: not in a cluster
}

// New returns a broker configured by cfg.
func New(cfg Config) *Broker {
	b := &Broker{
		cfg:      cfg,
		servers:  make(map[*http.Server]struct{}),
		sessions: make(map[*session]struct{}),
	}
	lim := cfg.limits()
	b.lim.Store(&lim)
	b.reg.init()
	if cfg.Cluster != nil {
		b.reg.split = true
		b.cl = newClusterNode(b, *cfg.Cluster)
		b.reg.subjects = b.cl.topicSubject
	}
	return b
}

// SetLimits puts new limits in force (zero fields take their defaults), as
// a configuration reload does: names, the topics a session holds and the
// budget are checked against them from now on, for every session; the
// queue sizes apply to sessions that start afterwards. What sessions
// already hold is left to them.
func (b *Broker) SetLimits(l limits.Broker) {
	l = l.WithDefaults()
	b.lim.Store(&l)
}

// Limits returns the limits in force, defaults filled in.
func (b *Broker) Limits() limits.Broker { return *b.lim.Load() }

func (b *Broker) limits() *limits.Broker { return b.lim.Load() }

// Stats returns a snapshot of the broker's gauges and counters.
func (b *Broker) Stats() Stats {
	topics, subTopics, subscriptions := b.reg.counts()
	budget := b.st.slowBudget.Load()
	var cs *ClusterStats
	if b.cl != nil {
		cs = b.cl.stats()
	}
	return Stats{
		Cluster: cs,

		Sessions:      b.st.sessions.Load(),
		Topics:        topics,
		SubTopics:     subTopics,
		Subscriptions: subscriptions,
		QueuedBytes:   b.queued.Load(),

		Accepted:  b.st.accepted.Load(),
		Refused:   b.st.refused.Load(),
		Published: b.st.published.Load(),
		Delivered: b.st.delivered.Load(),

		DroppedTooBig:        b.st.droppedTooBig.Load(),
		DroppedUnknownID:     b.st.droppedUnknown.Load(),
		DroppedNoSubscribers: b.st.droppedNoSubscribers.Load(),
		DroppedSlowConsumer:  b.st.droppedSlow.Load(),

		SlowDisconnects:   b.st.slowQueue.Load() + budget,
		BudgetDisconnects: budget,

		RefusedTopicName:        b.st.refusedTopicName.Load(),
		RefusedTopicsPerSession: b.st.refusedTopics.Load(),

		ProtocolErrors: b.st.protocolErrors.Load(),
		Takeovers:      b.st.takeovers.Load(),
	}
}

// reserve counts n more bytes against the budget (MaxQueuedBytes). When
// they exceed it, the sessions holding the most are disconnected as slow
// consumers first, until the bytes fit (or nothing more can be freed). It
// never waits for a client.
func (b *Broker) reserve(n int64) {
	budget := int64(b.limits().MaxQueuedBytes)
	if b.queued.Add(n) > budget {
		b.shed(budget)
	}
}

// shed disconnects the sessions that hold the most bytes, biggest first,
// until what all hold fits the budget.
func (b *Broker) shed(budget int64) {
	b.shedMu.Lock()
	defer b.shedMu.Unlock()
	for b.queued.Load() > budget {
		v := b.biggest()
		if v == nil {
			return
		}
		v.slow(&b.st.slowBudget)
	}
}

// biggest returns the session whose queue holds the most bytes, nil if
// none holds any.
func (b *Broker) biggest() *session {
	b.mu.Lock()
	defer b.mu.Unlock()
	var big *session
	most := int64(0)
	for s := range b.sessions {
		if h := s.q.held.Load(); h > most {
			big, most = s, h
		}
	}
	return big
}

// Serve accepts HTTP connections on l and serves SMQ on every path. It
// returns ErrClosed after Shutdown.
func (b *Broker) Serve(l net.Listener) error {
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	if b.cfg.Logger != nil {
		srv.ErrorLog = slog.NewLogLogger(b.cfg.Logger.Handler(), slog.LevelDebug)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.servers[srv] = struct{}{}
	b.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return err
}

// Shutdown stops accepting, sends every client Disconnect "shutdown", and
// waits until all sessions have ended or ctx is done, when it closes the rest
// and returns ctx's error.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	servers := b.servers
	b.servers = map[*http.Server]struct{}{}
	sessions := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		sessions = append(sessions, s)
	}
	b.mu.Unlock()
	for srv := range servers {
		_ = srv.Close() // hijacked connections are ours, not the server's
	}
	for _, s := range sessions {
		s.kick(reasonShutdown)
	}
	done := make(chan struct{})
	go func() { b.sessWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		b.mu.Lock()
		for s := range b.sessions {
			s.abort()
		}
		b.mu.Unlock()
		<-done
		err = ctx.Err()
	}
	if b.cl != nil {
		b.cl.stop()
	}
	return err
}
