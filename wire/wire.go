// Package wire carries SMQ messages over a connection, one message at a
// time, in either framing: raw frames on a byte stream (TCP, TLS, an
// in-process pipe) or one message per WebSocket message. The broker, the
// gateway and the upstream dialer all move messages through a Conn.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"time"
	"unicode/utf8"

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

// WS is a Conn over a WebSocket: one SMQ message per binary WebSocket
// message. Text messages are accepted on read, like the reference broker
// does; writes are always binary. gorilla/websocket reads; WS writes the
// frames itself, so that messages queued together leave in one write.
type WS struct {
	conn *websocket.Conn
	nc   net.Conn
	mask bool // a client's frames are masked
	buf  []byte
	max  int
	br   *bufio.Reader // the reader gorilla reads frames from, if known

	// wsem (a one-slot semaphore, so that control frames can give up
	// waiting) serialises writing: data from the writing goroutine, control
	// frames (pongs, from the reading goroutine; pings, closes) from any.
	wsem chan struct{}
	out  outBuf
	// wdl is the data write deadline (Unix nanoseconds, 0: none), put back
	// on the connection after a control frame's own deadline.
	wdl       atomic.Int64
	closeSent atomic.Bool // no frame may follow a close frame
}

// NewWS returns the WebSocket Conn of a server (unmasked frames). maxRead
// bounds incoming messages (type + body); a larger one makes Read fail and
// the peer get close code 1009 (sent by gorilla/websocket).
func NewWS(conn *websocket.Conn, maxRead int) *WS { return newWS(conn, maxRead, false) }

// NewWSClient returns the WebSocket Conn of a client: its frames are
// masked.
func NewWSClient(conn *websocket.Conn, maxRead int) *WS { return newWS(conn, maxRead, true) }

func newWS(conn *websocket.Conn, maxRead int, mask bool) *WS {
	conn.SetReadLimit(int64(maxRead))
	c := &WS{conn: conn, nc: conn.NetConn(), max: maxRead, mask: mask, wsem: make(chan struct{}, 1)}
	// gorilla answers pings and closes by writing itself; the answers go
	// through WS instead, in order with the data.
	conn.SetPingHandler(func(data string) error {
		_ = c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		var msg []byte
		if code != websocket.CloseNoStatusReceived {
			msg = websocket.FormatCloseMessage(code, "")
		}
		_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		return nil
	})
	return c
}

func (c *WS) Read() ([]byte, error) {
	for {
		typ, r, err := c.conn.NextReader()
		if err != nil {
			c.readFailed(err)
			return nil, err
		}
		if typ != websocket.BinaryMessage && typ != websocket.TextMessage {
			continue
		}
		c.buf, err = smq.ReadWS(r, c.buf, c.max)
		if err != nil {
			c.readFailed(err)
			return nil, err
		}
		return c.buf, nil
	}
}

// readFailed notes what gorilla wrote on its own after a read error: a
// close frame (1009 over the read limit, 1002 on a protocol error), under
// its own write deadline. No frame may follow it, and the data deadline
// goes back on the connection.
func (c *WS) readFailed(err error) {
	var ce *websocket.CloseError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, smq.ErrTooBig) {
		return // nothing written by gorilla
	}
	c.closeSent.Store(true)
	c.restoreDeadline()
}

func (c *WS) restoreDeadline() {
	var t time.Time
	if n := c.wdl.Load(); n != 0 {
		t = time.Unix(0, n)
	}
	_ = c.nc.SetWriteDeadline(t)
}

func (c *WS) lock()   { c.wsem <- struct{}{} }
func (c *WS) unlock() { <-c.wsem }

// lockBy waits for the write lock until deadline.
func (c *WS) lockBy(deadline time.Time) bool {
	select {
	case c.wsem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case c.wsem <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// appendFrame queues one whole frame.
func (c *WS) appendFrame(op int, payload []byte) {
	b := c.out.bytes()
	b = append(b, 0x80|byte(op))
	var mbit byte
	if c.mask {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mbit|byte(n))
	case n <= 0xffff:
		b = append(b, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !c.mask {
		c.out.set(append(b, payload...))
		return
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= key[i&3]
	}
	c.out.set(b)
}

func (c *WS) Write(msg []byte) error {
	if len(msg) == 0 {
		_, err := smq.AppendRaw(nil, msg)
		return err
	}
	c.lock()
	defer c.unlock()
	if c.closeSent.Load() {
		return websocket.ErrCloseSent
	}
	c.appendFrame(websocket.BinaryMessage, msg)
	if c.out.len() >= flushAt {
		return c.out.flush(c.nc)
	}
	return nil
}

// Flush writes the queued frames in one write.
func (c *WS) Flush() error {
	c.lock()
	defer c.unlock()
	return c.out.flush(c.nc)
}

// WriteControl sends a control frame (ping, pong, close) after what is
// queued, under deadline (waiting for the writing goroutine included); the
// data write deadline then applies again. After a close frame nothing more
// is sent.
func (c *WS) WriteControl(op int, data []byte, deadline time.Time) error {
	if len(data) > 125 {
		return errors.New("wire: control frame payload over 125 bytes")
	}
	if !c.lockBy(deadline) {
		return os.ErrDeadlineExceeded
	}
	defer c.unlock()
	if c.closeSent.Load() {
		return websocket.ErrCloseSent
	}
	if op == websocket.CloseMessage {
		c.closeSent.Store(true)
	}
	_ = c.nc.SetWriteDeadline(deadline)
	c.appendFrame(op, data)
	err := c.out.flush(c.nc)
	c.restoreDeadline()
	return err
}

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

// SetWriteDeadline applies to the next writes and to a write in progress.
func (c *WS) SetWriteDeadline(t time.Time) error {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	c.wdl.Store(n)
	return c.nc.SetWriteDeadline(t)
}
func (c *WS) Close() error    { return c.conn.Close() }
func (c *WS) WebSocket() bool { return true }

// Conn returns the underlying WebSocket connection.
func (c *WS) Conn() *websocket.Conn { return c.conn }

// CloseWrite sends a close frame with code and reason, after what is
// queued; nothing, if a close frame went already (an answer to the
// peer's).
func (c *WS) CloseWrite(code int, reason string, deadline time.Time) error {
	if len(reason) > 120 { // a control frame holds 125 bytes; keep whole UTF-8 characters
		cut := 120
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	// The deadline first: it cuts short a write stuck on a peer that does
	// not read, so the lock comes free.
	_ = c.SetWriteDeadline(deadline)
	err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
	if errors.Is(err, websocket.ErrCloseSent) {
		return nil
	}
	return err
}
