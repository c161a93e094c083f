package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// BenchmarkFanout publishes 64-byte messages from one raw client to N raw
// subscribers over loopback. The publisher keeps at most window messages
// ahead of the slowest subscriber, so the figure is sustained delivery, not
// queueing. msgs/s counts deliveries (publishes × subscribers).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFanout(b, n, 64) })
	}
}

func benchFanout(b *testing.B, nsubs, size int) {
	const window = 1000 // publishes the publisher may run ahead
	br := New(Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go br.Serve(l)
	b.Cleanup(func() { br.Shutdown(context.Background()) })
	addr := l.Addr().String()

	target := int64(b.N)
	counts := make([]atomic.Int64, nsubs)
	progress := make(chan struct{}, 1)
	var finished sync.WaitGroup
	var tid uint32
	for i := range nsubs {
		s := smqtest.DialFast(b, addr, nil, fmt.Sprintf("subscriber-%d", i))
		s.Send(b, smq.Subscribe{Topic: "bench"})
		tid = binary.BigEndian.Uint32(s.Expect(b, smq.TypeSuback)[2:])
		finished.Add(1)
		go func() {
			defer finished.Done()
			for {
				msg, err := s.R.Read()
				if err != nil {
					return
				}
				if smq.Type(msg[0]) != smq.TypePublish {
					continue
				}
				n := counts[i].Add(1)
				if n%100 == 0 || n == target {
					select {
					case progress <- struct{}{}:
					default:
					}
				}
				if n == target {
					return
				}
			}
		}()
	}
	slowest := func() int64 {
		m := counts[0].Load()
		for i := range counts {
			m = min(m, counts[i].Load())
		}
		return m
	}
	pub := smqtest.DialFast(b, addr, nil, "publisher-1")
	frame, _ := smq.AppendRawMessage(nil, &smq.Publish{TID: tid, PTID: pub.ETID, Payload: make([]byte, size)})
	b.SetBytes(int64(size))
	b.ResetTimer()
	low := int64(0)
	for i := range target {
		for i-low >= window {
			<-progress
			low = slowest()
		}
		pub.Write(b, frame)
	}
	finished.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(nsubs)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
	if st := br.Stats(); st.SlowDisconnects != 0 {
		b.Fatalf("%d slow-consumer disconnects in a flow-controlled run", st.SlowDisconnects)
	}
}
