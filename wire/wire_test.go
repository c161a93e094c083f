package wire

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestRawRoundTripAndHalfClose(t *testing.T) {
	a, b := tcpPair(t)
	ca, cb := NewRaw(a, nil), NewRaw(b, nil)
	msgs := [][]byte{smq.Ping{}.Append(nil), smq.Disconnect{Reason: "bye"}.Append(nil),
		(&smq.Publish{TID: 7, PTID: 9, Payload: make([]byte, smq.MaxRawMessage-13)}).Append(nil)}
	go func() {
		for _, m := range msgs {
			if err := ca.Write(m); err != nil {
				t.Error(err)
			}
		}
		if err := ca.Flush(); err != nil {
			t.Error(err)
		}
		if err := ca.CloseWrite(0, "", time.Now().Add(5*time.Second)); err != nil {
			t.Error(err)
		}
	}()
	for i, want := range msgs {
		got, err := cb.Read()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != string(want) {
			t.Fatalf("message %d: %d bytes differ from the %d sent", i, len(got), len(want))
		}
	}
	if _, err := cb.Read(); err != io.EOF {
		t.Fatalf("after CloseWrite: %v, want io.EOF", err)
	}
	// The half-closed side can still receive.
	if err := cb.Write(smq.Pong{}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	if err := cb.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, err := ca.Read(); err != nil || smq.Type(got[0]) != smq.TypePong {
		t.Fatalf("read on the half-closed side: %x, %v", got, err)
	}
}

func TestRawRefusesWhatCannotBeFramed(t *testing.T) {
	a, _ := tcpPair(t)
	c := NewRaw(a, nil)
	for _, n := range []int{0, smq.MaxRawMessage + 1, 70000} {
		msg := make([]byte, n)
		if n > 0 {
			msg[0] = byte(smq.TypePublish)
		}
		err := c.Write(msg)
		if err == nil {
			t.Fatalf("%d bytes: written", n)
		}
		if n > 0 && !errors.Is(err, smq.ErrTooBig) {
			t.Fatalf("%d bytes: %v, want ErrTooBig", n, err)
		}
	}
	if c.out.len() != 0 {
		t.Fatalf("%d bytes buffered after refused writes", c.out.len())
	}
}

func TestRawBuffered(t *testing.T) {
	a, b := tcpPair(t)
	two, _ := smq.AppendRawMessage(nil, smq.Ping{})
	two, _ = smq.AppendRawMessage(two, smq.Pong{})
	if _, err := a.Write(two); err != nil {
		t.Fatal(err)
	}
	c := NewRaw(b, nil)
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	if c.Buffered() != 3 {
		t.Fatalf("Buffered = %d after the first of two frames read in one go, want 3", c.Buffered())
	}
}

func TestWSRoundTripAndReadLimit(t *testing.T) {
	got := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := NewWS(conn, 100)
		defer c.Close()
		for {
			msg, err := c.Read()
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), msg...)
			if err := c.Write(msg); err != nil {
				return
			}
			if err := c.Flush(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := NewWSClient(conn, smq.MaxRawFrame)
	// A text frame is accepted; the echo comes back binary.
	if err := conn.WriteMessage(websocket.TextMessage, []byte{byte(smq.TypeSubscribe), 'a'}); err != nil {
		t.Fatal(err)
	}
	if m := <-got; string(m) != "\x04a" {
		t.Fatalf("server read %q", m)
	}
	typ, echo, err := conn.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage || string(echo) != "\x04a" {
		t.Fatalf("echo: type %d %q %v", typ, echo, err)
	}
	// Over the server's limit of 100 bytes: close 1009.
	if err := c.Write(make([]byte, 101)); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("after an oversize message: %v, want close 1009", err)
	}
}

// TestWSWriteDeadline: a peer that stops reading must trip the write
// deadline set before the writes (gorilla would otherwise reset it).
func TestWSWriteDeadline(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		<-stop // never reads
		conn.Close()
	}))
	defer srv.Close()
	defer close(stop)
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := NewWSClient(conn, smq.MaxRawFrame)
	if err := c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 60000)
	msg[0] = byte(smq.TypePublish)
	for i := 0; ; i++ {
		if err := c.Write(msg); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("write %d: %v, want a timeout", i, err)
			}
			return
		}
		if i > 10000 {
			t.Fatal("600 MB written to a peer that reads nothing")
		}
	}
}

func TestRawBufferedCountsWholeFramesOnly(t *testing.T) {
	a, b := tcpPair(t)
	ping, _ := smq.AppendRawMessage(nil, smq.Ping{})
	pub, _ := smq.AppendRawMessage(nil, &smq.Publish{TID: 1, PTID: 2, Payload: []byte("payload")})
	// A whole Ping, then all of a Publish but its last byte.
	if _, err := a.Write(append(ping, pub[:len(pub)-1]...)); err != nil {
		t.Fatal(err)
	}
	c := NewRaw(b, nil)
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	// Wait until the partial frame has arrived, without reading it.
	deadline := time.Now().Add(5 * time.Second)
	for c.r.Buffered().Buffered() < len(pub)-1 {
		if time.Now().After(deadline) {
			t.Fatal("partial frame never arrived")
		}
		c.r.Buffered().Peek(c.r.Buffered().Buffered() + 1)
	}
	if n := c.Buffered(); n != 0 {
		t.Fatalf("Buffered = %d with only part of a frame buffered, want 0", n)
	}
	a.Write(pub[len(pub)-1:])
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
}

// hijackKeeper keeps the hijacked reader, as the gateway does.
type hijackKeeper struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (h *hijackKeeper) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if brw != nil {
		h.br = brw.Reader
	}
	return c, brw, err
}

func TestWSBufferedCountsWholeFramesOnly(t *testing.T) {
	ready := make(chan *WS, 1)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hk := &hijackKeeper{ResponseWriter: w}
		conn, err := (&websocket.Upgrader{}).Upgrade(hk, r, nil) // ReadBufferSize 0: reuses hk.br
		if err != nil {
			return
		}
		defer conn.Close()
		c := NewWS(conn, 100)
		c.UseReader(hk.br)
		ready <- c
		<-done
	}))
	defer srv.Close()
	defer close(done)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := <-ready
	// A masked binary frame with a 10-byte payload and an all-zero mask,
	// written by hand: first all but its last 5 bytes.
	frame := append([]byte{0x82, 0x80 | 10, 0, 0, 0, 0}, []byte("\x0cpayload!!")...)
	if _, err := client.NetConn().Write(frame[:len(frame)-5]); err != nil {
		t.Fatal(err)
	}
	for c.br.Buffered() < len(frame)-5 {
		c.br.Peek(c.br.Buffered() + 1)
	}
	if n := c.Buffered(); n != 0 {
		t.Fatalf("Buffered = %d with part of a frame, want 0", n)
	}
	if _, err := client.NetConn().Write(frame[len(frame)-5:]); err != nil {
		t.Fatal(err)
	}
	for c.br.Buffered() < len(frame) {
		c.br.Peek(c.br.Buffered() + 1)
	}
	if n := c.Buffered(); n != len(frame) {
		t.Fatalf("Buffered = %d with a whole frame, want %d", n, len(frame))
	}
	msg, err := c.Read()
	if err != nil || string(msg) != "\x0cpayload!!" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
	if n := c.Buffered(); n != 0 {
		t.Fatalf("Buffered = %d after reading everything", n)
	}
	// A whole Ping frame does not count: Read answers it and then waits.
	ping := []byte{0x89, 0x80, 0, 0, 0, 0}
	if _, err := client.NetConn().Write(ping); err != nil {
		t.Fatal(err)
	}
	for c.br.Buffered() < len(ping) {
		c.br.Peek(c.br.Buffered() + 1)
	}
	if n := c.Buffered(); n != 0 {
		t.Fatalf("Buffered = %d with only a Ping frame, want 0", n)
	}
}

// TestWSCoalesces: messages written before a Flush leave in one write, in
// order, masked by a client and not by a server (gorilla checks both);
// pings are answered and a close is echoed once, through the same queue.
func TestWSCoalesces(t *testing.T) {
	serverDone := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := NewWS(conn, smq.MaxRawFrame)
		defer s.Close()
		for {
			msg, err := s.Read()
			if err != nil {
				serverDone <- err
				return
			}
			_ = s.Write(append([]byte(nil), msg...))
			_ = s.Flush()
		}
	}))
	defer srv.Close()
	var counting *countingConn
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nc, err := net.Dial(network, addr)
		counting = &countingConn{Conn: nc}
		return counting, err
	}}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	counting.writes.Store(0) // the upgrade request
	c := NewWSClient(conn, smq.MaxRawFrame)
	var want [][]byte
	for i := range 50 {
		m := (&smq.Publish{TID: 1, PTID: 2, Payload: make([]byte, i*20)}).Append(nil)
		want = append(want, m)
		if err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if counting.writes.Load() != 0 {
		t.Fatalf("%d writes before Flush", counting.writes.Load())
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := counting.writes.Load(); n != 1 {
		t.Errorf("50 messages in %d writes, want 1", n)
	}
	for i, w := range want {
		got, err := c.Read()
		if err != nil || string(got) != string(w) {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
	}
	if err := c.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	pong := make(chan string, 1)
	c.Conn().SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := c.CloseWrite(websocket.CloseNormalClosure, "bye", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(want[0]); !errors.Is(err, websocket.ErrCloseSent) {
		t.Errorf("Write after close: %v", err)
	}
	_, err = c.Read()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after our close: %v, want the echo 1000", err)
	}
	if p := <-pong; p != "hi" {
		t.Errorf("pong %q", p)
	}
	if err := <-serverDone; !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server: %v", err)
	}
}

// countingConn counts Write calls.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// wsPair returns a client WS on one end of a real WebSocket and the
// gorilla connection of the server end, served by serve.
func wsPair(t *testing.T, serve func(*websocket.Conn)) *WS {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		serve(conn)
		<-done
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return NewWSClient(conn, smq.MaxRawFrame)
}

// TestWSControlKeepsDataDeadline: a control frame's short deadline does not
// stay on the connection for the data written after it.
func TestWSControlKeepsDataDeadline(t *testing.T) {
	c := wsPair(t, func(conn *websocket.Conn) {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	})
	if err := c.WriteControl(websocket.PingMessage, nil, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := c.Write(smq.Ping{}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("a write after the ping's deadline passed: %v", err)
	}
}

// TestWSCloseWriteCutsStuckWrite: CloseWrite returns by its deadline when
// a write is stuck on a peer that reads nothing.
func TestWSCloseWriteCutsStuckWrite(t *testing.T) {
	c := wsPair(t, func(*websocket.Conn) {}) // never reads
	stuck := make(chan error, 1)
	go func() {
		msg := make([]byte, 60000)
		msg[0] = byte(smq.TypePublish)
		for i := 0; i < 10000; i++ {
			if err := c.Write(msg); err != nil {
				stuck <- err
				return
			}
		}
		stuck <- errors.New("600 MB written to a peer that reads nothing")
	}()
	time.Sleep(300 * time.Millisecond) // the writer is blocked by now
	start := time.Now()
	_ = c.CloseWrite(websocket.CloseGoingAway, "bye", time.Now().Add(200*time.Millisecond))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("CloseWrite took %v", d)
	}
	if err := <-stuck; err == nil {
		t.Fatal("the stuck write did not fail")
	}
}

// TestWSOversizeClosesOnce: over the read limit gorilla sends close 1009;
// WS then sends nothing more (no data frame, no second close).
func TestWSOversizeClosesOnce(t *testing.T) {
	server := make(chan *WS, 1)
	readErr := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := NewWS(conn, 100)
		server <- s
		_, err = s.Read()
		readErr <- err
	}))
	defer srv.Close()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := <-server
	if err := conn.WriteMessage(websocket.BinaryMessage, make([]byte, 101)); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err == nil {
		t.Fatal("an oversize message was read")
	}
	if err := s.Write(smq.Disconnect{Reason: "message too big"}.Append(nil)); !errors.Is(err, websocket.ErrCloseSent) {
		t.Errorf("Write after gorilla's close: %v, want ErrCloseSent", err)
	}
	if err := s.CloseWrite(websocket.CloseMessageTooBig, "again", time.Now().Add(time.Second)); err != nil {
		t.Errorf("CloseWrite after gorilla's close: %v", err)
	}
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("client: %v, want close 1009", err)
	}
}
