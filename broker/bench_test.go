package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smqgw/smqgw/smq"
)

// benchConn is a minimal raw SMQ peer for benchmarks: real loopback socket,
// the codec's reader, no client library in the way.
type benchConn struct {
	conn net.Conn
	r    *smq.Reader
	etid uint32
}

func benchDial(tb testing.TB, addr, uid string) *benchConn {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	c := &benchConn{conn: conn, r: smq.NewReader(bufio.NewReaderSize(conn, 64<<10))}
	req := smq.Request{Path: "/smq", Host: addr}
	c.write(tb, req.Append(nil))
	c.expect(tb, smq.TypeInit)
	c.send(tb, smq.Connect{Version: 1, UID: uid})
	ack := c.expect(tb, smq.TypeConnack)
	if ack[1] != 0 {
		tb.Fatalf("connack %x", ack)
	}
	c.etid = binary.BigEndian.Uint32(ack[2:])
	return c
}

func (c *benchConn) write(tb testing.TB, p []byte) {
	if _, err := c.conn.Write(p); err != nil {
		tb.Fatal(err)
	}
}

func (c *benchConn) send(tb testing.TB, m smq.Message) {
	b, err := smq.AppendRawMessage(nil, m)
	if err != nil {
		tb.Fatal(err)
	}
	c.write(tb, b)
}

func (c *benchConn) expect(tb testing.TB, t smq.Type) []byte {
	tb.Helper()
	msg, err := c.r.Read()
	if err != nil {
		tb.Fatalf("reading %v: %v", t, err)
	}
	if smq.Type(msg[0]) != t {
		tb.Fatalf("got %v, want %v", smq.Type(msg[0]), t)
	}
	return msg
}

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
		s := benchDial(b, addr, fmt.Sprintf("subscriber-%d", i))
		s.send(b, smq.Subscribe{Topic: "bench"})
		tid = binary.BigEndian.Uint32(s.expect(b, smq.TypeSuback)[2:])
		finished.Add(1)
		go func() {
			defer finished.Done()
			for {
				msg, err := s.r.Read()
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
	pub := benchDial(b, addr, "publisher-1")
	frame, _ := smq.AppendRawMessage(nil, &smq.Publish{TID: tid, PTID: pub.etid, Payload: make([]byte, size)})
	b.SetBytes(int64(size))
	b.ResetTimer()
	low := int64(0)
	for i := range target {
		for i-low >= window {
			<-progress
			low = slowest()
		}
		pub.write(b, frame)
	}
	finished.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(nsubs)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
	if st := br.Stats(); st.SlowDisconnects != 0 {
		b.Fatalf("%d slow-consumer disconnects in a flow-controlled run", st.SlowDisconnects)
	}
}
