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
