package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/cluster"
)

// The smqgw_cluster_* metrics, reported with the embedded broker's by
// brokerCollector when the broker is a cluster node: from its
// broker.ClusterStats and the cluster.Node.

func clusterDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("smqgw_cluster_"+name, help, labels, nil)
}

var (
	clusterPeers     = clusterDesc("peers", "Other cluster nodes heard from within peer_timeout.")
	clusterRoutes    = clusterDesc("routes", "Route connections of the embedded NATS server to the other nodes (0 with an external NATS).")
	clusterConnected = clusterDesc("connected", "1 when the node's connection to NATS is up, else 0.")
	clusterMessages  = clusterDesc("messages_total", "Publish messages sent to (out) and received from (in) the other nodes.", "direction")
	clusterDropped   = clusterDesc("dropped_total", "Messages from the other nodes lost before delivery: this node did not take them off NATS fast enough.")
	clusterPending   = clusterDesc("pending", "Messages from the other nodes waiting to be delivered.")
	clusterTakeovers = clusterDesc("takeovers_total", "Sessions taken over across nodes: out, a session here taken over by a connection on another node; in, a session here that took over one held elsewhere.", "direction")
	clusterPeersLost = clusterDesc("peers_lost_total", "Peers that went silent for peer_timeout.")
	clusterTimeouts  = clusterDesc("request_timeouts_total", "Questions to the other nodes left unanswered within request_timeout.")
	clusterBarriers  = clusterDesc("barriers_total", "Rounds of questions to every peer that made sure they knew of new subscriptions before a Connack or Suback (sessions subscribing at once share one).")
)

func describeCluster(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clusterPeers, clusterRoutes, clusterConnected, clusterMessages,
		clusterDropped, clusterPending, clusterTakeovers, clusterPeersLost, clusterTimeouts, clusterBarriers} {
		ch <- d
	}
}

// collectCluster reports a node's metrics; st nil (a broker that has not
// started its cluster side) reports zeros.
func collectCluster(ch chan<- prometheus.Metric, st *broker.ClusterStats, n *cluster.Node) {
	if st == nil {
		st = &broker.ClusterStats{}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	connected := 0.0
	if n.Connected() {
		connected = 1
	}
	gauge(clusterPeers, float64(len(st.Peers)))
	gauge(clusterRoutes, float64(n.Routes()))
	gauge(clusterConnected, connected)
	counter(clusterMessages, st.MessagesIn, "in")
	counter(clusterMessages, st.MessagesOut, "out")
	counter(clusterDropped, st.Dropped)
	gauge(clusterPending, float64(st.Pending))
	counter(clusterTakeovers, st.TakeoversIn, "in")
	counter(clusterTakeovers, st.TakeoversOut, "out")
	counter(clusterPeersLost, st.PeersLost)
	counter(clusterTimeouts, st.RequestTimeouts)
	counter(clusterBarriers, st.Barriers)
}
