package broker

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// BenchmarkClusterFanout and BenchmarkClusterFanin are BenchmarkFanoutPipe
// and BenchmarkFanin/pipe (64-byte messages, 1 → 20 and 20 → 1, clients
// served in-process as the gateway reaches the embedded broker) on:
//
//	single   one broker, no cluster: the figure the others compare with
//	one-node a cluster of three with every client on one node (what the
//	         cluster code costs when nothing crosses)
//	cross    the publishers on one node, the subscribers on another
//	spread   the clients on all three nodes: 1 → 20 from node 0 to
//	         subscribers on nodes 1 and 2; 20 → 1 from nodes 0 and 2 to
//	         node 1
//
// All nodes run in this one process, on the same cores: a cross-node figure
// pays for every node's work, the NATS routes between them included.
func BenchmarkClusterFanout(b *testing.B) { benchCluster(b, 1, 20) }

func BenchmarkClusterFanin(b *testing.B) { benchCluster(b, 20, 1) }

func benchCluster(b *testing.B, npubs, nsubs int) {
	b.Run("single", func(b *testing.B) { benchFlow(b, "pipe", npubs, nsubs, 64) })
	b.Run("one-node", func(b *testing.B) {
		n := startBenchCluster(b, 3)
		benchFlowOn(b, "pipe", n[:1], n[:1], npubs, nsubs, 64)
	})
	b.Run("cross", func(b *testing.B) {
		n := startBenchCluster(b, 3)
		benchFlowOn(b, "pipe", n[:1], n[1:2], npubs, nsubs, 64)
	})
	b.Run("spread", func(b *testing.B) {
		n := startBenchCluster(b, 3)
		if npubs == 1 {
			benchFlowOn(b, "pipe", n[:1], n[1:], npubs, nsubs, 64)
		} else {
			benchFlowOn(b, "pipe", []benchNode{n[0], n[2]}, n[1:2], npubs, nsubs, 64)
		}
	})
}

// startBenchCluster starts n brokers, each on an embedded NATS server
// routed to the others on loopback, and waits until all know each other.
func startBenchCluster(b *testing.B, n int) []benchNode {
	var nodes []benchNode
	var routes []*url.URL
	for i := range n {
		name := fmt.Sprintf("bench-%d", i)
		opts := &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			Authorization: fmt.Sprintf("b%x", rand.Uint64()),
			Cluster:       server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: -1},
			Routes:        slices.Clone(routes)}
		ns, err := server.NewServer(opts)
		if err != nil {
			b.Fatal(err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			b.Fatal("NATS not ready")
		}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: ns.ClusterAddr().String()})
		nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoEcho(), nats.Token(opts.Authorization))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() })
		nodes = append(nodes, startBenchNode(b, "pipe", Config{Cluster: &Cluster{Conn: nc, Node: name}}))
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, node := range nodes {
		for len(node.br.Stats().Cluster.Peers) != n-1 {
			if time.Now().After(deadline) {
				b.Fatal("the nodes did not find each other")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nodes
}
