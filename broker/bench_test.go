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

// benchNode is a broker and, over "tcp", its address.
type benchNode struct {
	br   *Broker
	addr string
}

// startBenchNode starts a broker with cfg, listening on loopback over
// "tcp".
func startBenchNode(b *testing.B, via string, cfg Config) benchNode {
	n := benchNode{br: New(cfg)}
	if via == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go n.br.Serve(l)
		n.addr = l.Addr().String()
	}
	b.Cleanup(func() { n.br.Shutdown(context.Background()) })
	return n
}

func benchFlow(b *testing.B, via string, npubs, nsubs, size int) {
	n := startBenchNode(b, via, Config{})
	benchFlowOn(b, via, []benchNode{n}, []benchNode{n}, npubs, nsubs, size)
}

// benchFlowOn runs benchFlow's flow with publisher i on pubNodes[i%len]
// and subscriber i on subNodes[i%len]; the nodes may be one broker, or
// nodes of a cluster.
func benchFlowOn(b *testing.B, via string, pubNodes, subNodes []benchNode, npubs, nsubs, size int) {
	const window = 1000 // publishes all publishers together may run ahead

	per := max(int64(b.N)/int64(npubs), 1)
	target := per * int64(npubs)
	counts := make([]atomic.Int64, nsubs)
	var mu sync.Mutex
	progress := sync.NewCond(&mu)
	var finished sync.WaitGroup
	for i := range nsubs {
		node := subNodes[i%len(subNodes)]
		s := benchDial(b, node.br, via, node.addr, fmt.Sprintf("subscriber-%d", i))
		s.Send(b, smq.Subscribe{Topic: "bench"})
		s.Expect(b, smq.TypeSuback)
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
		node := pubNodes[i%len(pubNodes)]
		pubs[i] = benchDial(b, node.br, via, node.addr, fmt.Sprintf("publisher-%d", i))
		pubs[i].Send(b, smq.Create{Topic: "bench"}) // its own node's TID
		ptid := binary.BigEndian.Uint32(pubs[i].Expect(b, smq.TypeCreateack)[2:])
		frames[i], _ = smq.AppendRawMessage(nil, &smq.Publish{TID: ptid, PTID: pubs[i].ETID, Payload: make([]byte, size)})
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
	for _, n := range append(pubNodes, subNodes...) {
		if st := n.br.Stats(); st.SlowDisconnects != 0 {
			b.Fatalf("%d slow-consumer disconnects in a flow-controlled run", st.SlowDisconnects)
		} else if st.Cluster != nil && st.Cluster.Dropped != 0 {
			b.Fatalf("%d messages dropped between nodes in a flow-controlled run", st.Cluster.Dropped)
		}
	}
}
