package broker

import (
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// Defaults of Config's zero fields.
const (
	DefaultConnectTimeout = 4 * time.Second
	DefaultQueueBytes     = 4 << 20
	DefaultQueueMessages  = 8192
	DefaultWriteTimeout   = 30 * time.Second
)

// Config configures a Broker. The zero value is a working broker that
// accepts every client and every topic.
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
	// means DefaultQueueBytes / DefaultQueueMessages.
	QueueBytes    int
	QueueMessages int

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

func (c *Config) queueBytes() int {
	if c.QueueBytes > 0 {
		return c.QueueBytes
	}
	return DefaultQueueBytes
}

func (c *Config) queueMessages() int {
	if c.QueueMessages > 0 {
		return c.QueueMessages
	}
	return DefaultQueueMessages
}

func (c *Config) writeTimeout() time.Duration {
	if c.WriteTimeout > 0 {
		return c.WriteTimeout
	}
	return DefaultWriteTimeout
}
