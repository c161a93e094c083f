package broker_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// rawFrames is msgs, each framed for a raw connection, in one buffer.
func rawFrames(t *testing.T, msgs ...smq.Message) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = smq.AppendRawMessage(b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// waitIdle waits until the nodes have no sessions left.
func waitIdle(t *testing.T, nodes ...*clusterNode) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, n.name+" to have no sessions", func() bool { return n.Stats().Sessions == 0 })
	}
}

// TestClusterAttackSubscribeDuringTakeover: a session taken over (here or
// from another node) while its Subscribe is between the registry and the
// cluster leaves nothing behind: once every session has ended, no node
// keeps a topic's interest (a NATS subscription and a subscriber count
// the other nodes add to their observers' Change).
func TestClusterAttackSubscribeDuringTakeover(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, nil)
	const rounds, perRound = 1000, 40
	for r := range rounds {
		uid := fmt.Sprintf("racer-%04d", r)
		c1 := smqtest.Connect(t, nodes[0].Addr, uid)
		var subs []smq.Message
		for j := range perRound {
			subs = append(subs, smq.Subscribe{Topic: fmt.Sprintf("race/%d/%d", r, j)})
		}
		_, _ = c1.NetConn.Write(rawFrames(t, subs...)) // pipelined: no acks awaited
		c2 := smqtest.Connect(t, nodes[r%2].Addr, uid) // takeover, here or from node 1
		c2.Close()
		c1.Close()
	}
	waitIdle(t, nodes...)
	for _, n := range nodes {
		var m broker.ClusterMaps
		deadline := time.Now().Add(30 * time.Second)
		for m = broker.ClusterMapSizes(n.Broker); m.Interest != 0 || m.Clients != 0; m = broker.ClusterMapSizes(n.Broker) {
			if time.Now().After(deadline) {
				t.Fatalf("%s keeps interest in %d topics %v and %d clients after every session ended",
					n.name, m.Interest, m.InterestNames, m.Clients)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestClusterAttackObserveVsGone: a client of another node observed just as
// it disconnects: the observer gets Change(etid, 0), at once or when it
// goes, never nothing (as on one broker).
func TestClusterAttackObserveVsGone(t *testing.T) {
	t.Parallel()
	// A probe that reaches the observed one's node just after it went is
	// never answered: keep the rounds that wait for it short.
	nodes := startCluster(t, 2, func(i int, c *broker.Cluster) { c.RequestTimeout = 20 * time.Millisecond })
	o := smqtest.Connect(t, nodes[0].Addr, "observer-race")
	const rounds = 1000
	missed := 0
	start := time.Now()
	for r := range rounds {
		e := smqtest.Connect(t, nodes[1].Addr, fmt.Sprintf("observed-%04d", r))
		o.Send(smq.Observe{ID: e.ETID})
		// Vary when the observed one goes relative to the probe (a
		// spread of timings, not a synchronization).
		for sent, d := time.Now(), time.Duration(r%40)*25*time.Microsecond; time.Since(sent) < d; {
		}
		e.Close()
		f, err := o.ReadFrame(5 * time.Second)
		switch {
		case err == nil && bytes.Equal(f.Raw, smqtest.ChangeRaw(e.ETID, 0)):
		case smqtest.IsTimeout(err):
			t.Logf("round %d (after %v): no Change(%#x, 0)", r, time.Since(start), e.ETID)
			missed++
			o.Send(smq.Unobserve{ID: e.ETID})
		default:
			t.Fatalf("round %d: got %v %v, want Change(%#x, 0)", r, f.Msg, err, e.ETID)
		}
		if missed > 0 {
			break
		}
	}
	o.Barrier()
	if missed > 0 {
		t.Errorf("an observer of a client of another node that went got no Change(etid, 0)")
	}
	m := broker.ClusterMapSizes(nodes[0].Broker)
	if m.Watching != 0 {
		t.Errorf("node-0 still watches %d clients of other nodes", m.Watching)
	}
}

// TestClusterAttackChurnCounts: Subscribe, Unsubscribe, Subscribe again,
// a duplicate Subscribe on another node: the observer sees every change of
// the cluster's count, in order, and none after Unobserve.
func TestClusterAttackChurnCounts(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	o := smqtest.Connect(t, nodes[0].Addr, "churn-observer")
	tid := o.Create("churn")
	o.Send(smq.Observe{ID: tid})
	o.ExpectRaw(smqtest.ChangeRaw(tid, 0))
	c := smqtest.Connect(t, nodes[1].Addr, "churn-client")
	ctid := c.Subscribe("churn")
	o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
	c.Send(smq.Unsubscribe{TID: ctid})
	o.ExpectRaw(smqtest.ChangeRaw(tid, 0))
	c.Subscribe("churn")
	o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
	c.Subscribe("churn") // duplicate: acked again, no Change
	d := smqtest.Connect(t, nodes[2].Addr, "churn-client-2")
	d.Subscribe("churn")
	o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
	c.Close()
	o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
	o.Send(smq.Unobserve{ID: tid})
	o.Barrier()
	d.Send(smq.Unsubscribe{TID: d.Subscribe("churn")})
	waitIdle(t, nodes[1])
	d.Barrier()
	o.Barrier() // nothing after Unobserve
	// Observe again: the count is the cluster's at once.
	e := smqtest.Connect(t, nodes[1].Addr, "churn-client-3")
	e.Subscribe("churn")
	o.Send(smq.Observe{ID: tid})
	o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
}

// TestClusterAttackTakeoverToObserversNode: a client of another node,
// observed, taken over by a connection on the observer's own node: the
// observer gets Change(etid, 0) as on one broker, and can observe the new
// session, which then reports its own going.
func TestClusterAttackTakeoverToObserversNode(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, nil)
	o := smqtest.Connect(t, nodes[0].Addr, "home-observer")
	first := smqtest.Connect(t, nodes[1].Addr, "wanderer")
	o.Send(smq.Observe{ID: first.ETID})
	o.Barrier()
	second := smqtest.Connect(t, nodes[0].Addr, "wanderer")
	if second.ETID != first.ETID {
		t.Fatalf("ETID %#x after takeover, want %#x", second.ETID, first.ETID)
	}
	first.ExpectDisconnect("reconnect")
	o.ExpectRaw(smqtest.ChangeRaw(first.ETID, 0))
	o.Send(smq.Observe{ID: second.ETID})
	o.Barrier()
	second.Close()
	o.ExpectRaw(smqtest.ChangeRaw(second.ETID, 0))
	o.Barrier()
	waitIdle(t, nodes[1])
	if m := broker.ClusterMapSizes(nodes[0].Broker); m.Watching != 0 {
		t.Errorf("node-0 still watches %d clients of other nodes", m.Watching)
	}
}

// TestClusterAttackSimultaneousConnects: one UID connecting on two nodes
// at once: exactly one session is left, as on one broker.
func TestClusterAttackSimultaneousConnects(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, nil)
	const rounds = 600
	early := 0
	for r := range rounds {
		uid := fmt.Sprintf("twin-%04d", r)
		conns := []*smqtest.Conn{smqtest.Dial(t, nodes[0].Addr), smqtest.Dial(t, nodes[1].Addr)}
		for _, c := range conns {
			c.Send(smq.Connect{Version: 1, UID: uid})
		}
		kicked := make([]bool, 2)
		for i, c := range conns {
			switch msg := c.Read(); smq.Type(msg[0]) {
			case smq.TypeConnack:
			case smq.TypeDisconnect: // kicked before its Connack
				kicked[i] = true
				early++
			default:
				t.Fatalf("round %d: got %s, want Connack", r, smqtest.Describe(msg))
			}
		}
		// The older one is told to go once the newer one's announcement
		// arrives: wait for that, generously.
		for deadline := time.Now().Add(5 * time.Second); !kicked[0] && !kicked[1] && time.Now().Before(deadline); {
			for i, c := range conns {
				f, err := c.ReadFrame(20 * time.Millisecond)
				if err == nil && smq.Type(f.Msg[0]) == smq.TypeDisconnect {
					kicked[i] = true
				}
			}
		}
		if kicked[0] == kicked[1] {
			t.Fatalf("round %d: uid %s connected on two nodes at once: kicked %v, want exactly one", r, uid, kicked)
		}
		for _, c := range conns {
			c.Close()
		}
	}
	if early > 0 {
		t.Logf("%d sessions got Disconnect \"reconnect\" before (instead of) their Connack", early)
	}
}
