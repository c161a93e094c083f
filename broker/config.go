package broker

import (
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
)

// Defaults of Config's zero timeouts. The zero limits take theirs from
// package limits (limits.DefaultQueueBytes and so on).
const (
	DefaultConnectTimeout = 4 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
)

// Config configures a Broker. The zero value is a working broker that
// accepts every client and every topic, within the default limits.
type Config struct {
	// Logger receives one line per session end and per refusal. Nil
	// discards.
	Logger *slog.Logger

	// ConnectTimeout is how long a client has, after Init, to send Connect
	// before it gets Connack 0x02. Zero means DefaultConnectTimeout (4 s, like
	// the reference broker).
	ConnectTimeout time.Duration

	// QueueBytes and QueueMessages bound each client's outgoing queue. A
	// client that lets its queue overflow (a slow subscriber) is disconnected
	// with the reason "slow consumer"; publishers are never blocked. Zero
	// means limits.DefaultQueueBytes / limits.DefaultQueueMessages (4 MiB,
	// 8192).
	QueueBytes    int
	QueueMessages int

	// MaxQueuedBytes is the budget of the bytes queued to all clients
	// together, the batches being written to them included. A message that
	// would exceed it first disconnects the clients that hold the most with
	// "slow consumer", until it fits; publishers are never blocked. Zero
	// means limits.DefaultMaxQueuedBytes (256 MiB).
	MaxQueuedBytes int

	// MaxTopicName is the longest topic or sub-topic name a client may
	// Subscribe to, Create or Createsub; a longer one is acked with status
	// 1 and ID 0. Zero means limits.DefaultMaxTopicName (1024 bytes).
	MaxTopicName int

	// MaxTopicsPerSession bounds the topics and sub-topics one session
	// holds: those it created, subscribed to or observed. A request for one
	// more is acked with status 1 and ID 0 (an Observe is ignored). A topic
	// or sub-topic no session holds is freed. Zero means
	// limits.DefaultMaxTopicsPerSession (1000).
	MaxTopicsPerSession int

	// WriteTimeout bounds one write to a client. A client that does not read
	// for that long is disconnected. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// TrustedProxies lists the peer addresses whose X-Forwarded-For header
	// is believed: for them the Init IP is the client address the proxy
	// names (the last entry). Empty: the header is never believed.
	TrustedProxies []netip.Prefix

	// CheckOrigin decides WebSocket upgrades by their request. Nil accepts
	// every origin, like the reference broker; a broker reachable from
	// browsers on other sites should set it.
	CheckOrigin func(r *http.Request) bool

	// Authenticate decides a Connect. It returns smq.CodeAccepted or a
	// refusal code with a reason, which the client receives in its Connack.
	// Nil accepts everyone. It runs on the client's goroutine and may block
	// that client only.
	Authenticate func(req *ConnectRequest) (smq.ConnackCode, string)

	// PermitTopic decides whether a client may Subscribe to (op
	// smq.TypeSubscribe) or Create (smq.TypeCreate) a topic. A denied request
	// is acked with status 1 and ID 0. Nil permits all.
	PermitTopic func(c *Client, op smq.Type, topic string) bool

	// PermitSubTopic decides a Createsub the same way. Nil permits all.
	PermitSubTopic func(c *Client, name string) bool

	// OnPublish sees every Publish (reassembled PubFrag included) after the
	// ptid check and before delivery; returning false drops it silently. p
	// and its payload are only valid during the call. Nil delivers all.
	OnPublish func(c *Client, p *smq.Publish) bool

	// Cluster, if set, makes this broker one node of a cluster: its
	// clients and those of the other nodes see one broker. Nil: a broker
	// on its own, which pays nothing for the cluster code.
	Cluster *Cluster
}

// Peer describes where a connection comes from.
type Peer struct {
	// IP is the client address as text, sent in Init (no "::ffff:" prefix).
	IP string
	// RemoteAddr is the socket peer address; it may differ from IP behind a
	// trusted proxy, and is empty for in-process connections.
	RemoteAddr string
	// Header holds the bootstrap request's headers (nil when there were none).
	Header http.Header
	// WebSocket is true for WebSocket clients.
	WebSocket bool
}

// Client is what hooks learn about a connected client.
type Client struct {
	ETID uint32
	UID  string
	Peer Peer
}

// ConnectRequest is the input of Config.Authenticate.
type ConnectRequest struct {
	Peer    Peer
	Seed    uint32 // the seed sent in Init, for hashed credentials
	Connect smq.Connect
}

func (c *Config) connectTimeout() time.Duration {
	if c.ConnectTimeout > 0 {
		return c.ConnectTimeout
	}
	return DefaultConnectTimeout
}

// limits returns the limits c sets, defaults filled in.
func (c *Config) limits() limits.Broker {
	return limits.Broker{
		MaxTopicName:        c.MaxTopicName,
		MaxTopicsPerSession: c.MaxTopicsPerSession,
		QueueBytes:          c.QueueBytes,
		QueueMessages:       c.QueueMessages,
		MaxQueuedBytes:      c.MaxQueuedBytes,
	}.WithDefaults()
}

func (c *Config) writeTimeout() time.Duration {
	if c.WriteTimeout > 0 {
		return c.WriteTimeout
	}
	return DefaultWriteTimeout
}

// Cluster joins a broker to the other nodes of a cluster over NATS, so
// that clients on every node see one SMQ broker (see cluster.go).
type Cluster struct {
	// Conn is the connection to NATS, made with nats.NoEcho(): a node
	// must not receive what it publishes. It stays the caller's; close it
	// after the broker's Shutdown.
	Conn *nats.Conn

	// Node names this node, unique in the cluster; letters, digits, '-'
	// and '_' (it is a NATS subject token).
	Node string

	// Prefix begins every NATS subject the cluster uses, so that several
	// clusters (or other applications) can share one NATS. Empty means
	// DefaultClusterPrefix.
	Prefix string

	// Heartbeat is how often this node tells the others it is alive;
	// PeerTimeout is how long a silent peer is still believed alive:
	// after it, the peer's clients count as gone. Zero means
	// DefaultHeartbeat and DefaultPeerTimeout.
	Heartbeat   time.Duration
	PeerTimeout time.Duration

	// RequestTimeout bounds each question one node asks the others (who
	// holds a UID, whether an ETID is taken, whether the others know of a
	// new subscription). Zero means DefaultClusterRequestTimeout.
	RequestTimeout time.Duration

	// randID, if set, replaces the random source of ETIDs (tests).
	randID func() uint32
}

// Defaults of Cluster's zero fields.
const (
	DefaultClusterPrefix         = "smqgw"
	DefaultHeartbeat             = time.Second
	DefaultPeerTimeout           = 5 * time.Second
	DefaultClusterRequestTimeout = 2 * time.Second
)
