// Package wire carries SMQ messages over a connection, one message at a
// time, in either framing: raw frames on a byte stream (TCP, TLS, an
// in-process pipe) or one message per WebSocket message. The broker, the
// gateway and the upstream dialer all move messages through a Conn.
package wire

import (
	"bufio"
	"encoding/binary"
	"net"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// Conn is a bidirectional stream of SMQ messages (type byte + body). One
// goroutine may read while another writes; SetWriteDeadline, Close and
// CloseWrite are the only calls safe from any goroutine.
type Conn interface {
	// Read returns the next message, valid until the next Read. Malformed
	// input gives a *smq.MessageError.
	Read() ([]byte, error)
	// Write queues msg. It is on the wire after Flush at the latest.
	// Messages that do not fit the framing fail with smq.ErrTooBig and
	// nothing is written.
	Write(msg []byte) error
	// Flush sends what Write queued.
	Flush() error
	// Buffered is the number of received bytes Read can use without
	// waiting for the network, 0 unless they hold a whole message: 0 means
	// the next Read may block, so a writer relaying what it reads should
	// Flush before it.
	Buffered() int
	// MaxMessage is the largest message Write accepts.
	MaxMessage() int
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline may be called from any goroutine to cut short a
	// blocked write.
	SetWriteDeadline(t time.Time) error
	// CloseWrite ends the sending side: a TCP half-close, or a WebSocket
	// close frame with code and reason. The peer sees the end of the
	// stream; reading goes on. It does not flush (Flush belongs to the
	// writing goroutine): flush first what must arrive.
	CloseWrite(code int, reason string, deadline time.Time) error
	Close() error
	// WebSocket reports the framing.
	WebSocket() bool
}

// Raw is a Conn in raw framing (2-byte length, type, body) over a byte
// stream.
type Raw struct {
	conn net.Conn
	r    *smq.Reader
	out  outBuf
}

// NewRaw returns a raw Conn on conn. br, if not nil, is a reader that
// was buffering conn (bytes after an HTTP head, for instance): what it
// holds is read first, and it is not used after. Reads go through an
// Elastic buffer (1 KiB while quiet, 64 KiB while busy); writes queue in
// a pooled buffer until Flush (or 64 KiB).
func NewRaw(conn net.Conn, br *bufio.Reader) *Raw {
	return &Raw{conn: conn, r: smq.NewReader(NewElastic(conn, br))}
}

// SetMaxRead sets the largest message Read accepts (0: smq.MaxRawMessage).
func (c *Raw) SetMaxRead(n int) { c.r.Max = n }

func (c *Raw) Read() ([]byte, error) { return c.r.Read() }

func (c *Raw) Write(msg []byte) error {
	if len(msg) > smq.MaxRawMessage || len(msg) == 0 {
		_, err := smq.AppendRaw(nil, msg) // the codec's error, naming the size
		return err
	}
	b := binary.BigEndian.AppendUint16(c.out.bytes(), uint16(len(msg)+2))
	c.out.set(append(b, msg...))
	if c.out.len() >= flushAt {
		return c.Flush()
	}
	return nil
}

func (c *Raw) Flush() error { return c.out.flush(c.conn) }

// Buffered counts buffered bytes only when they hold a whole frame: a
// relay must not hold back its flush waiting for the rest of a frame that
// may be slow to come.
func (c *Raw) Buffered() int {
	br := c.r.Buffered()
	n := br.Buffered()
	if n < 2 {
		return 0
	}
	p, _ := br.Peek(2) // buffered: does not block
	if n < int(binary.BigEndian.Uint16(p)) {
		return 0
	}
	return n
}
func (c *Raw) MaxMessage() int                    { return smq.MaxRawMessage }
func (c *Raw) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Raw) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
func (c *Raw) Close() error                       { return c.conn.Close() }
func (c *Raw) WebSocket() bool                    { return false }

// NetConn returns the underlying connection.
func (c *Raw) NetConn() net.Conn { return c.conn }

// CloseWrite half-closes a TCP or TLS connection; one that cannot be
// half-closed is closed. It does not flush: whatever Write queued and the
// writing goroutine has not flushed is dropped.
func (c *Raw) CloseWrite(_ int, _ string, deadline time.Time) error {
	_ = c.conn.SetWriteDeadline(deadline)
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.conn.Close()
}
