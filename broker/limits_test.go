package broker_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
)

// waitStats waits until the broker's Stats satisfy cond.
func waitStats(t *testing.T, b *broker.Broker, what string, cond func(broker.Stats) bool) {
	t.Helper()
	var last broker.Stats
	defer func() {
		if t.Failed() {
			t.Logf("last Stats: %+v", last)
		}
	}()
	smqtest.WaitUntil(t, what, func() bool {
		last = b.Stats()
		return cond(last)
	})
}

// TestTopicLifetime: a topic lives while a session holds it (created,
// subscribed to or observed it); its TID stays valid for them when another
// holder leaves. Once nobody holds it, it is freed: publishing to its old
// TID is dropped like any unknown TID, and a later Subscribe makes it anew.
func TestTopicLifetime(t *testing.T) {
	t.Parallel()

	t.Run("held by a live session", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, broker.Config{})
		creator := smqtest.Connect(t, b.Addr, "life-creator")
		sub := smqtest.Connect(t, b.Addr, "life-subscriber")
		pub := smqtest.Connect(t, b.Addr, "life-publisher")
		tid := creator.Create("life/shared")
		if got := sub.Subscribe("life/shared"); got != tid {
			t.Fatalf("Subscribe: TID %#x, want the created %#x", got, tid)
		}
		sid := creator.Createsub("life/sub")
		if got := sub.Createsub("life/sub"); got != sid {
			t.Fatalf("Createsub: ID %#x, want %#x", got, sid)
		}
		if st := b.Stats(); st.Topics != 1 || st.SubTopics != 1 || st.Subscriptions != 1 {
			t.Fatalf("Stats %+v, want 1 topic, 1 sub-topic, 1 subscription", st)
		}

		creator.Send(smq.Disconnect{})
		creator.ExpectClosed()
		waitStats(t, b.Broker, "the creator's session to end", func(st broker.Stats) bool { return st.Sessions == 2 })
		sub.Expect(pub.Publish(tid, sid, []byte("still here")))
		if got := sub.Subscribe("life/shared"); got != tid {
			t.Errorf("Subscribe again: TID %#x, want %#x", got, tid)
		}
		if got := pub.Createsub("life/sub"); got != sid {
			t.Errorf("Createsub again: ID %#x, want %#x", got, sid)
		}
		if st := b.Stats(); st.Topics != 1 || st.SubTopics != 1 {
			t.Errorf("Stats %+v, want the topic and sub-topic kept", st)
		}

		sub.Close()
		waitStats(t, b.Broker, "the topic to be freed", func(st broker.Stats) bool {
			return st.Sessions == 1 && st.Topics == 0 && st.SubTopics == 1 // pub holds the sub-topic
		})
		dropped := b.Stats().DroppedUnknownID
		pub.Publish(tid, 0, []byte("to a freed topic"))
		pub.Barrier() // dropped silently, the publisher carries on
		if got := b.Stats().DroppedUnknownID; got != dropped+1 {
			t.Errorf("DroppedUnknownID = %d, want %d", got, dropped+1)
		}

		again := smqtest.Connect(t, b.Addr, "life-again")
		tid2 := again.Subscribe("life/shared")
		again.Expect(pub.Publish(tid2, 0, []byte("made anew")))
		if st := b.Stats(); st.Topics != 1 || st.Subscriptions != 1 {
			t.Errorf("Stats %+v, want 1 topic, 1 subscription", st)
		}
	})

	t.Run("held by an observer", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, broker.Config{})
		creator := smqtest.Connect(t, b.Addr, "obs-life-creator")
		o := smqtest.Connect(t, b.Addr, "obs-life-observer")
		tid := creator.Create("life/observed")
		o.Send(smq.Observe{ID: tid})
		o.ExpectRaw(smqtest.ChangeRaw(tid, 0))
		creator.Close()
		waitStats(t, b.Broker, "the creator's session to end", func(st broker.Stats) bool { return st.Sessions == 1 })

		// Kept for its observer: a new subscriber gets the same TID, and the
		// observer hears of it.
		s := smqtest.Connect(t, b.Addr, "obs-life-sub")
		if got := s.Subscribe("life/observed"); got != tid {
			t.Errorf("Subscribe: TID %#x, want the observed %#x", got, tid)
		}
		o.ExpectRaw(smqtest.ChangeRaw(tid, 1))
		s.Close()
		o.ExpectRaw(smqtest.ChangeRaw(tid, 0))
		o.Close()
		waitStats(t, b.Broker, "the topic to be freed", func(st broker.Stats) bool { return st.Sessions == 0 && st.Topics == 0 })
	})

	t.Run("takeover", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, broker.Config{})
		first := smqtest.Connect(t, b.Addr, "life-device")
		pub := smqtest.Connect(t, b.Addr, "life-device-pub")
		first.Subscribe("life/device")
		first.Createsub("life/device/sub")
		// The same UID takes the session over: what the first connection held
		// is released, and the device subscribes again by name, as
		// reconnecting clients do.
		second := smqtest.Connect(t, b.Addr, "life-device")
		first.ExpectDisconnect("reconnect")
		waitStats(t, b.Broker, "the taken-over session's topics to be freed", func(st broker.Stats) bool {
			return st.Topics == 0 && st.SubTopics == 0 && st.Subscriptions == 0
		})
		tid := second.Subscribe("life/device")
		second.Expect(pub.Publish(tid, 0, []byte("after the takeover")))
	})
}

// TestTopicLimits: a name over MaxTopicName and a topic or sub-topic beyond
// MaxTopicsPerSession get status 1 and ID 0 (an Observe gets nothing), the
// client carries on, and what it already holds still works; SetLimits
// changes the limits for every session.
func TestTopicLimits(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{MaxTopicName: 16, MaxTopicsPerSession: 3})
	c := smqtest.Connect(t, b.Addr, "limited-client")
	other := smqtest.Connect(t, b.Addr, "limited-other")

	long := strings.Repeat("n", 17)
	c.Send(smq.Subscribe{Topic: long})
	c.ExpectAck(smq.TypeSuback, smq.AckDenied, long)
	c.Send(smq.Create{Topic: long})
	c.ExpectAck(smq.TypeCreateack, smq.AckDenied, long)
	c.Send(smq.Createsub{Topic: long})
	c.ExpectAck(smq.TypeCreatesuback, smq.AckDenied, long)

	tid := c.Subscribe(long[:16]) // the longest allowed: 1 held
	created := c.Create("made")   // 2
	c.Createsub("sub")            // 3
	elsewhere := other.Create("elsewhere")
	c.Send(smq.Subscribe{Topic: "one-more"})
	c.ExpectAck(smq.TypeSuback, smq.AckDenied, "one-more")
	c.Send(smq.Create{Topic: "one-more"})
	c.ExpectAck(smq.TypeCreateack, smq.AckDenied, "one-more")
	c.Send(smq.Createsub{Topic: "one-more"})
	c.ExpectAck(smq.TypeCreatesuback, smq.AckDenied, "one-more")
	c.Send(smq.Observe{ID: elsewhere}) // not held: ignored
	c.Barrier()

	// What it holds still works: Subscribe to a topic it created, Observe
	// one it holds, publish and receive.
	if got := c.Subscribe("made"); got != created {
		t.Errorf("Subscribe to its own topic: TID %#x, want %#x", got, created)
	}
	c.Send(smq.Observe{ID: tid})
	c.ExpectRaw(smqtest.ChangeRaw(tid, 1))
	c.Expect(c.Publish(tid, 0, []byte("carries on")))
	// Observing a peer holds nothing.
	c.Send(smq.Observe{ID: other.ETID})
	c.Barrier()
	if st := b.Stats(); st.RefusedTopicName != 3 || st.RefusedTopicsPerSession != 4 || st.Topics != 3 || st.SubTopics != 1 {
		t.Errorf("Stats %+v, want 3 names and 4 topics refused, 3 topics and 1 sub-topic", st)
	}

	// Other sessions have limits of their own.
	other.Subscribe(long[:16])
	c.ExpectRaw(smqtest.ChangeRaw(tid, 2))
	other.Createsub("other-sub")

	// New limits apply to every session at once.
	b.SetLimits(limits.Broker{MaxTopicName: 4, MaxTopicsPerSession: 10})
	c.Send(smq.Create{Topic: "fifth"})
	c.ExpectAck(smq.TypeCreateack, smq.AckDenied, "fifth")
	c.Create("more")
	if got := b.Limits(); got.MaxTopicName != 4 || got.QueueBytes != limits.DefaultQueueBytes {
		t.Errorf("Limits() = %+v, want max_topic_name 4 and the default queue", got)
	}
}

// TestTopicFlood is the attack of issue 15: a client creates as many topics,
// subscriptions and sub-topics with 16 KiB names as the limits let it,
// reconnects (taking its own session over, then after closing) and does it
// again, three times. Beyond its limit it is refused, so it cannot grow the
// broker while connected; once it is gone, the heap is back where it was.
// Not parallel: it measures the process's heap.
func TestTopicFlood(t *testing.T) {
	const (
		perSession = limits.DefaultMaxTopicsPerSession
		nameSize   = 16 << 10
	)
	b := startBroker(t, broker.Config{MaxTopicName: nameSize})
	heap := func() int64 {
		runtime.GC()
		runtime.GC() // and what sync.Pools kept for one more cycle
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	start := heap()

	round, topics, subTopics := 0, 0, 0
	flood := func(c *smqtest.Conn) {
		t.Helper()
		round++
		name := func(i int) string {
			return fmt.Sprintf("%d/%05d/%s", round, i, strings.Repeat("x", nameSize-20))
		}
		topics, subTopics = 0, 0
		for i := range perSession {
			switch i % 3 {
			case 0:
				c.Create(name(i))
				topics++
			case 1:
				c.Subscribe(name(i))
				topics++
			default:
				c.Createsub(name(i))
				subTopics++
			}
		}
		// Beyond the limit: refused, and nothing more is held.
		for i := perSession; i < perSession+5; i++ {
			c.Send(smq.Create{Topic: name(i)})
			c.ExpectAck(smq.TypeCreateack, smq.AckDenied, name(i))
		}
	}

	first := smqtest.Connect(t, b.Addr, "flooder-1")
	flood(first)
	st := b.Stats()
	if st.Topics != topics || st.SubTopics != subTopics || st.RefusedTopicsPerSession != 5 {
		t.Fatalf("after one session's flood: %+v", st)
	}
	if grown := heap() - start; grown < perSession*nameSize*3/4 {
		t.Fatalf("the heap grew by %d bytes while %d names of %d bytes are held: the test measures nothing", grown, perSession, nameSize)
	}
	second := smqtest.Connect(t, b.Addr, "flooder-1") // takes the first over
	first.ExpectDisconnect("reconnect")
	flood(second)
	second.Close()
	third := smqtest.Connect(t, b.Addr, "flooder-1")
	flood(third)
	third.Close()

	waitStats(t, b.Broker, "every session, topic and sub-topic to be gone", func(st broker.Stats) bool {
		return st.Sessions == 0 && st.Topics == 0 && st.SubTopics == 0 && st.Subscriptions == 0 && st.QueuedBytes == 0
	})
	end := heap()
	t.Logf("heap: %d KiB at the start, %d KiB after 3 floods of %d × %d-byte names", start>>10, end>>10, perSession, nameSize)
	if end-start > 8<<20 {
		t.Errorf("the heap grew by %d KiB after the floods ended, want at most 8 MiB", (end-start)>>10)
	}
}

// TestQueueBudget: clients that never read, fed one-to-one messages, hold
// no more than the broker's budget (MaxQueuedBytes) together: the message
// that would exceed it disconnects the client holding the most with "slow
// consumer" first. The publisher and a reader are not slowed down.
//
// The clients that never read are served over net.Pipe: a pipe has no
// buffer, so what the broker holds for them is exactly what was sent to
// them, not what the kernel's socket buffers have not absorbed.
func TestQueueBudget(t *testing.T) {
	t.Parallel()
	const (
		msgSize = 32 << 10
		budget  = 2<<20 + 512<<10 // 80 messages
	)
	logs := &smqtest.SyncBuffer{}
	b := startBroker(t, broker.Config{QueueBytes: 1 << 20, QueueMessages: 1 << 16, MaxQueuedBytes: budget,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	pub := smqtest.Connect(t, b.Addr, "budget-publisher")
	reader := smqtest.Connect(t, b.Addr, "budget-reader")
	news := reader.Subscribe("budget/news")
	payload := make([]byte, msgSize-1-smq.PublishHeaderLen)

	var slow []*smqtest.Conn
	for i := range 4 {
		_, c := serveConnPipe(t, b.Broker, broker.Peer{IP: "192.0.2.9"})
		c.ReadInit()
		c.Login(fmt.Sprintf("budget-slow-%d", i))
		slow = append(slow, c)
	}
	// Queues of 28, 18 and 9 messages: 55 of the 80 the budget holds, each
	// under QueueBytes.
	for i, n := range []int{28, 18, 9} {
		for range n {
			pub.Publish(slow[i].ETID, 0, payload)
		}
	}
	pub.Barrier()
	if q := b.Stats().QueuedBytes; q < 55*msgSize || q > budget {
		t.Fatalf("QueuedBytes = %d, want at least %d and at most %d", q, 55*msgSize, budget)
	}

	// The fourth fills up: when the budget runs out, the first client, which
	// holds the most, goes; then the others fit again.
	var kickedAt int
	for i := range 28 {
		pub.Publish(slow[3].ETID, 0, payload)
		reader.Expect(pub.Publish(news, 0, []byte(fmt.Sprintf("news %d", i))))
		pub.Barrier()
		st := b.Stats()
		if st.QueuedBytes > budget {
			t.Fatalf("after %d messages to the fourth client: QueuedBytes = %d, over the budget %d", i+1, st.QueuedBytes, budget)
		}
		if st.BudgetDisconnects == 1 && kickedAt == 0 {
			kickedAt = i + 1
		}
	}
	st := b.Stats()
	if kickedAt == 0 || st.BudgetDisconnects != 1 || st.SlowDisconnects != 1 {
		t.Fatalf("Stats %+v, want one slow consumer disconnected for the budget", st)
	}
	if kickedAt < 20 || kickedAt > 27 {
		t.Errorf("the budget ran out at the %dth message to the fourth client, want about the 26th", kickedAt)
	}
	// Its queue was dropped: the 28 messages but those its writer had taken.
	if st.DroppedSlowConsumer > 28 {
		t.Errorf("DroppedSlowConsumer = %d, want at most the victim's 28 messages", st.DroppedSlowConsumer)
	}
	// The victim read nothing; what it gets now ends with Disconnect "slow
	// consumer" (unless the broker gave up on the write first).
	bye := smq.Disconnect{Reason: "slow consumer"}.Append(nil)
	for range 30 {
		f, err := slow[0].ReadFrame(smqtest.WaitFor)
		if err != nil {
			t.Logf("the victim's stream ended without the Disconnect: %v", err)
			break
		}
		if smq.Type(f.Msg[0]) != smq.TypePublish {
			if !bytes.Equal(f.Msg, bye) {
				t.Errorf("the victim got %s, want Disconnect \"slow consumer\"", smqtest.Describe(f.Msg))
			}
			break
		}
	}
	slow[0].Close()
	smqtest.WaitUntil(t, "the first client's session to end", func() bool {
		return strings.Contains(logs.String(), `uid=budget-slow-0 `)
	})
	if !strings.Contains(logs.String(), `uid=budget-slow-0 etid=`) || !strings.Contains(logs.String(), `reason="slow consumer"`) {
		t.Errorf("the victim's log line is not a slow consumer's:\n%s", logs)
	}
	for i := 1; i < 4; i++ {
		if strings.Contains(logs.String(), fmt.Sprintf("uid=budget-slow-%d ", i)) {
			t.Errorf("client %d was disconnected too:\n%s", i, logs)
		}
	}
	reader.Barrier()
	pub.Barrier()
}

// TestQueueOverflowCounted: a client that overflows its own queue is
// counted apart from those the budget disconnects, with the messages
// dropped for it; what it held goes back to the budget.
func TestQueueOverflowCounted(t *testing.T) {
	t.Parallel()
	const msgSize = 16 << 10
	b := startBroker(t, broker.Config{QueueBytes: 256 << 10})
	pub := smqtest.Connect(t, b.Addr, "overflow-publisher")
	_, slow := serveConnPipe(t, b.Broker, broker.Peer{IP: "192.0.2.10"})
	slow.ReadInit()
	slow.Login("overflow-slow")
	payload := make([]byte, msgSize-1-smq.PublishHeaderLen)
	// The writer may take up to 16 messages (QueueBytes) into a batch it
	// cannot write, then 16 more fill the queue: the 33rd overflows it.
	for i := 0; i < 40 && b.Stats().SlowDisconnects == 0; i++ {
		pub.Publish(slow.ETID, 0, payload)
		pub.Barrier()
	}
	st := b.Stats()
	if st.SlowDisconnects != 1 || st.BudgetDisconnects != 0 || st.DroppedSlowConsumer < 1 {
		t.Fatalf("Stats %+v, want one slow consumer for its queue, and its messages dropped", st)
	}
	slow.Close()
	waitStats(t, b.Broker, "the slow client's bytes to be given back", func(st broker.Stats) bool {
		return st.Sessions == 1 && st.QueuedBytes == 0
	})
}
