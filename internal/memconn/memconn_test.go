package memconn

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/smqtest"
	"go.uber.org/goleak"
	"golang.org/x/net/nettest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestConn is the standard net.Conn conformance suite, with the default
// buffers and with small ones that make every transfer block many times. (Its
// echo tests need room for a 13-byte round trip: smaller buffers deadlock
// them, as they would a TCP connection with such tiny socket buffers.)
func TestConn(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 100} {
		t.Run(map[int]string{0: "default", 100: "100B"}[size], func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				a, b := Pipe(size)
				return a, b, func() { a.Close(); b.Close() }, nil
			})
		})
	}
}

// pipe returns a pipe that is closed when the test ends.
func pipe(t *testing.T, size int) (*Conn, *Conn) {
	t.Helper()
	a, b := Pipe(size)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// waitBlocked waits until a Read (or a Write) on c waits for its peer.
func waitBlocked(t *testing.T, c *Conn, write bool) {
	t.Helper()
	h := c.in
	if write {
		h = c.out
	}
	smqtest.WaitUntil(t, "the operation to block", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return (write && h.wwait != nil) || (!write && h.rwait != nil)
	})
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v, want %v", what, err, target)
	}
	var oe *net.OpError
	if target != io.EOF && !errors.As(err, &oe) {
		t.Fatalf("%s: %T is not a *net.OpError", what, err)
	}
}

func TestAddrs(t *testing.T) {
	t.Parallel()
	a, b := pipe(t, 0)
	for _, c := range []struct {
		addr net.Addr
		want string
	}{{a.LocalAddr(), "a"}, {a.RemoteAddr(), "b"}, {b.LocalAddr(), "b"}, {b.RemoteAddr(), "a"}} {
		if c.addr.Network() != "memory" || c.addr.String() != c.want {
			t.Errorf("addr %s/%s, want memory/%s", c.addr.Network(), c.addr, c.want)
		}
	}
}

// TestBackpressure: a writer can get a buffer's worth ahead of its reader,
// and not one byte more.
func TestBackpressure(t *testing.T) {
	t.Parallel()
	const size = 1000
	a, b := pipe(t, size)
	// The write blocks with the buffer full; then its deadline passes.
	type result struct {
		n   int
		err error
	}
	wrote := make(chan result, 1)
	go func() {
		n, err := a.Write(make([]byte, size+10))
		wrote <- result{n, err}
	}()
	waitBlocked(t, a, true)
	if err := a.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	r := <-wrote
	n, err := r.n, r.err
	if n != size {
		t.Fatalf("wrote %d bytes into a %d-byte buffer", n, size)
	}
	wantErr(t, "write to a full buffer", err, os.ErrDeadlineExceeded)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("%v is not a timeout", err)
	}

	// Once the reader makes room, the writer goes on.
	if err := a.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(make([]byte, 500))
		done <- err
	}()
	buf := make([]byte, 300)
	for read := 0; read < size+500; {
		n, err := b.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		read += n
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLargeTransfer sends megabytes both ways at once through small buffers
// in random-sized writes and reads, and checks every byte.
func TestLargeTransfer(t *testing.T) {
	t.Parallel()
	a, b := pipe(t, 4096)
	const total = 8 << 20
	send := func(c *Conn, seed uint64) <-chan [32]byte {
		sum := make(chan [32]byte, 1)
		go func() {
			r := rand.New(rand.NewPCG(seed, seed))
			h := sha256.New()
			buf := make([]byte, 20000)
			for sent := 0; sent < total; {
				n := min(1+r.IntN(len(buf)), total-sent)
				for i := range buf[:n] {
					buf[i] = byte(r.Uint32())
				}
				h.Write(buf[:n])
				if _, err := c.Write(buf[:n]); err != nil {
					t.Error(err)
					break
				}
				sent += n
			}
			if err := c.CloseWrite(); err != nil {
				t.Error(err)
			}
			sum <- [32]byte(h.Sum(nil))
		}()
		return sum
	}
	recv := func(c *Conn, seed uint64) <-chan [32]byte {
		sum := make(chan [32]byte, 1)
		go func() {
			r := rand.New(rand.NewPCG(seed, seed))
			h := sha256.New()
			buf := make([]byte, 20000)
			n := int64(0)
			for {
				k, err := c.Read(buf[:1+r.IntN(len(buf))])
				h.Write(buf[:k])
				n += int64(k)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Error(err)
					break
				}
			}
			if n != total {
				t.Errorf("received %d bytes, want %d", n, total)
			}
			sum <- [32]byte(h.Sum(nil))
		}()
		return sum
	}
	sentAB, sentBA := send(a, 1), send(b, 2)
	gotAB, gotBA := recv(b, 3), recv(a, 4)
	if <-sentAB != <-gotAB {
		t.Error("a→b: the data differ")
	}
	if <-sentBA != <-gotBA {
		t.Error("b→a: the data differ")
	}
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	a, b := pipe(t, 0)
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The peer reads the rest, then io.EOF, again and again.
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v", got, err)
	}
	if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
	// This end can no longer write...
	_, err = a.Write([]byte("x"))
	wantErr(t, "write after CloseWrite", err, io.ErrClosedPipe)
	// ...but the other direction still works.
	if _, err := b.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(a)
	if err != nil || string(got) != "reply" {
		t.Fatalf("read %q, %v after the peer's Close", got, err)
	}
}

// TestCloseWriteWakesReader: a Read blocked on an empty buffer returns io.EOF
// when the peer half-closes.
func TestCloseWriteWakesReader(t *testing.T) {
	t.Parallel()
	a, b := pipe(t, 0)
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 10))
		done <- err
	}()
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != io.EOF {
		t.Fatalf("blocked read: %v, want io.EOF", err)
	}
}

// TestDeadlines: a deadline in the past interrupts a blocked Read or Write at
// once; clearing it makes the conn usable again; a future deadline fires on
// its own.
func TestDeadlines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		op   func(a *Conn) error
		set  func(a *Conn, t time.Time) error
	}{
		{"read", func(a *Conn) error { _, err := a.Read(make([]byte, 1)); return err }, (*Conn).SetReadDeadline},
		{"write", func(a *Conn) error { _, err := a.Write(make([]byte, 2000)); return err }, (*Conn).SetWriteDeadline},
		{"read/SetDeadline", func(a *Conn) error { _, err := a.Read(make([]byte, 1)); return err }, (*Conn).SetDeadline},
		{"write/SetDeadline", func(a *Conn) error { _, err := a.Write(make([]byte, 2000)); return err }, (*Conn).SetDeadline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pipe(t, 1000)
			done := make(chan error, 1)
			go func() { done <- tt.op(a) }()
			write := strings.HasPrefix(tt.name, "write")
			waitBlocked(t, a, write)
			if err := tt.set(a, time.Unix(1, 0)); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "interrupted op", <-done, os.ErrDeadlineExceeded)
			// Still in the past: fails at once, even with data waiting.
			if _, err := b.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "op with a past deadline", tt.op(a), os.ErrDeadlineExceeded)

			// A future deadline fires by itself (the read test first reads
			// the "x", the write test finds the buffer still full).
			if err := tt.set(a, time.Now().Add(30*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			for err := error(nil); err == nil; {
				err = tt.op(a)
				if err != nil {
					wantErr(t, "op past a future deadline", err, os.ErrDeadlineExceeded)
				}
			}

			// Cleared: the op works again.
			if err := tt.set(a, time.Time{}); err != nil {
				t.Fatal(err)
			}
			go func() { done <- tt.op(a) }()
			if write {
				// The 1000 bytes buffered before, and the 2000 of this write.
				if _, err := io.ReadFull(b, make([]byte, 3000)); err != nil {
					t.Fatal(err)
				}
			} else if _, err := b.Write([]byte("y")); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("after clearing the deadline: %v", err)
			}
		})
	}
}

// TestCloseWhileBlocked: Close wakes this end's blocked Read and Write with
// net.ErrClosed and the peer's with io.EOF and io.ErrClosedPipe.
func TestCloseWhileBlocked(t *testing.T) {
	t.Parallel()
	a, b := pipe(t, 100)
	if _, err := b.Write(make([]byte, 100)); err != nil { // b→a full
		t.Fatal(err)
	}
	if _, err := a.Write(make([]byte, 60)); err != nil { // a→b partly full
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(map[string]error)
	var mu sync.Mutex
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f()
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		}()
	}
	run("a.Write", func() error { _, err := a.Write(make([]byte, 100)); return err })
	run("b.Write", func() error { _, err := b.Write(make([]byte, 1)); return err })
	waitBlocked(t, a, true)
	waitBlocked(t, b, true)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	wantErr(t, "a.Write blocked when a closed", errs["a.Write"], net.ErrClosed)
	wantErr(t, "b.Write blocked when a closed", errs["b.Write"], io.ErrClosedPipe)

	// b reads everything a wrote before Close, then io.EOF.
	got, err := io.ReadAll(b)
	if err != nil || len(got) != 100 {
		t.Fatalf("b read %d bytes, %v; want 100 and io.EOF", len(got), err)
	}
	_, err = a.Read(make([]byte, 1))
	wantErr(t, "read on a closed conn", err, net.ErrClosed)
	wantErr(t, "second Close", a.Close(), net.ErrClosed)
	wantErr(t, "CloseWrite after Close", a.CloseWrite(), net.ErrClosed)
	wantErr(t, "SetDeadline after Close", a.SetDeadline(time.Now()), net.ErrClosed)
}

func TestCloseWakesBlockedRead(t *testing.T) {
	t.Parallel()
	a, _ := pipe(t, 0)
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		done <- err
	}()
	waitBlocked(t, a, false)
	a.Close()
	wantErr(t, "blocked read", <-done, net.ErrClosed)
}

// TestAtomicWrites: concurrent Writes larger than the buffer do not
// interleave.
func TestAtomicWrites(t *testing.T) {
	t.Parallel()
	a, b := pipe(t, 64)
	const writers, size = 8, 1000
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.Write(bytes.Repeat([]byte{byte('A' + i)}, size)); err != nil {
				t.Error(err)
			}
		}()
	}
	go func() { wg.Wait(); a.CloseWrite() }()
	got, err := io.ReadAll(b)
	if err != nil || len(got) != writers*size {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	for i := 0; i < len(got); i += size {
		if chunk := got[i : i+size]; !bytes.Equal(chunk, bytes.Repeat(chunk[:1], size)) {
			t.Fatalf("writes interleaved at offset %d", i)
		}
	}
}

// TestNoAllocsSteadyState: once the buffers have grown, moving data without
// blocking does not allocate. Not parallel: AllocsPerRun counts the
// allocations of the whole process.
func TestNoAllocsSteadyState(t *testing.T) {
	a, b := pipe(t, 0)
	msg := make([]byte, 512)
	buf := make([]byte, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write and read", allocs)
	}
}

func BenchmarkPipe(b *testing.B) {
	x, y := Pipe(0)
	defer x.Close()
	defer y.Close()
	msg := make([]byte, 1024)
	b.SetBytes(int64(len(msg)))
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := y.Read(buf); err != nil {
				return
			}
		}
	}()
	for b.Loop() {
		if _, err := x.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDrainedPipeShrinks: a pipe that grew for a burst gives its buffer
// back once drained (it kept it for the connection's life).
func TestDrainedPipeShrinks(t *testing.T) {
	a, b := Pipe(0)
	defer a.Close()
	defer b.Close()
	burst := make([]byte, 60000)
	go func() { _, _ = a.Write(burst) }()
	if _, err := io.ReadFull(b, make([]byte, len(burst))); err != nil {
		t.Fatal(err)
	}
	h := b.in
	h.mu.Lock()
	size, pooled := len(h.buf), h.pooled != nil
	h.mu.Unlock()
	if size != 0 || pooled {
		t.Errorf("drained pipe holds %d bytes (pooled %v), want none", size, pooled)
	}
}
