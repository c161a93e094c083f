package limits

// Defaults of the embedded broker's limits: what a zero field of Broker
// means.
const (
	DefaultMaxTopicName        = 1024
	DefaultMaxTopicsPerSession = 1000
	DefaultQueueBytes          = 4 << 20
	DefaultQueueMessages       = 8192
	DefaultMaxQueuedBytes      = 256 << 20
)

// Broker bounds what clients of the embedded broker can make it hold
// ([broker] in the configuration file): topics, sub-topics and queued
// messages. A zero field takes its default; WithDefaults fills them in.
// The embedded broker frees a topic or sub-topic once no session holds it,
// so these bound what one session holds at a time.
type Broker struct {
	// MaxTopicName (max_topic_name) is the longest topic or sub-topic name,
	// in bytes, a client may Subscribe, Create or Createsub; a longer one is
	// acked with status 1 and ID 0, and the client carries on. Default 1024.
	MaxTopicName int `toml:"max_topic_name"`
	// MaxTopicsPerSession (max_topics_per_session) is how many topics and
	// sub-topics one session may hold: those it created, subscribed to or
	// observed. A request for one more is acked with status 1 and ID 0 (an
	// Observe is ignored); what the session holds is released when it
	// ends. Default 1000.
	MaxTopicsPerSession int `toml:"max_topics_per_session"`
	// QueueBytes and QueueMessages (queue_bytes, queue_messages) bound one
	// client's queue of messages not yet written to it; a client whose
	// queue overflows is disconnected with "slow consumer". Defaults 4 MiB
	// (4194304) and 8192.
	QueueBytes    int `toml:"queue_bytes"`
	QueueMessages int `toml:"queue_messages"`
	// MaxQueuedBytes (max_queued_bytes) is the broker-wide budget for
	// messages queued to clients and being written to them. A message that
	// would exceed it first disconnects the clients holding the most bytes
	// with "slow consumer", until it fits; publishers are never blocked.
	// Default 256 MiB (268435456).
	MaxQueuedBytes int `toml:"max_queued_bytes"`
}

// WithDefaults returns b with every zero (or negative) field set to its
// default.
func (b Broker) WithDefaults() Broker {
	num := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	num(&b.MaxTopicName, DefaultMaxTopicName)
	num(&b.MaxTopicsPerSession, DefaultMaxTopicsPerSession)
	num(&b.QueueBytes, DefaultQueueBytes)
	num(&b.QueueMessages, DefaultQueueMessages)
	num(&b.MaxQueuedBytes, DefaultMaxQueuedBytes)
	return b
}
