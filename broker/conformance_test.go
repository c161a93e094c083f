package broker_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// These tests drive the broker with raw bytes over loopback sockets and check
// the wire against SMQ-WIRE.md §4. Ordering across connections uses Ping/Pong
// barriers: once a publisher's Pong is back, the broker has handled (and
// queued the deliveries of) everything that publisher sent before the Ping.

// unknownID is an ID no broker hands out in these tests (IDs are random u32
// values; a collision is a 1 in 4e9 chance per ID).
const unknownID = 0x7e57_0001

// raw frames a message (type byte + body).
func raw(msg ...byte) []byte {
	f, err := smq.AppendRaw(nil, msg)
	if err != nil {
		panic(err)
	}
	return f
}

func TestConnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})

	accepted := []struct {
		name string
		c    smq.Connect
	}{
		{"version 1", smq.Connect{Version: 1, UID: "v1-client"}},
		{"version 2", smq.Connect{Version: 2, MaxSize: 0xfff0, UID: "v2-client"}},
		{"uid of 6 bytes", smq.Connect{Version: 1, UID: "sixsix"}},
		{"credentials and info", smq.Connect{Version: 1, UID: "cred-client", Credentials: "\x00pw\xff", Info: "info"}},
	}
	for _, tc := range accepted {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			c := smqtest.Dial(t, b.Addr)
			c.Send(tc.c)
			c.ExpectConnack(smq.CodeAccepted)
			c.Barrier()
		})
	}

	// Each refusal is Connack 0x01 with ETID 0 and a reason, then a close
	// with nothing more.
	refused := []struct {
		name string
		msg  []byte
	}{
		{"first message Subscribe", smq.Subscribe{Topic: "t"}.Append(nil)},
		{"first message Ping", smq.Ping{}.Append(nil)},
		{"first message Publish", smqtest.PublishMsg(unknownID, 0, 0, []byte("x"))},
		{"first message Disconnect", smq.Disconnect{}.Append(nil)},
		{"version 0", []byte{2, 0, 6, 'a', 'b', 'c', 'd', 'e', 'f', 0}},
		{"version 3", []byte{2, 3, 6, 'a', 'b', 'c', 'd', 'e', 'f', 0}},
		{"version 255", []byte{2, 255, 6, 'a', 'b', 'c', 'd', 'e', 'f', 0}},
		{"uid empty", smq.Connect{Version: 1}.Append(nil)},
		{"uid of 1 byte", smq.Connect{Version: 1, UID: "u"}.Append(nil)},
		{"uid of 5 bytes", smq.Connect{Version: 1, UID: "fivef"}.Append(nil)},
		{"uid of 5 bytes version 2", smq.Connect{Version: 2, MaxSize: 0xfff0, UID: "fivef"}.Append(nil)},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			c := smqtest.Dial(t, b.Addr)
			c.SendMsg(tc.msg)
			c.ExpectConnack(smq.CodeBadVersion)
			c.ExpectClosed()
		})
	}
}

func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	b := startBroker(t, broker.Config{ConnectTimeout: timeout})
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"nothing sent", nil},
		{"half a Connect", []byte{0, 12, 2, 1, 6, 'a'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c := smqtest.Dial(t, b.Addr)
			if tc.send != nil {
				c.WriteBytes(tc.send)
			}
			c.ExpectConnack(smq.CodeServerUnavailable)
			if d := time.Since(start); d < timeout {
				t.Errorf("Connack 0x02 after %v, before the %v timeout", d, timeout)
			}
			c.ExpectClosed()
		})
	}
}

// TestConnectTimeoutDefault: the zero Config waits about 4 s for Connect.
func TestConnectTimeoutDefault(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 4 s")
	}
	b := startBroker(t, broker.Config{})
	start := time.Now()
	c := smqtest.Dial(t, b.Addr)
	c.Timeout = 10 * time.Second
	c.ExpectConnack(smq.CodeServerUnavailable)
	if d := time.Since(start); d < 3900*time.Millisecond || d > 6*time.Second {
		t.Errorf("Connack 0x02 after %v, want about 4 s", d)
	}
	c.ExpectClosed()
}

// TestAuthenticateRefusal: codes 0x03-0x06 come from the hook, with its
// reason and ETID 0, and the broker closes right after.
func TestAuthenticateRefusal(t *testing.T) {
	t.Parallel()
	codes := map[string]smq.ConnackCode{
		"refuse-03": smq.CodeBadCredentials,
		"refuse-04": smq.CodeCertRequired,
		"refuse-05": smq.CodeCertNotAccepted,
		"refuse-06": smq.CodeAccessDenied,
	}
	b := startBroker(t, broker.Config{
		Authenticate: func(r *broker.ConnectRequest) (smq.ConnackCode, string) {
			if code, ok := codes[r.Connect.UID]; ok {
				return code, "reason for " + r.Connect.UID
			}
			return smq.CodeAccepted, ""
		},
	})
	for uid, code := range codes {
		t.Run(code.String(), func(t *testing.T) {
			c := smqtest.Dial(t, b.Addr)
			c.Send(smq.Connect{Version: 1, UID: uid})
			c.ExpectMessage(smq.Connack{Code: code, Reason: "reason for " + uid})
			c.ExpectClosed()
		})
	}
	t.Run("accepted", func(t *testing.T) {
		smqtest.Connect(t, b.Addr, "accept-me").Barrier()
	})
}

// TestTakeover: a second connection with the same UID kicks the first with
// Disconnect "reconnect" and gets the same ETID.
func TestTakeover(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	first := smqtest.Connect(t, b.Addr, "same-uid")
	other := smqtest.Connect(t, b.Addr, "other-uid")
	second := smqtest.Connect(t, b.Addr, "same-uid")
	if second.ETID != first.ETID {
		t.Errorf("takeover ETID %#x, want the first connection's %#x", second.ETID, first.ETID)
	}
	first.ExpectDisconnect("reconnect")
	second.Barrier()
	other.Barrier()

	third := smqtest.ConnectWS(t, b.Addr, "same-uid")
	if third.ETID != first.ETID {
		t.Errorf("WebSocket takeover ETID %#x, want %#x", third.ETID, first.ETID)
	}
	second.ExpectDisconnect("reconnect")
	third.Barrier()

	// The new owner of the ETID receives one-to-one messages.
	msg := other.Publish(third.ETID, 0, []byte("to the new owner"))
	third.Expect(msg)
}

// TestIDs: TIDs and ETIDs are non-zero, never the server's ETID 1, and
// distinct; topics and sub-topics are broker-global.
func TestIDs(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	ids := map[uint32]string{}
	add := func(id uint32, what string) {
		t.Helper()
		if id == 0 || id == 1 {
			t.Errorf("%s has ID %#x", what, id)
		}
		if prev, dup := ids[id]; dup {
			t.Errorf("%s and %s share ID %#x", what, prev, id)
		}
		ids[id] = what
	}
	var clients []*smqtest.Conn
	for i := range 4 {
		c := smqtest.Connect(t, b.Addr, fmt.Sprintf("id-client-%d", i))
		add(c.ETID, fmt.Sprintf("client %d", i))
		clients = append(clients, c)
	}
	for i := range 4 {
		add(clients[i].Subscribe(fmt.Sprintf("topic-%d", i)), fmt.Sprintf("topic %d", i))
	}
	for i := range 4 {
		add(clients[i].Create(fmt.Sprintf("created-%d", i)), fmt.Sprintf("created topic %d", i))
	}
	// The same name means the same topic for every client.
	if a, c := clients[0].Subscribe("shared"), clients[1].Subscribe("shared"); a != c {
		t.Errorf("two clients got TIDs %#x and %#x for one topic", a, c)
	}

	subs := map[uint32]string{}
	for i, c := range clients {
		name := fmt.Sprintf("sub-%d", i)
		id := c.Createsub(name)
		if prev, dup := subs[id]; dup {
			t.Errorf("sub-topics %s and %s share ID %#x", name, prev, id)
		}
		subs[id] = name
		// Sub-topic IDs are global: another client gets the same one.
		if again := clients[(i+1)%len(clients)].Createsub(name); again != id {
			t.Errorf("sub-topic %s: ID %#x, then %#x from another client", name, id, again)
		}
	}
}

// TestTopicCreation: Subscribe, Create and Createsub create unknown names,
// empty names included; a duplicate Subscribe is acked again with the same
// TID (and does not double delivery).
func TestTopicCreation(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	c := smqtest.Connect(t, b.Addr, "creator-1")

	t.Run("Create then Subscribe", func(t *testing.T) {
		tid := c.Create("made/by/create")
		if got := c.Create("made/by/create"); got != tid {
			t.Errorf("second Create: TID %#x, want %#x", got, tid)
		}
		if got := c.Subscribe("made/by/create"); got != tid {
			t.Errorf("Subscribe after Create: TID %#x, want %#x", got, tid)
		}
	})
	t.Run("Subscribe then Create", func(t *testing.T) {
		tid := c.Subscribe("made/by/subscribe")
		if got := c.Create("made/by/subscribe"); got != tid {
			t.Errorf("Create after Subscribe: TID %#x, want %#x", got, tid)
		}
	})
	t.Run("Createsub", func(t *testing.T) {
		id := c.Createsub("made/by/createsub")
		if got := c.Createsub("made/by/createsub"); got != id {
			t.Errorf("second Createsub: ID %#x, want %#x", got, id)
		}
	})
	t.Run("empty names", func(t *testing.T) {
		tid := c.Subscribe("")
		if got := c.Create(""); got != tid {
			t.Errorf("Create \"\": TID %#x, want %#x", got, tid)
		}
		c.Createsub("")
		msg := c.Publish(tid, 0, []byte("to the empty topic"))
		c.Expect(msg)
		c.Barrier()
	})
	t.Run("duplicate Subscribe", func(t *testing.T) {
		tid := c.Subscribe("dup")
		if got := c.Subscribe("dup"); got != tid {
			t.Errorf("duplicate Subscribe: TID %#x, want %#x", got, tid)
		}
		msg := c.Publish(tid, 0, []byte("once"))
		c.Expect(msg)
		c.Barrier() // delivered once, not once per Subscribe
	})
	t.Run("Create does not subscribe", func(t *testing.T) {
		tid := c.Create("not/subscribed")
		c.Publish(tid, 0, []byte("nobody"))
		c.Barrier()
	})
}

// TestPermit: a denied Subscribe, Create or Createsub is acked with status 1
// and ID 0, and a denied Subscribe does not subscribe.
func TestPermit(t *testing.T) {
	t.Parallel()
	type call struct {
		uid   string
		op    smq.Type
		topic string
	}
	calls := make(chan call, 16)
	b := startBroker(t, broker.Config{
		PermitTopic: func(c *broker.Client, op smq.Type, topic string) bool {
			calls <- call{c.UID, op, topic}
			return c.UID != "denied-client"
		},
		PermitSubTopic: func(c *broker.Client, name string) bool {
			return c.UID != "denied-client"
		},
	})
	writer := smqtest.Connect(t, b.Addr, "allowed-client")
	tid := writer.Create("news")
	if got := <-calls; got != (call{"allowed-client", smq.TypeCreate, "news"}) {
		t.Errorf("PermitTopic saw %+v", got)
	}
	reader := smqtest.Connect(t, b.Addr, "denied-client")

	reader.Send(smq.Subscribe{Topic: "news"})
	reader.ExpectMessage(smq.Suback{Status: smq.AckDenied, Topic: "news"})
	if got := <-calls; got != (call{"denied-client", smq.TypeSubscribe, "news"}) {
		t.Errorf("PermitTopic saw %+v", got)
	}
	reader.Send(smq.Create{Topic: "news"})
	reader.ExpectMessage(smq.Createack{Status: smq.AckDenied, Topic: "news"})
	reader.Send(smq.Createsub{Topic: "sub"})
	reader.ExpectMessage(smq.Createsuback{Status: smq.AckDenied, Topic: "sub"})
	reader.Send(smq.Subscribe{Topic: ""})
	reader.ExpectMessage(smq.Suback{Status: smq.AckDenied, Topic: ""})

	writer.Publish(tid, 0, []byte("not for the denied"))
	writer.Barrier()
	reader.Barrier()
}

func TestPublish(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})

	t.Run("ptid mismatch", func(t *testing.T) {
		for _, ptid := range []func(etid uint32) uint32{
			func(etid uint32) uint32 { return etid + 1 },
			func(uint32) uint32 { return 0 },
			func(uint32) uint32 { return 1 },
		} {
			c := smqtest.Connect(t, b.Addr, "bad-ptid-client")
			sub := smqtest.Connect(t, b.Addr, "ptid-watcher")
			tid := sub.Subscribe("ptid")
			c.SendMsg(smqtest.PublishMsg(tid, ptid(c.ETID), 0, []byte("x")))
			c.ExpectDisconnect("corrupt frame")
			sub.Barrier()
			sub.Close()
		}
	})

	t.Run("another client's ETID as ptid", func(t *testing.T) {
		c := smqtest.Connect(t, b.Addr, "impostor-1")
		victim := smqtest.Connect(t, b.Addr, "victim-1")
		c.SendMsg(smqtest.PublishMsg(victim.ETID, victim.ETID, 0, []byte("x")))
		c.ExpectDisconnect("corrupt frame")
		victim.Barrier()
	})

	t.Run("unknown TID dropped silently", func(t *testing.T) {
		c := smqtest.Connect(t, b.Addr, "unknown-tid")
		c.Publish(unknownID, 0, []byte("to nowhere"))
		c.Barrier()
		tid := c.Subscribe("still-alive")
		c.Expect(c.Publish(tid, 0, []byte("alive")))
	})

	t.Run("topic without subscribers dropped silently", func(t *testing.T) {
		c := smqtest.Connect(t, b.Addr, "no-subs-1")
		tid := c.Create("empty-topic")
		c.Publish(tid, 0, []byte("to nobody"))
		c.Barrier()
	})

	t.Run("self-delivery", func(t *testing.T) {
		c := smqtest.Connect(t, b.Addr, "self-deliver")
		tid := c.Subscribe("self")
		sub := c.Createsub("self-sub")
		want := raw(smqtest.PublishMsg(tid, c.ETID, sub, []byte("echo"))...)
		c.SendMsg(want[2:])
		c.ExpectRaw(want)
		c.Barrier()
	})

	t.Run("fan-out keeps bytes", func(t *testing.T) {
		pub := smqtest.Connect(t, b.Addr, "fan-publisher")
		var subs []*smqtest.Conn
		var tid uint32
		for i := range 3 {
			s := smqtest.Connect(t, b.Addr, fmt.Sprintf("fan-sub-%d", i))
			tid = s.Subscribe("fan")
			subs = append(subs, s)
		}
		bystander := smqtest.Connect(t, b.Addr, "fan-bystander")
		for _, payload := range [][]byte{nil, []byte("payload"), bytes.Repeat([]byte{0xa5}, 60000)} {
			msg := pub.Publish(tid, 0xfeedf00d, payload)
			pub.Barrier() // the publisher is not subscribed
			for _, s := range subs {
				s.Expect(msg)
			}
		}
		for _, s := range subs {
			s.Barrier()
		}
		bystander.Barrier()
	})

	t.Run("one-to-one to an ETID", func(t *testing.T) {
		a := smqtest.Connect(t, b.Addr, "direct-a")
		bb := smqtest.Connect(t, b.Addr, "direct-b")
		c := smqtest.Connect(t, b.Addr, "direct-c")
		c.Subscribe("direct")
		msg := a.Publish(bb.ETID, 0, []byte("for b only"))
		a.Barrier()
		bb.Expect(msg)
		bb.Barrier()
		c.Barrier()
	})

	t.Run("Unsubscribe stops delivery without an ack", func(t *testing.T) {
		pub := smqtest.Connect(t, b.Addr, "unsub-pub")
		s := smqtest.Connect(t, b.Addr, "unsub-sub")
		tid := s.Subscribe("unsub")
		s.Expect(pub.Publish(tid, 0, []byte("before")))
		s.Send(smq.Unsubscribe{TID: tid})
		s.Barrier() // no ack
		pub.Publish(tid, 0, []byte("after"))
		pub.Barrier()
		s.Barrier()
		s.Send(smq.Unsubscribe{TID: unknownID}) // unknown: ignored
		s.Barrier()
		if got := s.Subscribe("unsub"); got != tid {
			t.Errorf("resubscribe: TID %#x, want %#x", got, tid)
		}
		s.Expect(pub.Publish(tid, 0, []byte("again")))
	})

	t.Run("OnPublish can drop", func(t *testing.T) {
		hb := startBroker(t, broker.Config{
			OnPublish: func(c *broker.Client, p *smq.Publish) bool { return string(p.Payload) != "drop me" },
		})
		c := smqtest.Connect(t, hb.Addr, "hooked-pub")
		tid := c.Subscribe("hooked")
		c.Publish(tid, 0, []byte("drop me"))
		c.Expect(c.Publish(tid, 0, []byte("keep me")))
		c.Barrier()
	})
}

func TestObserve(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})

	t.Run("topic", func(t *testing.T) {
		o := smqtest.Connect(t, b.Addr, "observer-1")
		tid := o.Create("observed")
		o.Send(smq.Observe{ID: tid})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 0)) // immediate, exactly 11 bytes

		s1 := smqtest.Connect(t, b.Addr, "obs-sub-1")
		s1.Subscribe("observed")
		o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
		s2 := smqtest.Connect(t, b.Addr, "obs-sub-2")
		s2.Subscribe("observed")
		o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
		s3 := smqtest.ConnectWS(t, b.Addr, "obs-sub-3")
		s3.Subscribe("observed")
		o.ExpectRaw(smqtest.ChangeRaw(tid, 3))

		s1.Send(smq.Unsubscribe{TID: tid})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
		s2.Send(smq.Disconnect{})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
		s3.Close() // gone without a Disconnect
		o.ExpectRaw(smqtest.ChangeRaw(tid, 0))
		o.Barrier()
	})

	t.Run("topic with subscribers", func(t *testing.T) {
		s1 := smqtest.Connect(t, b.Addr, "count-sub-1")
		s2 := smqtest.Connect(t, b.Addr, "count-sub-2")
		tid := s1.Subscribe("counted")
		s2.Subscribe("counted")
		o := smqtest.Connect(t, b.Addr, "count-observer")
		o.Send(smq.Observe{ID: tid})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
		o.Barrier()
	})

	t.Run("unknown TID", func(t *testing.T) {
		o := smqtest.Connect(t, b.Addr, "unknown-observer")
		o.Send(smq.Observe{ID: unknownID})
		o.ExpectRaw(smqtest.ChangeRaw(unknownID, 0))
		o.Barrier()
	})

	t.Run("peer ETID", func(t *testing.T) {
		o := smqtest.Connect(t, b.Addr, "peer-observer")
		p1 := smqtest.Connect(t, b.Addr, "observed-peer-1")
		p2 := smqtest.ConnectWS(t, b.Addr, "observed-peer-2")
		o.Send(smq.Observe{ID: p1.ETID})
		o.Send(smq.Observe{ID: p2.ETID})
		o.Barrier() // no immediate Change for a peer
		p1.Send(smq.Disconnect{Reason: "bye"})
		o.ExpectRaw(smqtest.ChangeRaw(p1.ETID, 0))
		p2.Close()
		o.ExpectRaw(smqtest.ChangeRaw(p2.ETID, 0))
		o.Barrier()
	})

	t.Run("self ignored", func(t *testing.T) {
		o := smqtest.Connect(t, b.Addr, "self-observer")
		o.Send(smq.Observe{ID: o.ETID})
		o.Barrier()
		o.Send(smq.Unobserve{ID: o.ETID})
		o.Barrier()
	})
}

// TestUnobserve: the reference hub's Unobserve bug is fixed: no more Change
// for that ID, subscribers keep receiving, later Subscribes work.
func TestUnobserve(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})

	t.Run("topic", func(t *testing.T) {
		pub := smqtest.Connect(t, b.Addr, "unobs-pub")
		s := smqtest.Connect(t, b.Addr, "unobs-sub")
		tid := s.Subscribe("unobserved")
		o := smqtest.Connect(t, b.Addr, "unobserver") // the only observer
		o.Send(smq.Observe{ID: tid})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
		o.Send(smq.Unobserve{ID: tid})
		o.Barrier() // Unobserve is handled, and has no answer

		// A witness still observing proves each change was announced.
		w := smqtest.Connect(t, b.Addr, "unobs-witness")
		w.Send(smq.Observe{ID: tid})
		w.ExpectRaw(smqtest.ChangeRaw(tid, 1))

		// Subscribers keep receiving.
		s.Expect(pub.Publish(tid, 0, []byte("still delivered")))

		// A later Subscribe works, and receives.
		late := smqtest.Connect(t, b.Addr, "unobs-late")
		if got := late.Subscribe("unobserved"); got != tid {
			t.Errorf("late Subscribe: TID %#x, want %#x", got, tid)
		}
		w.ExpectRaw(smqtest.ChangeRaw(tid, 2))
		msg := pub.Publish(tid, 0, []byte("to both"))
		s.Expect(msg)
		late.Expect(msg)
		late.Send(smq.Unsubscribe{TID: tid})
		w.ExpectRaw(smqtest.ChangeRaw(tid, 1))
		o.Barrier() // no Change reached the unobserver

		// The unobserver itself can subscribe, and observe again.
		if got := o.Subscribe("unobserved"); got != tid {
			t.Errorf("unobserver's Subscribe: TID %#x, want %#x", got, tid)
		}
		w.ExpectRaw(smqtest.ChangeRaw(tid, 2))
		o.Barrier()
		o.Send(smq.Observe{ID: tid})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 2))
		o.Expect(pub.Publish(tid, 0, []byte("to the former unobserver")))
	})

	t.Run("peer ETID", func(t *testing.T) {
		o := smqtest.Connect(t, b.Addr, "etid-unobserver")
		w := smqtest.Connect(t, b.Addr, "etid-witness")
		p := smqtest.Connect(t, b.Addr, "etid-observed")
		o.Send(smq.Observe{ID: p.ETID})
		w.Send(smq.Observe{ID: p.ETID})
		o.Send(smq.Unobserve{ID: p.ETID})
		o.Barrier()
		w.Barrier()
		p.Close()
		w.ExpectRaw(smqtest.ChangeRaw(p.ETID, 0))
		o.Barrier()
	})

	t.Run("never observed", func(t *testing.T) {
		o := smqtest.Connect(t, b.Addr, "stray-unobserver")
		o.Send(smq.Unobserve{ID: unknownID})
		o.Barrier()
	})
}

// fragments splits payload into PubFrag messages: all but the last with
// tid 0 and junk in the headers the broker must ignore.
func fragments(tid, ptid, subtid uint32, payload []byte, n int) [][]byte {
	var out [][]byte
	size := (len(payload) + n - 1) / n
	for i := range n {
		part := payload[min(i*size, len(payload)):min((i+1)*size, len(payload))]
		if i < n-1 {
			out = append(out, smqtest.PubFragMsg(0, 0xbad00000+uint32(i), 0xbad1, part))
		} else {
			out = append(out, smqtest.PubFragMsg(tid, ptid, subtid, part))
		}
	}
	return out
}

func TestPubFrag(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	payload := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		return p
	}

	// check sends frags from p; the subscriber s must get want (or nothing if
	// want is nil), and p must stay connected.
	check := func(t *testing.T, p, s *smqtest.Conn, frags [][]byte, want []byte) {
		t.Helper()
		for _, f := range frags {
			p.SendMsg(f)
		}
		p.Barrier()
		if want != nil {
			s.Expect(want)
		}
		s.Barrier()
	}

	t.Run("reassembly", func(t *testing.T) {
		p := smqtest.Connect(t, b.Addr, "frag-pub-1")
		s := smqtest.Connect(t, b.Addr, "frag-sub-1")
		tid := s.Subscribe("frag")
		whole := []byte("hello fragmented world")
		check(t, p, s, fragments(tid, p.ETID, 7, whole, 3), smqtest.PublishMsg(tid, p.ETID, 7, whole))
		// The buffer starts afresh for the next message.
		check(t, p, s, fragments(tid, p.ETID, 8, []byte("second"), 2), smqtest.PublishMsg(tid, p.ETID, 8, []byte("second")))
		// A lone last fragment is a whole message.
		check(t, p, s, fragments(tid, p.ETID, 0, []byte("alone"), 1), smqtest.PublishMsg(tid, p.ETID, 0, []byte("alone")))
		// To an ETID, like Publish.
		check(t, p, s, fragments(s.ETID, p.ETID, 0, []byte("direct"), 2), smqtest.PublishMsg(s.ETID, p.ETID, 0, []byte("direct")))
	})

	t.Run("intermediate fragments are not delivered", func(t *testing.T) {
		p := smqtest.Connect(t, b.Addr, "frag-pub-2")
		s := smqtest.Connect(t, b.Addr, "frag-sub-2")
		tid := s.Subscribe("frag2")
		frags := fragments(tid, p.ETID, 0, []byte("abcdef"), 3)
		check(t, p, s, frags[:2], nil)
		check(t, p, s, frags[2:], smqtest.PublishMsg(tid, p.ETID, 0, []byte("abcdef")))
	})

	t.Run("ptid checked on the last fragment", func(t *testing.T) {
		p := smqtest.Connect(t, b.Addr, "frag-pub-3")
		s := smqtest.Connect(t, b.Addr, "frag-sub-3")
		tid := s.Subscribe("frag3")
		for _, f := range fragments(tid, p.ETID+1, 0, []byte("abcdef"), 2) {
			p.SendMsg(f)
		}
		p.ExpectDisconnect("corrupt frame")
		s.Barrier()
	})

	t.Run("payload 0xFFE3 delivered", func(t *testing.T) {
		p := smqtest.Connect(t, b.Addr, "frag-pub-4")
		s := smqtest.Connect(t, b.Addr, "frag-sub-4")
		tid := s.Subscribe("frag4")
		whole := payload(smq.MaxPubFragPayload)
		want := smqtest.PublishMsg(tid, p.ETID, 0, whole)
		if len(want) != 0xFFF0 {
			t.Fatalf("test bug: reassembled message is %#x bytes", len(want))
		}
		check(t, p, s, fragments(tid, p.ETID, 0, whole, 2), want)
	})

	for _, n := range []int{smq.MaxPubFragPayload + 1, smq.MaxPayload} {
		t.Run(fmt.Sprintf("payload %#x dropped silently", n), func(t *testing.T) {
			p := smqtest.Connect(t, b.Addr, "frag-pub-5")
			s := smqtest.Connect(t, b.Addr, "frag-sub-5")
			tid := s.Subscribe("frag5")
			check(t, p, s, fragments(tid, p.ETID, 0, payload(n), 3), nil)
			// The connection is healthy and the buffer empty.
			check(t, p, s, fragments(tid, p.ETID, 0, []byte("next"), 2), smqtest.PublishMsg(tid, p.ETID, 0, []byte("next")))
		})
	}

	t.Run("over 0xFFF0 accumulated closes", func(t *testing.T) {
		p := smqtest.Connect(t, b.Addr, "frag-pub-6")
		s := smqtest.Connect(t, b.Addr, "frag-sub-6")
		s.Subscribe("frag6")
		// Intermediate fragments only: the limit must be enforced while
		// accumulating, not when the last fragment arrives.
		whole := payload(smq.MaxPayload + 1)
		q := len(whole)/4 + 1
		for i := 0; i < len(whole); i += q {
			p.SendMsg(smqtest.PubFragMsg(0, p.ETID, 0, whole[i:min(i+q, len(whole))]))
		}
		p.ExpectClosed()
		s.Barrier()
	})
}

func TestPing(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	c := smqtest.Connect(t, b.Addr, "pinger-1")
	pong := []byte{0x00, 0x03, 0x0d} // exactly 3 raw bytes
	for _, ping := range [][]byte{
		{0x00, 0x03, 0x0c},
		{0x00, 0x05, 0x0c, 'x', 'y'},
		append([]byte{0x01, 0x03, 0x0c}, make([]byte, 0x100)...),
	} {
		c.WriteBytes(ping)
		c.ExpectRaw(pong)
	}
	// A Pong from the client is not answered.
	c.WriteBytes(pong)
	c.Barrier()
}

// TestClientDisconnect: a client's Disconnect is not echoed; the broker just
// closes.
func TestClientDisconnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	for _, reason := range []string{"", "bye"} {
		c := smqtest.Connect(t, b.Addr, "leaver-1")
		c.Send(smq.Disconnect{Reason: reason})
		c.ExpectClosed()
	}
}

// TestMalformed: protocol errors end the connection silently (no
// Disconnect), and the broker keeps serving its other clients.
func TestMalformed(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	bystander := smqtest.Connect(t, b.Addr, "bystander-1")
	bystanderTID := bystander.Subscribe("bystander")
	tests := []struct {
		name  string
		bytes []byte
	}{
		{"type 0", raw(0)},
		{"type 10", raw(10)},
		{"type 10 with body", raw(10, 0, 0, 0, 1)},
		{"type 20", raw(20)},
		{"type 255", raw(255, 1, 2, 3)},
		{"frame length 0", []byte{0, 0}},
		{"frame length 1", []byte{0, 1}},
		{"frame length 2", []byte{0, 2}},
		{"frame length 2 then a Ping", []byte{0, 2, 0, 3, 0x0c}},
		{"Publish empty body", raw(8)},
		{"Publish 11-byte body", raw(8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0)},
		{"Unsubscribe empty body", raw(9)},
		{"Unsubscribe 3-byte body", raw(9, 0, 0, 1)},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := smqtest.Connect(t, b.Addr, fmt.Sprintf("malformed-%d", i))
			bad.WriteBytes(tc.bytes)
			bad.ExpectClosed()

			bystander.Barrier()
			fresh := smqtest.Connect(t, b.Addr, fmt.Sprintf("after-malformed-%d", i))
			bystander.Expect(fresh.Publish(bystanderTID, 0, []byte(tc.name)))
		})
	}
}

// TestSlowConsumer: a subscriber that does not read overflows its queue and
// gets Disconnect "slow consumer"; the publisher and a fast subscriber carry
// on and lose nothing.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{QueueBytes: 1 << 20, QueueMessages: 1 << 16})
	pub := smqtest.Connect(t, b.Addr, "slow-test-pub")
	fast := smqtest.Connect(t, b.Addr, "slow-test-fast")
	// The slow subscriber reads nothing until the broker has given up on it.
	// (It must then drain its socket quickly: the broker allows a kicked
	// client a short time to take the rest of its stream.)
	slow := smqtest.Connect(t, b.Addr, "slow-test-slow")
	tid := fast.Subscribe("firehose")
	slow.Subscribe("firehose")

	// The fast subscriber reads on its own goroutine: sequence numbers in
	// order, until the "end" marker. It reports each message on read, and
	// the publisher stays at most window messages ahead of it, so that it
	// is fast however loaded the machine: only the slow one's queue fills.
	const window = 16 // 256 KiB, a quarter of QueueBytes
	read := make(chan struct{}, 4096)
	fastDone := make(chan error, 1)
	go func() {
		next := uint32(0)
		for {
			f, err := fast.ReadFrame(30 * time.Second)
			if err != nil {
				fastDone <- fmt.Errorf("fast subscriber after %d messages: %v", next, err)
				return
			}
			p, err := smq.DecodePublish(f.Msg)
			if err != nil {
				fastDone <- fmt.Errorf("fast subscriber got %s", smqtest.Describe(f.Msg))
				return
			}
			if string(p.Payload) == "end" {
				if next == 0 {
					fastDone <- fmt.Errorf("fast subscriber got nothing before the end")
					return
				}
				fastDone <- nil
				return
			}
			if seq := binary.BigEndian.Uint32(p.Payload); seq != next {
				fastDone <- fmt.Errorf("fast subscriber got message %d, want %d", seq, next)
				return
			}
			next++
			read <- struct{}{}
		}
	}()

	payload := make([]byte, 16<<10)
	sent := 0
	for ; sent < 4000; sent++ {
		if sent >= window {
			select {
			case <-read:
			case err := <-fastDone:
				t.Fatalf("before the end: %v", err)
			case <-time.After(smqtest.WaitFor):
				t.Fatalf("the fast subscriber is stuck %d messages behind", window)
			}
		}
		binary.BigEndian.PutUint32(payload, uint32(sent))
		pub.Publish(tid, 0, payload)
		if sent%8 == 7 {
			pub.Barrier() // everything published so far is queued
			if b.Stats().SlowDisconnects > 0 {
				break
			}
		}
	}
	if got := b.Stats().SlowDisconnects; got != 1 {
		t.Fatalf("SlowDisconnects = %d after %d publishes of %d bytes, want 1", got, sent, len(payload))
	}

	// The slow subscriber now drains at once (the broker allows a kicked
	// client only a short time to take the rest of its stream): what was
	// already in its socket, in order, then Disconnect "slow consumer".
	slowDone := make(chan error, 1)
	go func() {
		bye := smq.Disconnect{Reason: "slow consumer"}.Append(nil)
		for next := uint32(0); ; next++ {
			f, err := slow.ReadFrame(30 * time.Second)
			if err != nil {
				slowDone <- fmt.Errorf("slow subscriber after %d messages: %v", next, err)
				return
			}
			if smq.Type(f.Msg[0]) != smq.TypePublish {
				if !bytes.Equal(f.Msg, bye) {
					slowDone <- fmt.Errorf("slow subscriber after %d messages\n%s", next, smqtest.Diff(f.Msg, bye))
					return
				}
				slowDone <- nil
				return
			}
			p, _ := smq.DecodePublish(f.Msg)
			if seq := binary.BigEndian.Uint32(p.Payload); seq != next {
				slowDone <- fmt.Errorf("slow subscriber got message %d, want %d", seq, next)
				return
			}
		}
	}()

	pub.Publish(tid, 0, []byte("end"))
	pub.Barrier() // the publisher is unaffected
	if err := <-fastDone; err != nil {
		t.Fatal(err)
	}
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	slow.ExpectClosed()
	pub.Barrier()
	fast.Barrier()
}

// TestOversizeWebSocketPublish: a Publish from a WebSocket client too big for
// a raw frame (over 65533 bytes of type + body) is never written to a raw
// subscriber; WebSocket subscribers get it.
func TestOversizeWebSocketPublish(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	p := smqtest.ConnectWS(t, b.Addr, "ws-big-publisher")
	r := smqtest.Connect(t, b.Addr, "raw-big-subscriber")
	w := smqtest.ConnectWS(t, b.Addr, "ws-big-subscriber")
	tid := r.Subscribe("big")
	w.Subscribe("big")

	big := p.Publish(tid, 0, make([]byte, smq.MaxRawMessage+1-13))
	if len(big) != 65534 {
		t.Fatalf("test bug: %d bytes", len(big))
	}
	p.Barrier()
	w.Expect(big)
	r.Barrier() // nothing, and the raw stream is intact
	if got := b.Stats().DroppedTooBig; got != 1 {
		t.Errorf("DroppedTooBig = %d, want 1", got)
	}

	// One-to-one to the raw client: dropped too.
	p.Publish(r.ETID, 0, make([]byte, smq.MaxRawMessage+1-13))
	p.Barrier()
	r.Barrier()
	if got := b.Stats().DroppedTooBig; got != 2 {
		t.Errorf("DroppedTooBig = %d, want 2", got)
	}

	// The largest message that fits a raw frame is delivered: length 0xFFFF.
	fits := p.Publish(tid, 0, make([]byte, smq.MaxRawMessage-13))
	p.Barrier()
	r.ExpectRaw(append([]byte{0xff, 0xff}, fits...))
	w.Expect(fits)
	r.Barrier()
	if got := b.Stats().DroppedTooBig; got != 2 {
		t.Errorf("DroppedTooBig = %d, want still 2", got)
	}
}

// TestShutdown: every client, raw or WebSocket, logged in or not, served by
// Serve or ServeConn, gets Disconnect "shutdown" and is closed; the
// listener stops accepting.
func TestShutdown(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	rawC := smqtest.Connect(t, b.Addr, "shutdown-raw")
	wsC := smqtest.ConnectWS(t, b.Addr, "shutdown-ws")
	rawPre := smqtest.Dial(t, b.Addr)
	wsPre, _ := smqtest.DialWS(t, b.Addr, nil)
	served, sc := serveConnPair(t, b.Broker, broker.Peer{IP: "192.0.2.1"})
	sc.ReadInit()
	sc.Login("shutdown-serveconn")

	done := make(chan error, 1)
	go func() { done <- b.Shutdown(t.Context()) }()
	for name, c := range map[string]*smqtest.Conn{"raw": rawC, "websocket": wsC,
		"raw before Connect": rawPre, "websocket before Connect": wsPre, "ServeConn": sc} {
		t.Run(name, func(t *testing.T) {
			c.ExpectDisconnect("shutdown")
		})
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-served
	if c, err := dialQuick(b.Addr); err == nil {
		c.Close()
		t.Error("the listener still accepts after Shutdown")
	}
	if err := b.ServeConn(closedPipe(), broker.Peer{IP: "192.0.2.2"}); err != broker.ErrClosed {
		t.Errorf("ServeConn after Shutdown = %v, want ErrClosed", err)
	}
}

// TestServeConn: an already bootstrapped connection gets Init at once (no
// HTTP bytes) with the given IP, and shares topics with HTTP-served clients.
func TestServeConn(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	other := smqtest.Connect(t, b.Addr, "serveconn-other")
	tid := other.Subscribe("shared-by-serveconn")
	for _, tc := range []struct {
		name string
		pair func(*testing.T, *broker.Broker, broker.Peer) (<-chan struct{}, *smqtest.Conn)
	}{
		{"loopback socket pair", serveConnPair},
		{"net.Pipe", serveConnPipe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served, c := tc.pair(t, b.Broker, broker.Peer{IP: "192.0.2.7"})
			wantInitRaw(t, c.ReadFull(), "192.0.2.7")
			c.Login("serveconn-" + strings.ReplaceAll(tc.name, " ", "-"))
			if got := c.Subscribe("shared-by-serveconn"); got != tid {
				t.Errorf("TID %#x, want %#x", got, tid)
			}
			msg := c.Publish(tid, 0, []byte(tc.name))
			c.Expect(msg)
			other.Expect(msg)
			c.Expect(other.Publish(c.ETID, 0, []byte("direct")))
			c.Close()
			select {
			case <-served:
			case <-time.After(5 * time.Second):
				t.Fatal("ServeConn did not return after the client closed")
			}
		})
	}
}
