package wire

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

func TestRawBufferedCountsWholeFramesOnly(t *testing.T) {
	t.Parallel()
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

// countingConn counts Write calls.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
