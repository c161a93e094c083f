// Package wire carries SMQ messages over a connection, one message at a
// time, in either framing: raw frames on a byte stream (TCP, TLS, an
// in-process pipe) or one message per WebSocket message. The broker, the
// gateway and the upstream dialer all move messages through a Conn.
package wire

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

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
	bw   *bufio.Writer
	hdr  [2]byte
}

// NewRaw returns a raw Conn on conn. br, if not nil, is a reader already
// buffering conn (bytes after an HTTP head, for instance); otherwise one is
// made. Writes are buffered in a writer of wbuf bytes (0: 16 KiB).
func NewRaw(conn net.Conn, br *bufio.Reader, wbuf int) *Raw {
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	if wbuf <= 0 {
		wbuf = 16 << 10
	}
	return &Raw{conn: conn, r: smq.NewReader(br), bw: bufio.NewWriterSize(conn, wbuf)}
}

// SetMaxRead sets the largest message Read accepts (0: smq.MaxRawMessage).
func (c *Raw) SetMaxRead(n int) { c.r.Max = n }

func (c *Raw) Read() ([]byte, error) { return c.r.Read() }

func (c *Raw) Write(msg []byte) error {
	if len(msg) > smq.MaxRawMessage || len(msg) == 0 {
		_, err := smq.AppendRaw(nil, msg) // the codec's error, naming the size
		return err
	}
	binary.BigEndian.PutUint16(c.hdr[:], uint16(len(msg)+2))
	if _, err := c.bw.Write(c.hdr[:]); err != nil {
		return err
	}
	_, err := c.bw.Write(msg)
	return err
}

func (c *Raw) Flush() error { return c.bw.Flush() }

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

// WS is a Conn over a WebSocket: one SMQ message per binary WebSocket
// message. Text messages are accepted on read, like the reference broker
// does; writes are always binary.
type WS struct {
	conn *websocket.Conn
	buf  []byte
	max  int
	br   *bufio.Reader // the reader gorilla reads frames from, if known
	// wdl is the write deadline (Unix nanoseconds, 0 for none). gorilla
	// sets the connection's deadline from its own field before every frame,
	// so Write hands this one to gorilla on the writing goroutine.
	wdl atomic.Int64
}

// NewWS returns a WebSocket Conn. maxRead bounds incoming messages (type +
// body); a larger one makes Read fail and the peer get close code 1009.
func NewWS(conn *websocket.Conn, maxRead int) *WS {
	conn.SetReadLimit(int64(maxRead))
	return &WS{conn: conn, max: maxRead}
}

func (c *WS) Read() ([]byte, error) {
	for {
		typ, r, err := c.conn.NextReader()
		if err != nil {
			return nil, err
		}
		if typ != websocket.BinaryMessage && typ != websocket.TextMessage {
			continue
		}
		c.buf, err = smq.ReadWS(r, c.buf, c.max)
		if err != nil {
			return nil, err
		}
		return c.buf, nil
	}
}

func (c *WS) Write(msg []byte) error {
	if len(msg) == 0 {
		_, err := smq.AppendRaw(nil, msg)
		return err
	}
	var dl time.Time
	if n := c.wdl.Load(); n != 0 {
		dl = time.Unix(0, n)
	}
	_ = c.conn.SetWriteDeadline(dl)
	return c.conn.WriteMessage(websocket.BinaryMessage, msg)
}

func (c *WS) Flush() error { return nil }

// UseReader tells WS which bufio.Reader the WebSocket connection reads its
// frames from (a server's hijacked reader, reused by gorilla when the
// Upgrader's ReadBufferSize is 0), so that Buffered can see what is there.
func (c *WS) UseReader(br *bufio.Reader) { c.br = br }

// Buffered counts buffered bytes when they start with a whole, unfragmented
// text or binary WebSocket message, and is always 0 without UseReader.
func (c *WS) Buffered() int {
	if c.br == nil {
		return 0
	}
	n := c.br.Buffered()
	if n < 2 {
		return 0
	}
	p, _ := c.br.Peek(min(n, 14)) // buffered: does not block
	if p[0]&0x80 == 0 || (p[0]&0x0f != 1 && p[0]&0x0f != 2) {
		// A fragment or a control frame: Read may still block after it.
		return 0
	}
	size, hdr := int64(p[1]&0x7f), 2
	switch size {
	case 126:
		hdr = 4
	case 127:
		hdr = 10
	}
	if p[1]&0x80 != 0 {
		hdr += 4 // masking key
	}
	if len(p) < hdr {
		return 0
	}
	switch size {
	case 126:
		size = int64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		size = int64(binary.BigEndian.Uint64(p[2:]))
	}
	if size < 0 || int64(n) < int64(hdr)+size {
		return 0
	}
	return n
}
func (c *WS) MaxMessage() int                   { return 1<<31 - 1 }
func (c *WS) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline applies to the next writes and, through the network
// connection, to a write in progress. (gorilla's own write deadline is a
// plain field of the writing goroutine's.)
func (c *WS) SetWriteDeadline(t time.Time) error {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	c.wdl.Store(n)
	return c.conn.NetConn().SetWriteDeadline(t)
}
func (c *WS) Close() error    { return c.conn.Close() }
func (c *WS) WebSocket() bool { return true }

// Conn returns the underlying WebSocket connection.
func (c *WS) Conn() *websocket.Conn { return c.conn }

// CloseWrite sends a close frame with code and reason.
func (c *WS) CloseWrite(code int, reason string, deadline time.Time) error {
	if len(reason) > 120 { // a control frame holds 125 bytes
		reason = reason[:120]
	}
	return c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
}
