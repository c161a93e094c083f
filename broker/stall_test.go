package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/memconn"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// TestStalledPipeSubscribers: subscribers that stop reading, on in-process
// pipes as the gateway reaches the embedded broker, cannot slow down the
// publisher or the other subscribers: only their own writers wait on them
// (the write timeout is an hour here), until their queues overflow and
// they go as slow consumers. A publisher that wrote to subscribers itself
// would hang here at the first full pipe.
func TestStalledPipeSubscribers(t *testing.T) {
	t.Parallel()
	const stalled = 4
	b := startBroker(t, broker.Config{QueueBytes: 128 << 10, WriteTimeout: time.Hour})
	pub := smqtest.Connect(t, b.Addr, "stall-publisher")
	reader := smqtest.Connect(t, b.Addr, "stall-reader")
	tid := reader.Subscribe("stall/news")
	for i := range stalled {
		ours, theirs := memconn.Pipe(0)
		serveConn(t, b.Broker, theirs, broker.Peer{IP: "192.0.2.11"})
		c := smqtest.New(t, ours)
		c.ReadInit()
		c.Login(fmt.Sprintf("stall-sub-%d", i))
		c.Subscribe("stall/news") // and never reads again
	}

	// 1 KiB messages: 64 fill a pipe, 128 more a queue.
	payload := make([]byte, 1<<10)
	for i := 0; i < 1000 && b.Stats().SlowDisconnects < stalled; i++ {
		copy(payload, fmt.Sprintf("message %d", i))
		reader.Expect(pub.Publish(tid, 0, payload))
		if i%16 == 15 {
			pub.Barrier()
		}
	}
	pub.Barrier()
	if st := b.Stats(); st.SlowDisconnects != stalled {
		t.Fatalf("Stats %+v, want the %d stalled subscribers gone as slow consumers", st, stalled)
	}
	reader.Expect(pub.Publish(tid, 0, []byte("after")))
}
