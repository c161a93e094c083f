package app

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/cluster"
	"github.com/smqgw/smqgw/gateway"
)

// brokerCollector reports the embedded broker's Stats when scraped: the
// smqgw_broker_* metrics. One is registered per gateway.Metrics, the first
// time a build has an embedded broker; it reports the one in use.
type brokerCollector struct {
	b    atomic.Pointer[broker.Broker]
	node atomic.Pointer[cluster.Node] // the broker's cluster node, nil when none
}

// registerBroker makes m report b's metrics, and those of its cluster
// node (the smqgw_cluster_* metrics) when node is not nil.
func registerBroker(m *gateway.Metrics, b *broker.Broker, node *cluster.Node) {
	c := &brokerCollector{}
	if err := m.Registry().Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err) // a name taken by another collector: a bug
		}
		c = are.ExistingCollector.(*brokerCollector)
	}
	c.b.Store(b)
	c.node.Store(node)
}

func brokerDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("smqgw_broker_"+name, help, labels, nil)
}

var (
	brokerSessions      = brokerDesc("sessions", "Sessions open on the embedded broker.")
	brokerTopics        = brokerDesc("topics", "Topics on the embedded broker (each held by a session that created, subscribed to or observed it).")
	brokerSubTopics     = brokerDesc("subtopics", "Sub-topics on the embedded broker.")
	brokerSubscriptions = brokerDesc("subscriptions", "Subscriptions of the embedded broker's sessions to its topics.")
	brokerQueued        = brokerDesc("queued_bytes", "Bytes queued to the embedded broker's clients or being written to them (max_queued_bytes bounds them).")
	brokerConnacks      = brokerDesc("connects_total", "Connects answered by the embedded broker, by result.", "result")
	brokerPublished     = brokerDesc("messages_published_total", "Publish messages the embedded broker accepted for delivery.")
	brokerDelivered     = brokerDesc("messages_delivered_total", "Messages the embedded broker queued to subscribers and one-to-one recipients.")
	brokerDropped       = brokerDesc("messages_dropped_total", "Messages the embedded broker dropped, by reason: too_big (for a raw subscriber), unknown_id (no such topic or client), no_subscribers, slow_consumer (discarded with a slow consumer's queue).", "reason")
	brokerSlow          = brokerDesc("slow_consumer_disconnects_total", `Clients the embedded broker disconnected with "slow consumer", by the limit: queue (queue_bytes or queue_messages) or max_queued_bytes (they held the most when the broker's budget ran out).`, "limit")
	brokerRefusals      = brokerDesc("limit_refusals_total", "Subscribe, Create, Createsub and Observe requests the embedded broker refused by a limit.", "limit")
	brokerTakeovers     = brokerDesc("takeovers_total", "Sessions taken over by a newer one with the same UID.")
	brokerProtocol      = brokerDesc("protocol_errors_total", "Sessions the embedded broker closed for malformed input.")
)

func (*brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{brokerSessions, brokerTopics, brokerSubTopics, brokerSubscriptions,
		brokerQueued, brokerConnacks, brokerPublished, brokerDelivered, brokerDropped, brokerSlow,
		brokerRefusals, brokerTakeovers, brokerProtocol} {
		ch <- d
	}
	describeCluster(ch)
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b.Load()
	if b == nil {
		return
	}
	st := b.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(brokerSessions, float64(st.Sessions))
	gauge(brokerTopics, float64(st.Topics))
	gauge(brokerSubTopics, float64(st.SubTopics))
	gauge(brokerSubscriptions, float64(st.Subscriptions))
	gauge(brokerQueued, float64(st.QueuedBytes))
	counter(brokerConnacks, st.Accepted, "accepted")
	counter(brokerConnacks, st.Refused, "refused")
	counter(brokerPublished, st.Published)
	counter(brokerDelivered, st.Delivered)
	counter(brokerDropped, st.DroppedTooBig, "too_big")
	counter(brokerDropped, st.DroppedUnknownID, "unknown_id")
	counter(brokerDropped, st.DroppedNoSubscribers, "no_subscribers")
	counter(brokerDropped, st.DroppedSlowConsumer, "slow_consumer")
	counter(brokerSlow, st.SlowDisconnects-st.BudgetDisconnects, "queue")
	counter(brokerSlow, st.BudgetDisconnects, "max_queued_bytes")
	counter(brokerRefusals, st.RefusedTopicName, "max_topic_name")
	counter(brokerRefusals, st.RefusedTopicsPerSession, "max_topics_per_session")
	counter(brokerTakeovers, st.Takeovers)
	counter(brokerProtocol, st.ProtocolErrors)
	if n := c.node.Load(); n != nil {
		collectCluster(ch, st.Cluster, n)
	}
}
