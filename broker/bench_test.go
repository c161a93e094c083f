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

	"github.com/smqgw/smqgw/internal/memconn"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// BenchmarkFanout publishes 64-byte messages from one raw client to N raw
// subscribers over loopback. The publisher keeps at most window messages
// ahead of the slowest subscriber, so the figure is sustained delivery, not
// queueing. msgs/s counts deliveries (publishes × subscribers).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFlow(b, "tcp", 1, n, 64) })
	}
}

// BenchmarkFanin publishes 64-byte messages from 20 clients to one
// subscriber, over loopback ("tcp") or over in-process pipes served by
// ServeConn, as the gateway reaches the embedded broker ("pipe"). Flow
// control as in BenchmarkFanout, on all publishers together.
func BenchmarkFanin(b *testing.B) {
	for _, via := range []string{"tcp", "pipe"} {
		b.Run(via, func(b *testing.B) { benchFlow(b, via, 20, 1, 64) })
	}
}

// BenchmarkFanoutPipe is BenchmarkFanout's 1 → 20 over in-process pipes.
func BenchmarkFanoutPipe(b *testing.B) { benchFlow(b, "pipe", 1, 20, 64) }

// benchDial returns a logged-in raw client of br: over loopback TCP to
// addr, or over a memconn pipe served by ServeConn.
func benchDial(b *testing.B, br *Broker, via, addr, uid string) *smqtest.Fast {
	if via == "tcp" {
		return smqtest.DialFast(b, addr, nil, uid)
	}
	ours, theirs := memconn.Pipe(0)
	go br.ServeConn(theirs, Peer{IP: "192.0.2.1"})
	b.Cleanup(func() { ours.Close() })
	c := &smqtest.Fast{Conn: ours, R: smq.NewReader(bufio.NewReaderSize(ours, 64<<10))}
	c.Expect(b, smq.TypeInit)
	c.Send(b, smq.Connect{Version: 1, UID: uid})
	ack := c.Expect(b, smq.TypeConnack)
	c.ETID = binary.BigEndian.Uint32(ack[2:])
	return c
}

func benchFlow(b *testing.B, via string, npubs, nsubs, size int) {
	const window = 1000 // publishes all publishers together may run ahead
	br := New(Config{})
	addr := ""
	if via == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go br.Serve(l)
		addr = l.Addr().String()
	}
	b.Cleanup(func() { br.Shutdown(context.Background()) })

	per := max(int64(b.N)/int64(npubs), 1)
	target := per * int64(npubs)
	counts := make([]atomic.Int64, nsubs)
	var mu sync.Mutex
	progress := sync.NewCond(&mu)
	var finished sync.WaitGroup
	var tid uint32
	for i := range nsubs {
		s := benchDial(b, br, via, addr, fmt.Sprintf("subscriber-%d", i))
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
					mu.Lock()
					progress.Broadcast()
					mu.Unlock()
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
	pubs := make([]*smqtest.Fast, npubs)
	frames := make([][]byte, npubs)
	for i := range pubs {
		pubs[i] = benchDial(b, br, via, addr, fmt.Sprintf("publisher-%d", i))
		frames[i], _ = smq.AppendRawMessage(nil, &smq.Publish{TID: tid, PTID: pubs[i].ETID, Payload: make([]byte, size)})
	}
	var sent atomic.Int64
	b.SetBytes(int64(size))
	b.ResetTimer()
	var published sync.WaitGroup
	for i := range pubs {
		published.Add(1)
		go func() {
			defer published.Done()
			for range per {
				if sent.Add(1)-slowest() > window {
					mu.Lock()
					for sent.Load()-slowest() > window {
						progress.Wait()
					}
					mu.Unlock()
				}
				if _, err := pubs[i].Conn.Write(frames[i]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	published.Wait()
	finished.Wait()
	b.StopTimer()
	b.ReportMetric(float64(target)*float64(nsubs)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(target)/b.Elapsed().Seconds(), "publishes/s")
	if st := br.Stats(); st.SlowDisconnects != 0 {
		b.Fatalf("%d slow-consumer disconnects in a flow-controlled run", st.SlowDisconnects)
	}
}
