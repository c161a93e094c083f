// Package memconn is an in-process, full-duplex, buffered net.Conn pair. It
// exists because net.Pipe is synchronous: every Write waits for a Read on the
// other end, which serialises a broker session's reader and writer against the
// gateway's. Here each direction has a bounded buffer, so a writer only blocks
// when its peer has that much unread data (backpressure), and the conns
// support deadlines, half-close (CloseWrite) and Close like TCP does.
package memconn

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultSize is the buffer size of each direction when Pipe is given 0.
const DefaultSize = 64 << 10

// Network is the network name of the conns' addresses.
const Network = "memory"

// Addr is the address of one end of a pipe.
type Addr string

// Network returns "memory".
func (Addr) Network() string { return Network }

func (a Addr) String() string { return string(a) }

// Pipe returns the two ends of an in-memory connection: what one end writes,
// the other reads. Each direction buffers up to size bytes (0 means
// DefaultSize); a Write blocks while its direction's buffer is full. The
// buffers grow on demand up to size, so an idle pipe holds little memory.
//
// The ends are named by their addresses: a's LocalAddr is "a" and its
// RemoteAddr "b", and the other way round.
func Pipe(size int) (a, b *Conn) {
	if size <= 0 {
		size = DefaultSize
	}
	ab, ba := &half{max: size}, &half{max: size}
	a = newConn(ba, ab, "a", "b")
	b = newConn(ab, ba, "b", "a")
	return a, b
}

// Conn is one end of a Pipe. It is safe for concurrent use, like a TCP conn:
// concurrent Writes do not interleave their bytes.
type Conn struct {
	in, out       *half // in: what this end reads; out: what it writes
	local, remote Addr

	rd, wd deadline
	wmu    sync.Mutex // one Write at a time, so Writes are atomic

	closeOnce sync.Once
	closed    chan struct{}
}

func newConn(in, out *half, local, remote Addr) *Conn {
	return &Conn{in: in, out: out, local: local, remote: remote,
		rd: newDeadline(), wd: newDeadline(), closed: make(chan struct{})}
}

// Read reads buffered data, waiting for some if there is none. After the
// peer's CloseWrite or Close it returns the rest of the data, then io.EOF.
// A passed read deadline gives an error wrapping os.ErrDeadlineExceeded, and
// a Read on a closed Conn (or blocked in one being closed) an error wrapping
// net.ErrClosed.
func (c *Conn) Read(p []byte) (int, error) {
	h := c.in
	for {
		if isClosed(c.closed) {
			return 0, c.opErr("read", net.ErrClosed)
		}
		dl := c.rd.wait()
		if isClosed(dl) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		h.mu.Lock()
		if h.n > 0 || len(p) == 0 {
			n := h.read(p)
			h.wakeWriters()
			h.mu.Unlock()
			return n, nil
		}
		if h.eof {
			h.mu.Unlock()
			return 0, io.EOF
		}
		if h.rwait == nil {
			h.rwait = make(chan struct{})
		}
		wait := h.rwait
		h.mu.Unlock()
		select {
		case <-wait:
		case <-dl:
		case <-c.closed:
		}
	}
}

// Write writes all of p, waiting for room in the buffer as often as needed.
// It fails with io.ErrClosedPipe after this end's CloseWrite or the peer's
// Close, with os.ErrDeadlineExceeded when the write deadline passes, and with
// net.ErrClosed once this end is closed; n says how much of p was buffered
// before that. Errors are *net.OpError.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := c.out
	n := 0
	for {
		if isClosed(c.closed) {
			return n, c.opErr("write", net.ErrClosed)
		}
		dl := c.wd.wait()
		if isClosed(dl) {
			return n, c.opErr("write", os.ErrDeadlineExceeded)
		}
		h.mu.Lock()
		if h.eof || h.broken {
			h.mu.Unlock()
			return n, c.opErr("write", io.ErrClosedPipe)
		}
		k := h.write(p[n:])
		n += k
		if k > 0 {
			h.wakeReaders()
		}
		if n == len(p) {
			h.mu.Unlock()
			return n, nil
		}
		if h.wwait == nil {
			h.wwait = make(chan struct{})
		}
		wait := h.wwait
		h.mu.Unlock()
		select {
		case <-wait:
		case <-dl:
		case <-c.closed:
		}
	}
}

// CloseWrite ends this end's sending side: the peer reads what is buffered,
// then io.EOF. Reading goes on.
func (c *Conn) CloseWrite() error {
	if isClosed(c.closed) {
		return c.opErr("close", net.ErrClosed)
	}
	c.out.finish()
	return nil
}

// Close closes this end: blocked and future Reads and Writes on it fail with
// net.ErrClosed. The peer reads what this end had written, then io.EOF; its
// Writes fail with io.ErrClosedPipe. Data sent to this end and not read yet
// is discarded. A second Close returns an error wrapping net.ErrClosed.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
		c.out.finish()
		c.in.abandon()
		c.rd.stop()
		c.wd.stop()
	})
	if !first {
		return c.opErr("close", net.ErrClosed)
	}
	return nil
}

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return c.opErr("set deadline", net.ErrClosed)
	}
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the time after which Read fails; a time in the past
// interrupts a blocked Read at once; the zero time means no deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return c.opErr("set deadline", net.ErrClosed)
	}
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the time after which Write fails, like
// SetReadDeadline does for Read. It may be called from any goroutine to cut a
// blocked Write short.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return c.opErr("set deadline", net.ErrClosed)
	}
	c.wd.set(t)
	return nil
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: Network, Source: c.local, Addr: c.remote, Err: err}
}

// half is one direction of a pipe: a ring buffer of at most max bytes that
// grows on demand.
type half struct {
	mu     sync.Mutex
	buf    []byte
	pooled *[]byte // buf's entry in bigPipes, if it is one
	r, n   int     // read position and number of buffered bytes
	max    int     // the most buf may grow to
	eof    bool    // the writing end is done (CloseWrite or Close)
	broken bool    // the reading end is closed: writes fail, data is dropped

	// rwait and wwait are closed, and set to nil, to wake the readers
	// waiting for data and the writers waiting for room. They are only made
	// when someone waits, so a pipe that never blocks does not allocate.
	rwait, wwait chan struct{}
}

// read moves buffered bytes to p. h.mu is held.
func (h *half) read(p []byte) int {
	k := 0
	for k < len(p) && h.n > 0 {
		end := min(h.r+h.n, len(h.buf))
		c := copy(p[k:], h.buf[h.r:end])
		h.r = (h.r + c) % len(h.buf)
		h.n -= c
		k += c
	}
	if h.n == 0 {
		h.r = 0
		if len(h.buf) > smallPipe {
			// Drained: an idle pipe does not keep what a burst grew.
			h.release()
		}
	}
	return k
}

// smallPipe is the size a pipe's buffer starts at; beyond it, a pipe of
// DefaultSize takes a buffer from bigPipes, and gives it back when drained.
const smallPipe = 4096

var bigPipes = sync.Pool{New: func() any { b := make([]byte, DefaultSize); return &b }}

// release drops the buffer of a drained pipe, back to bigPipes if it came
// from there. h.mu is held.
func (h *half) release() {
	if h.pooled != nil {
		bigPipes.Put(h.pooled)
		h.pooled = nil
	}
	h.buf, h.r = nil, 0
}

// write buffers as much of p as there is room for. h.mu is held.
func (h *half) write(p []byte) int {
	if want := h.n + len(p); want > len(h.buf) && len(h.buf) < h.max {
		h.grow(want)
	}
	k := 0
	for k < len(p) && h.n < len(h.buf) {
		w := (h.r + h.n) % len(h.buf)
		end := len(h.buf)
		if w < h.r {
			end = h.r
		}
		c := copy(h.buf[w:end], p[k:])
		h.n += c
		k += c
	}
	return k
}

// grow enlarges the buffer towards want bytes, doubling, within max.
func (h *half) grow(want int) {
	size := max(2*len(h.buf), smallPipe, want)
	size = min(size, h.max)
	var buf []byte
	var pooled *[]byte
	if size > smallPipe && h.max == DefaultSize {
		pooled = bigPipes.Get().(*[]byte) // all the way: pooled
		buf = *pooled
	} else {
		buf = make([]byte, size)
	}
	n := copy(buf, h.buf[h.r:min(h.r+h.n, len(h.buf))])
	copy(buf[n:], h.buf[:h.n-n])
	if h.pooled != nil { // a pooled buffer is as big as it gets: never here
		bigPipes.Put(h.pooled)
	}
	h.buf, h.r, h.pooled = buf, 0, pooled
}

// finish marks the end of the data: the reader gets io.EOF once it has
// read the rest, and writers fail.
func (h *half) finish() {
	h.mu.Lock()
	h.eof = true
	h.wakeReaders()
	h.wakeWriters()
	h.mu.Unlock()
}

// abandon is the reading end's Close: buffered data is dropped and writers
// fail.
func (h *half) abandon() {
	h.mu.Lock()
	h.broken = true
	h.release()
	h.n = 0
	h.wakeReaders()
	h.wakeWriters()
	h.mu.Unlock()
}

func (h *half) wakeReaders() {
	if h.rwait != nil {
		close(h.rwait)
		h.rwait = nil
	}
}

func (h *half) wakeWriters() {
	if h.wwait != nil {
		close(h.wwait)
		h.wwait = nil
	}
}

// deadline is a read or write deadline: a channel that is closed when the
// deadline passes and replaced when a new deadline is set.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline has passed
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

// set arms the deadline for t: the zero time disarms it, a time in the past
// fires it now.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait until its func has closed cancel
	}
	d.timer = nil
	expired := isClosed(d.cancel)
	if t.IsZero() {
		if expired {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if expired {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !expired {
		close(d.cancel)
	}
}

// wait returns the channel that is closed when the deadline passes.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// stop releases the timer of a closed conn.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
