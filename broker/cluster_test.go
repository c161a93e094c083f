package broker_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// clusterNode is one node of a test cluster: an embedded NATS server
// routed to the others, and a broker on it.
type clusterNode struct {
	name  string
	ns    *server.Server
	nc    *nats.Conn
	conns *smqtest.Killable
	*testBroker
	killOnce sync.Once
}

// Test timing: heartbeats often, peers lost after a silence long enough
// that a loaded machine does not lose a live one.
const (
	testHeartbeat   = 100 * time.Millisecond
	testPeerTimeout = 3 * time.Second
)

// startCluster starts n nodes on loopback, routed to each other, and waits
// until every node has heard from all the others. edit, if not nil, may
// change each node's cluster configuration.
func startCluster(t *testing.T, n int, edit func(i int, c *broker.Cluster)) []*clusterNode {
	t.Helper()
	return startClusterVia(t, n, edit, nil)
}

// startClusterVia is startCluster with the route addresses the later nodes
// are given mapped by via (nil: as they are), and no node advertising its
// own: each node routes only where it is told.
func startClusterVia(t *testing.T, n int, edit func(i int, c *broker.Cluster), via func(addr string) string) []*clusterNode {
	t.Helper()
	var nodes []*clusterNode
	var routes []*url.URL
	for i := range n {
		name := fmt.Sprintf("node-%d", i)
		// NATS starts its routes only with a client listener: one on
		// loopback, with a password only the node's own connection has.
		opts := &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			Authorization: fmt.Sprintf("t%x", rand.Uint64()),
			Cluster:       server.ClusterOpts{Name: "smqgw-test", Host: "127.0.0.1", Port: -1, NoAdvertise: via != nil},
			Routes:        slices.Clone(routes)}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s: NATS not ready", name)
		}
		addr := ns.ClusterAddr().String()
		if via != nil {
			addr = via(addr)
		}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: addr})
		nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoEcho(), nats.Name(name),
			nats.Token(opts.Authorization))
		if err != nil {
			t.Fatal(err)
		}
		c := &broker.Cluster{Conn: nc, Node: name, Heartbeat: testHeartbeat, PeerTimeout: testPeerTimeout}
		if edit != nil {
			edit(i, c)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		node := &clusterNode{name: name, ns: ns, nc: nc, conns: smqtest.Track(l)}
		// Cleanups run last first: the broker's (registered by
		// startBrokerOn) before the connection's and the server's.
		t.Cleanup(node.kill)
		node.testBroker = startBrokerOn(t, broker.Config{Cluster: c}, node.conns)
		nodes = append(nodes, node)
	}
	for _, node := range nodes {
		waitPeers(t, node, n-1)
	}
	return nodes
}

// kill ends the node as a crash would: its clients' connections and its
// NATS routes close, and the others hear no goodbye.
func (c *clusterNode) kill() {
	c.killOnce.Do(func() {
		c.ns.Shutdown()
		c.ns.WaitForShutdown()
		c.nc.Close()
		c.conns.Kill()
	})
}

// waitPeers waits until node has heard from want peers.
func waitPeers(t *testing.T, node *clusterNode, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to count %d peers", node.name, want), func() bool {
		return len(node.Stats().Cluster.Peers) == want
	})
}

// waitFor waits until cond holds, failing the test after a generous time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// seqPayload numbers a message of publisher p.
func seqPayload(p string, i int) []byte {
	return binary.BigEndian.AppendUint32([]byte(p+":"), uint32(i))
}

// TestClusterPubSub: a Publish on one node reaches the subscribers of its
// topic on every node, raw and WebSocket, in publisher order, each under
// the TID and sub-topic ID its own node gave, with the publisher's ETID.
func TestClusterPubSub(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	pub := smqtest.Connect(t, nodes[0].Addr, "publisher-0")
	subRaw := smqtest.Connect(t, nodes[1].Addr, "subscriber-1")
	subWS := smqtest.ConnectWS(t, nodes[2].Addr, "subscriber-2")
	local := smqtest.Connect(t, nodes[0].Addr, "subscriber-0")
	subs := []*smqtest.Conn{subRaw, subWS, local}

	tids := make([]uint32, len(subs))
	subtids := make([]uint32, len(subs))
	for i, c := range subs {
		tids[i] = c.Subscribe("sensors/temp")
		subtids[i] = c.Createsub("celsius")
	}
	ptid := pub.Create("sensors/temp")
	psub := pub.Createsub("celsius")
	for i, id := range []uint32{pub.ETID, subRaw.ETID, subWS.ETID, local.ETID} {
		if id&(1<<31) == 0 {
			t.Errorf("client %d: ETID %#x without the top bit", i, id)
		}
	}
	if ptid&(1<<31) != 0 {
		t.Errorf("topic ID %#x has the top bit, which is the clients'", ptid)
	}

	const n = 2000
	for i := range n {
		pub.Publish(ptid, psub, seqPayload("p", i))
	}
	for j, c := range subs {
		for i := range n {
			c.Expect(smqtest.PublishMsg(tids[j], pub.ETID, subtids[j], seqPayload("p", i)))
		}
		c.Barrier()
	}

	// No sub-topic stays none, even where a sub-topic has the empty name;
	// an ID no sub-topic has travels as it is, as on one broker.
	subRaw.Createsub("")
	pub.Publish(ptid, 0, []byte("none"))
	pub.Publish(ptid, 0x99, []byte("raw id"))
	for j, c := range subs {
		c.Expect(smqtest.PublishMsg(tids[j], pub.ETID, 0, []byte("none")))
		c.Expect(smqtest.PublishMsg(tids[j], pub.ETID, 0x99, []byte("raw id")))
	}

	// Both ways: a subscriber publishes back; the topic it publishes to
	// is its own node's.
	back := pub.Subscribe("replies")
	rtid := subWS.Create("replies")
	subWS.Publish(rtid, 0, []byte("from node 2"))
	pub.Expect(smqtest.PublishMsg(back, subWS.ETID, 0, []byte("from node 2")))

	st := nodes[0].Stats().Cluster
	if st.MessagesOut < n {
		t.Errorf("node-0 sent %d messages to the cluster, want at least %d", st.MessagesOut, n)
	}
	if got := nodes[1].Stats().Cluster.MessagesIn; got < n {
		t.Errorf("node-1 received %d messages from the cluster, want at least %d", got, n)
	}
}

// TestClusterOneToOne: a Publish to the ETID of a client on another node
// reaches it, and the reply to its ptid comes back; an ETID nobody has is
// dropped.
func TestClusterOneToOne(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	a := smqtest.Connect(t, nodes[0].Addr, "asker-000")
	b := smqtest.ConnectWS(t, nodes[2].Addr, "answerer-2")
	sub := a.Createsub("question")
	bsub := b.Createsub("question")

	q := a.Publish(b.ETID, sub, []byte("what time is it?"))
	_ = q
	got := b.Expect(smqtest.PublishMsg(b.ETID, a.ETID, bsub, []byte("what time is it?")))
	b.Publish(smq.PTID(got), 0, []byte("noon"))
	a.Expect(smqtest.PublishMsg(a.ETID, b.ETID, 0, []byte("noon")))

	a.Publish(0x8000_0077, 0, []byte("nobody"))
	a.Barrier()
	b.Barrier()
}

// TestClusterObserve: counts are the cluster's, and an observed client on
// another node is reported gone.
func TestClusterObserve(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	o := smqtest.Connect(t, nodes[0].Addr, "observer-0")
	pre := smqtest.Connect(t, nodes[2].Addr, "early-sub-2")
	pre.Subscribe("counted")
	tid := o.Create("counted")
	o.Send(smq.Observe{ID: tid})
	o.ExpectRaw(smqtest.ChangeRaw(tid, 1)) // node 2's subscriber

	s1 := smqtest.Connect(t, nodes[1].Addr, "count-sub-1")
	s1.Subscribe("counted")
	o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
	s0 := smqtest.ConnectWS(t, nodes[0].Addr, "count-sub-0")
	s0.Subscribe("counted")
	o.ExpectRaw(smqtest.ChangeRaw(tid, 3))
	pre.Close()
	o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
	s1.Send(smq.Disconnect{})
	o.ExpectRaw(smqtest.ChangeRaw(tid, 1))

	// A peer on another node.
	p := smqtest.ConnectWS(t, nodes[1].Addr, "observed-peer")
	o.Send(smq.Observe{ID: p.ETID})
	o.Barrier() // no immediate Change for a peer
	p.Send(smq.Disconnect{Reason: "bye"})
	o.ExpectRaw(smqtest.ChangeRaw(p.ETID, 0))

	// An ETID nobody has: an immediate Change(id, 0), as for an unknown TID.
	o.Send(smq.Observe{ID: 0x8000_0042})
	o.ExpectRaw(smqtest.ChangeRaw(0x8000_0042, 0))
	o.Barrier()
}

// TestClusterTakeover: a UID connecting on another node takes the session
// over as on one broker: the old one gets Disconnect "reconnect", the new
// one the same ETID, and one-to-one messages follow it.
func TestClusterTakeover(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	first := smqtest.Connect(t, nodes[0].Addr, "device-42")
	o := smqtest.Connect(t, nodes[2].Addr, "watcher-2")
	o.Send(smq.Observe{ID: first.ETID})
	o.Barrier()

	second := smqtest.ConnectWS(t, nodes[1].Addr, "device-42")
	if second.ETID != first.ETID {
		t.Errorf("takeover across nodes: ETID %#x, want %#x", second.ETID, first.ETID)
	}
	first.ExpectDisconnect("reconnect")
	o.ExpectRaw(smqtest.ChangeRaw(first.ETID, 0)) // as on one broker
	msg := o.Publish(second.ETID, 0, []byte("to the new owner"))
	_ = msg
	second.Expect(smqtest.PublishMsg(second.ETID, o.ETID, 0, []byte("to the new owner")))

	// And back to the first node.
	third := smqtest.Connect(t, nodes[0].Addr, "device-42")
	if third.ETID != first.ETID {
		t.Errorf("second takeover: ETID %#x, want %#x", third.ETID, first.ETID)
	}
	second.ExpectDisconnect("reconnect")
	o.Publish(third.ETID, 0, []byte("again"))
	third.Expect(smqtest.PublishMsg(third.ETID, o.ETID, 0, []byte("again")))
	if got := nodes[0].Stats().Cluster.TakeoversIn; got != 1 {
		t.Errorf("node-0 took over %d sessions from other nodes, want 1", got)
	}
	if got := nodes[1].Stats().Cluster.TakeoversOut; got != 1 {
		t.Errorf("node-1 let %d sessions go to other nodes, want 1", got)
	}
}

// TestClusterUniqueETIDs: an ETID a client of another node has is not
// handed out again.
func TestClusterUniqueETIDs(t *testing.T) {
	t.Parallel()
	var taken uint32
	var mu sync.Mutex
	nodes := startCluster(t, 2, func(i int, c *broker.Cluster) {
		if i == 1 {
			// Node 1 draws the ETID node 0 gave first, then others.
			n := uint32(0)
			broker.SetClusterRand(c, func() uint32 {
				mu.Lock()
				defer mu.Unlock()
				n++
				if n <= 3 {
					return taken
				}
				return 0x1234_5678 + n
			})
		}
	})
	a := smqtest.Connect(t, nodes[0].Addr, "first-client")
	mu.Lock()
	taken = a.ETID
	mu.Unlock()
	b := smqtest.Connect(t, nodes[1].Addr, "second-client")
	if b.ETID == a.ETID {
		t.Fatalf("two clients on two nodes share ETID %#x", a.ETID)
	}
	b.Publish(a.ETID, 0, []byte("hi"))
	a.Expect(smqtest.PublishMsg(a.ETID, b.ETID, 0, []byte("hi")))
}

// TestClusterNodeDeath: a node that dies ends its sessions; the others
// carry on with nothing lost between them, and counts and observed peers
// converge.
func TestClusterNodeDeath(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	pub := smqtest.Connect(t, nodes[0].Addr, "stream-pub")
	o := smqtest.Connect(t, nodes[0].Addr, "stream-observer")
	live := smqtest.Connect(t, nodes[1].Addr, "stream-sub-1")
	doomed := smqtest.ConnectWS(t, nodes[2].Addr, "stream-sub-2")
	ltid := live.Subscribe("stream")
	doomed.Subscribe("stream")
	tid := pub.Create("stream")
	o.Send(smq.Observe{ID: tid})
	o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
	o.Send(smq.Observe{ID: doomed.ETID})
	o.Barrier()

	const n = 3000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			live.Expect(smqtest.PublishMsg(ltid, pub.ETID, 0, seqPayload("s", i)))
		}
	})
	for i := range n {
		pub.Publish(tid, 0, seqPayload("s", i))
		if i == n/3 {
			nodes[2].kill()
		}
	}
	wg.Wait()
	// Node 2's clients lost their node; they would reconnect elsewhere.
	for { // what reached it before, then the end
		f, err := doomed.ReadFrame(smqtest.DefaultTimeout)
		if err != nil {
			break
		}
		if smq.Type(f.Msg[0]) != smq.TypePublish {
			t.Fatalf("node-2's client got %s before its node died", smqtest.Describe(f.Msg))
		}
	}
	expectChanges(t, o, smqtest.ChangeRaw(tid, 1), smqtest.ChangeRaw(doomed.ETID, 0))
	waitPeers(t, nodes[0], 1)
	waitPeers(t, nodes[1], 1)
	if got := nodes[0].Stats().Cluster.PeersLost; got != 1 {
		t.Errorf("node-0 lost %d peers, want 1", got)
	}
	live.Barrier()
}

// TestClusterShutdownGoodbye: a node shutting down says so; the others
// drop it at once, not after PeerTimeout.
func TestClusterShutdownGoodbye(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, func(i int, c *broker.Cluster) { c.PeerTimeout = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[1].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, nodes[0], 0)
}

// expectChanges expects the raw Change frames want, in any order.
func expectChanges(t *testing.T, c *smqtest.Conn, want ...[]byte) {
	t.Helper()
	for range want {
		f := c.ReadFull()
		i := slices.IndexFunc(want, func(w []byte) bool { return bytes.Equal(w, f.Raw) })
		if i < 0 {
			t.Fatalf("got %s, want one of %d Changes", smqtest.Describe(f.Msg), len(want))
		}
		want = slices.Delete(want, i, i+1)
	}
}

// TestClusterConnectStorm: clients connecting and subscribing at once on
// one node share the rounds of questions to the others, and each still
// receives what another node publishes right after its Suback.
func TestClusterConnectStorm(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	pub := smqtest.Connect(t, nodes[0].Addr, "storm-publisher")
	const n = 100
	before := nodes[1].Stats().Cluster.Barriers
	clients := make([]*smqtest.Conn, n)
	tids := make([]uint32, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			clients[i] = smqtest.Connect(t, nodes[1].Addr, fmt.Sprintf("storm-%03d", i))
			tids[i] = clients[i].Subscribe(fmt.Sprintf("storm/%d", i))
		})
	}
	wg.Wait()
	for i := range n {
		tid := pub.Create(fmt.Sprintf("storm/%d", i))
		pub.Publish(tid, 0, []byte("first"))
	}
	for i, c := range clients {
		c.Expect(smqtest.PublishMsg(tids[i], pub.ETID, 0, []byte("first")))
	}
	rounds := nodes[1].Stats().Cluster.Barriers - before
	t.Logf("%d connects and %d first subscriptions took %d rounds", n, n, rounds)
	if rounds == 0 || rounds > 2*n {
		t.Errorf("%d rounds for %d connects and %d subscriptions", rounds, n, n)
	}
}

// link relays TCP connections to one address, and can be cut (every
// connection closed, new ones closed at once) and restored: a network
// partition between two NATS servers.
type link struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newLink(t *testing.T, target string) *link {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &link{l: l, target: target}
	t.Cleanup(func() { l.Close(); k.setCut(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go k.relay(c)
		}
	}()
	return k
}

func (k *link) relay(c net.Conn) {
	k.mu.Lock()
	if k.cut {
		k.mu.Unlock()
		c.Close()
		return
	}
	u, err := net.Dial("tcp", k.target)
	if err != nil {
		k.mu.Unlock()
		c.Close()
		return
	}
	k.conns = append(k.conns, c, u)
	k.mu.Unlock()
	go func() { io.Copy(u, c); u.Close(); c.Close() }()
	io.Copy(c, u)
	c.Close()
	u.Close()
}

// setCut cuts the link or restores it.
func (k *link) setCut(cut bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cut = cut
	if cut {
		for _, c := range k.conns {
			c.Close()
		}
		k.conns = nil
	}
}

// TestClusterPartitionHeals: two nodes that cannot talk each let in a
// client with the same UID; when they can again, the older session gets
// Disconnect "reconnect" and the newer stays, as after a takeover. Cut for
// longer than the peer timeout (each counts the other lost) and for less
// (a few heartbeats missed).
func TestClusterPartitionHeals(t *testing.T) {
	t.Parallel()
	for _, long := range []bool{true, false} {
		t.Run(map[bool]string{true: "long", false: "short"}[long], func(t *testing.T) {
			var k *link
			nodes := startClusterVia(t, 2, nil, func(addr string) string {
				if k != nil {
					return addr
				}
				k = newLink(t, addr) // node 1 reaches node 0 through the link
				return k.l.Addr().String()
			})
			k.setCut(true)
			if long {
				waitPeers(t, nodes[0], 0)
				waitPeers(t, nodes[1], 0)
			} else {
				waitFor(t, "the route to close on both nodes", func() bool {
					return nodes[0].ns.NumRoutes() == 0 && nodes[1].ns.NumRoutes() == 0
				})
			}
			older := smqtest.Connect(t, nodes[0].Addr, "split-brain-uid")
			newer := smqtest.ConnectWS(t, nodes[1].Addr, "split-brain-uid")
			older.Barrier()
			newer.Barrier()

			k.setCut(false)
			older.ExpectDisconnect("reconnect")
			newer.Barrier()
			waitPeers(t, nodes[0], 1)
			waitPeers(t, nodes[1], 1)
			if got := nodes[0].Stats().Cluster.TakeoversOut; got != 1 {
				t.Errorf("node-0 let %d sessions go, want 1", got)
			}
		})
	}
}
