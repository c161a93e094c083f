package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
)

// wsServer serves WebSocket upgrades on a loopback listener the way the
// gateway does (gorilla's Upgrader with a pooled write buffer, then NewWS)
// and hands each WS to serve: in the handler's goroutine, or with detach
// in a goroutine of its own, the handler returning. It returns the
// listener's address.
func wsServer(tb testing.TB, maxRead int, detach bool, serve func(*WS)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	pool := &sync.Pool{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{WriteBufferSize: 4096, WriteBufferPool: pool,
			CheckOrigin: func(*http.Request) bool { return true }}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ws := NewWS(conn, maxRead)
		if detach {
			go serve(ws)
			return
		}
		serve(ws)
	})}
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// rawWSClient opens a WebSocket to addr by hand and returns the bare
// connection: the server sends nothing after its 101, so nothing is left
// buffered.
func rawWSClient(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatal(err)
	}
	// Read the head a byte at a time, so that nothing past it is taken.
	var head []byte
	var b [1]byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b[:]); err != nil {
			tb.Fatalf("handshake: %v after %q", err, head)
		}
		head = append(head, b[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		tb.Fatalf("handshake: %q", head)
	}
	return c
}

// maskedFrame returns a client's binary frame holding msg.
func maskedFrame(msg []byte, key uint32) []byte {
	b := []byte{0x82}
	switch n := len(msg); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	b = binary.BigEndian.AppendUint32(b, key)
	start := len(b)
	b = append(b, msg...)
	for i := range msg {
		b[start+i] ^= byte(key >> (24 - 8*(i&3)))
	}
	return b
}

// BenchmarkWSServer: the server side of a WebSocket (NewWS after
// gorilla's upgrade, as in the gateway and the broker) reads 64-byte
// messages a client sends in bursts and echoes each, flushing when
// Buffered says nothing more is waiting. The client writes prepared
// frames and reads the echoes as bytes, so the time and allocations are
// the server side's (both sides share the process).
func BenchmarkWSServer(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			addr := wsServer(b, 1<<16, false, func(ws *WS) {
				defer ws.Close()
				for {
					msg, err := ws.Read()
					if err != nil {
						return
					}
					if err := ws.Write(msg); err != nil {
						return
					}
					if ws.Buffered() == 0 {
						if err := ws.Flush(); err != nil {
							return
						}
					}
				}
			})
			c := rawWSClient(b, addr)
			msg := bytes.Repeat([]byte{0x0c}, 64)
			var burst []byte
			for i := range batch {
				burst = append(burst, maskedFrame(msg, uint32(0x01020304*(i+1)))...)
			}
			echo := make([]byte, batch*(2+len(msg)))
			roundTrip := func(n int) {
				if _, err := c.Write(burst[:n*len(burst)/batch]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, echo[:n*len(echo)/batch]); err != nil {
					b.Fatal(err)
				}
			}
			for range 1000 { // warm up: pools, buffers
				roundTrip(batch)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				roundTrip(min(batch, b.N-i))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestWSIdleMemory reports the memory an idle server-side WebSocket holds:
// SMQGW_MEMTEST=1 go test ./wire -run TestWSIdleMemory -v. Each session is
// NewWS after gorilla's upgrade with a goroutine blocked in Read: the
// handler's, as in the gateway, or one of its own once the handler has
// returned (net/http's connection, which holds the 4 KiB reader and
// writer it hijacked with, is then gone). The clients are bare loopback
// connections in the same process (SMQGW_MEMTEST_SESSIONS sets how many,
// 2000 by default).
func TestWSIdleMemory(t *testing.T) {
	if os.Getenv("SMQGW_MEMTEST") != "1" {
		t.Skip("set SMQGW_MEMTEST=1 to run")
	}
	n := 2000
	if s := os.Getenv("SMQGW_MEMTEST_SESSIONS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			t.Fatalf("SMQGW_MEMTEST_SESSIONS: bad count %q", s)
		}
	}
	for _, detach := range []bool{false, true} {
		name := map[bool]string{false: "in-handler", true: "handler-returned"}[detach]
		t.Run(name, func(t *testing.T) {
			var ready, done sync.WaitGroup
			addr := wsServer(t, 1<<16, detach, func(ws *WS) {
				defer done.Done()
				ready.Done()
				_, _ = ws.Read() // until the client goes
				ws.Close()
			})
			// Warm up the server and the pools with one session.
			ready.Add(1)
			done.Add(1)
			warm := rawWSClient(t, addr)
			ready.Wait()
			warm.Close()
			done.Wait()

			before := memNow()
			ready.Add(n)
			done.Add(n)
			conns := make([]net.Conn, n)
			for i := range conns {
				conns[i] = rawWSClient(t, addr)
			}
			ready.Wait()
			after := memNow()
			per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
			t.Logf("%s: %d idle server-side WebSockets (clients in-process): per session: heap+stack in use %.0f B "+
				"(heap in use %.0f, stack in use %.0f, live heap objects %.0f B)", name, n,
				per(after.HeapInuse+after.StackInuse, before.HeapInuse+before.StackInuse),
				per(after.HeapInuse, before.HeapInuse), per(after.StackInuse, before.StackInuse),
				per(after.HeapAlloc, before.HeapAlloc))
			for _, c := range conns {
				c.Close()
			}
			done.Wait()
		})
	}
}

func memNow() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
