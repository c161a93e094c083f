package wire

// WebSocket framing (RFC 6455), both ways, owned here. gorilla/websocket
// only answers a server's upgrade request; ClientHandshake opens a client's.
//
// Why not let gorilla read: its Conn keeps a 4 KiB bufio.Reader per session
// (the one net/http hijacked with), allocates a reader per message, and
// writes pongs and closes on its own, behind the back of the coalescing
// writer. WS parses frames from the connection through the same Elastic
// buffer as Raw (1 KiB while quiet, a pooled 64 KiB while busy), hands out
// a message that came in one frame straight from that buffer, and sends
// every frame, data or control, through one queue.
//
// Measured on 2 shared cores (go1.26, loopback), gorilla reading (before)
// against WS reading (after), the rest of the tree the same:
//
//	Idle sessions, 2,000, per session:
//	  gateway TestIdleSessionMemory, wss, upstream=lan (gateway process):
//	    heap in use 19.3-19.6 KB -> 12.6-12.9 KB; live heap 14.9 -> 10.9 KB
//	  wire TestWSIdleMemory, heap+stack (in-process clients included):
//	    session in the handler's goroutine  16.5-17.6 KB -> 17.3-18.2 KB
//	    handler returned (as broker.ServeHTTP now does) 10.9 -> 4.7-4.9 KB
//	  (While the handler runs, net/http's connection still holds the 4 KiB
//	  reader and writer it hijacked with, whoever else lets them go.)
//	Allocations: BenchmarkWSServer 1 alloc (8 B) per message -> 0;
//	  gateway BenchmarkRelay ws/wss, whole process: 3 allocs/op -> 2.
//	Throughput, BenchmarkWSServer (64-byte messages echoed by a server WS):
//	  batch=1   47-49 k msgs/s -> 48-51 k msgs/s
//	  batch=32  1.35-1.37 M msgs/s -> 0.85-0.97 M msgs/s: a 2.2 KB burst
//	  arriving at a quiet 1 KiB buffer takes two reads, and the relay
//	  flushes at the cut frame. A 4 KiB quiet buffer gives 1.27-1.36 M back
//	  for 3 KiB more per idle session; on the gateway's wss relay
//	  (BenchmarkRelay lan/wss, embedded/wss) the difference is within the
//	  run-to-run noise (0.45-0.92 M msgs/s at batch=32, either way).
//	The idle memory is what the gateway is sized by: 1 KiB quiet it is.

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// Opcodes (RFC 6455, section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

const (
	// maxControlPayload is the largest payload of a control frame.
	maxControlPayload = 125
	// maxFrameHeader is the largest frame header: 2 bytes, a 64-bit length
	// and a masking key.
	maxFrameHeader = 14
	// controlWait bounds the answers Read sends (pong, close), as gorilla's
	// did.
	controlWait = time.Second
)

// WS is a Conn over a WebSocket: one SMQ message per binary WebSocket
// message. Text messages are accepted on read, whatever their bytes, like
// the reference broker does (and gorilla did: no UTF-8 check); writes are
// always binary. WS reads and writes the frames itself: messages queued
// together leave in one write, and pings are answered and closes echoed
// through the same queue, in order with the data. Extensions (compression)
// are not supported: the upgrade must not negotiate any.
type WS struct {
	nc     net.Conn
	client bool // our frames are masked; the peer's must not be
	max    int

	// The reading goroutine's.
	r    *Elastic
	asm  *[]byte // from busyPool: the fragments of a message, until the next Read
	rerr error   // what ended reading: every later Read returns it
	pong func(payload []byte)
	// onControl is called for each control frame read (see SetControlHook).
	onControl func() error

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

// NewWS returns the WebSocket Conn of a server on a connection gorilla's
// Upgrader has just upgraded (without compression). From then on WS owns
// the network connection and conn must not be used: gorilla's Upgrade
// refuses a client that sent anything before its answer, so nothing is left
// in conn's buffers, which go with it. A pong handler set on conn before
// NewWS is called for the pongs Read sees (see SetPongHandler).
//
// maxRead bounds incoming messages (type + body; 0: smq.MaxRawFrame): a
// larger one makes Read fail with websocket.ErrReadLimit after sending the
// peer close code 1009.
func NewWS(conn *websocket.Conn, maxRead int) *WS {
	nc := conn.NetConn()
	c := newWS(nc, NewElastic(nc, nil), maxRead, false)
	if h := conn.PongHandler(); h != nil {
		c.pong = func(p []byte) { _ = h(string(p)) }
	}
	return c
}

func newWS(nc net.Conn, r *Elastic, maxRead int, client bool) *WS {
	if maxRead <= 0 {
		maxRead = smq.MaxRawFrame
	}
	return &WS{nc: nc, r: r, max: maxRead, client: client, wsem: make(chan struct{}, 1)}
}

// SetPongHandler sets the function Read calls, in the reading goroutine,
// for each pong; payload is valid during the call. Set it before the first
// Read.
func (c *WS) SetPongHandler(h func(payload []byte)) { c.pong = h }

// SetControlHook sets a function Read calls, in the reading goroutine,
// for each control frame (ping, pong, close) it reads, before handling
// it: a rate limit counts them there, since they never reach the caller.
// An error from h ends reading with that error, the frame unanswered. Set
// it before the first Read.
func (c *WS) SetControlHook(h func() error) { c.onControl = h }

// ProtocolError is a peer's breach of RFC 6455 found by Read, which has
// sent the peer close code 1002 with Reason.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "websocket: " + e.Reason }

// Read returns the next data message, valid until the next Read: control
// frames before and between its fragments are handled on the way (a ping
// is answered, a pong goes to the pong handler). A close frame is echoed
// (with its code, once) and ends reading with a *websocket.CloseError
// carrying the peer's code and reason. The end of the stream, even between
// frames, is a *websocket.CloseError with code 1006, as gorilla reports it.
// Errors are final, but for an empty message (a *smq.MessageError), after
// which reading goes on.
func (c *WS) Read() ([]byte, error) {
	if c.rerr != nil {
		return nil, c.rerr
	}
	if c.asm != nil {
		busyPool.Put(c.asm)
		c.asm = nil
	}
	msg, err := c.next()
	if err != nil {
		var me *smq.MessageError
		if !errors.As(err, &me) {
			c.rerr = err
		}
		return nil, err
	}
	return msg, nil
}

// next reads frames up to the end of a data message.
func (c *WS) next() ([]byte, error) {
	var msg []byte // the fragments so far
	inMsg := false
	for {
		h, err := c.readHeader(inMsg)
		if err != nil {
			return nil, err
		}
		if h.op&0x8 != 0 {
			if c.onControl != nil {
				if err := c.onControl(); err != nil {
					return nil, err
				}
			}
			if err := c.control(h); err != nil {
				return nil, err
			}
			continue
		}
		if h.n > int64(c.max-len(msg)) {
			return nil, c.tooBig()
		}
		n := int(h.n)
		if !inMsg && h.fin && h.size+n <= busyBuffer {
			// One frame: the message is read in place, in the buffer.
			p, err := c.r.Peek(h.size + n)
			if err != nil {
				return nil, readError(err)
			}
			p = p[h.size:]
			if h.masked {
				maskBytes(h.key, 0, p)
			}
			_, _ = c.r.Discard(h.size + n)
			return message(p)
		}
		_, _ = c.r.Discard(h.size)
		msg = c.grow(msg, n)
		part := msg[len(msg) : len(msg)+n]
		if _, err := io.ReadFull(c.r, part); err != nil {
			return nil, readError(err)
		}
		if h.masked {
			maskBytes(h.key, 0, part)
		}
		msg = msg[:len(msg)+n]
		if h.fin {
			return message(msg)
		}
		inMsg = true
	}
}

func message(p []byte) ([]byte, error) {
	if len(p) == 0 {
		return nil, &smq.MessageError{Err: smq.ErrShortFrame, Detail: "empty WebSocket message"}
	}
	return p[:len(p):len(p)], nil
}

// grow returns msg with room for n more bytes: a buffer from busyPool,
// kept until the next Read, or a bigger one.
func (c *WS) grow(msg []byte, n int) []byte {
	need := len(msg) + n
	if need <= cap(msg) {
		return msg
	}
	if c.asm == nil && need <= busyBuffer {
		c.asm = busyPool.Get().(*[]byte)
		return append((*c.asm)[:0], msg...)
	}
	nb := make([]byte, len(msg), min(max(2*cap(msg), need), c.max))
	copy(nb, msg)
	return nb
}

// frameHeader is a frame's header, parsed.
type frameHeader struct {
	fin    bool
	rsv    byte // the reserved bits, in place
	op     byte
	masked bool
	key    [4]byte
	n      int64 // payload length; negative if its top bit was set
	size   int   // of the header
}

// parseHeader parses the frame header at the start of p; ok is false if p
// does not hold all of it (then, what it holds: the first two bytes, the
// extended length).
func parseHeader(p []byte) (h frameHeader, ok bool) {
	if len(p) < 2 {
		return h, false
	}
	h.fin = p[0]&0x80 != 0
	h.rsv = p[0] & 0x70
	h.op = p[0] & 0x0f
	h.masked = p[1]&0x80 != 0
	h.n, h.size = int64(p[1]&0x7f), 2
	switch h.n {
	case 126:
		h.size = 4
	case 127:
		h.size = 10
	}
	if len(p) < h.size {
		return h, false
	}
	switch h.n {
	case 126:
		h.n = int64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		h.n = int64(binary.BigEndian.Uint64(p[2:]))
	}
	if h.masked {
		h.size += 4
		if len(p) < h.size {
			return h, false
		}
		copy(h.key[:], p[h.size-4:h.size])
	}
	return h, true
}

// readHeader reads the next frame's header, leaving it in the buffer, and
// checks it: its first two bytes before the rest is read, as gorilla did.
func (c *WS) readHeader(inMsg bool) (frameHeader, error) {
	p, err := c.r.Peek(2)
	if err != nil {
		return frameHeader{}, readError(err)
	}
	h, _ := parseHeader(p[:2:2]) // the 7-bit length; h.size: up to the masking key
	if reason := c.check(h, inMsg); reason != "" {
		return h, c.protocolError(reason)
	}
	if p, err = c.r.Peek(h.size); err != nil {
		return frameHeader{}, readError(err)
	}
	if h, _ = parseHeader(p); h.n < 0 {
		return h, c.protocolError("bad length")
	}
	if h.masked { // h.size counts the key now
		if p, err = c.r.Peek(h.size); err != nil {
			return frameHeader{}, readError(err)
		}
		h, _ = parseHeader(p)
	}
	return h, nil
}

// check returns what is wrong with a frame, "" if nothing; inMsg: a
// fragmented message is in progress.
func (c *WS) check(h frameHeader, inMsg bool) string {
	if h.rsv == 0 && h.masked != c.client && h.n >= 0 {
		switch h.op {
		case opBinary, opText:
			if !inMsg {
				return ""
			}
		case opContinuation:
			if inMsg {
				return ""
			}
		case opClose, opPing, opPong:
			if h.fin && h.n <= maxControlPayload {
				return ""
			}
		}
	}
	// Name everything wrong, as gorilla did.
	var errs []string
	for i, bit := range []byte{0x40, 0x20, 0x10} {
		if h.rsv&bit != 0 {
			errs = append(errs, "RSV"+strconv.Itoa(i+1)+" set")
		}
	}
	switch h.op {
	case opClose, opPing, opPong:
		if h.n > maxControlPayload {
			errs = append(errs, "len > 125 for control")
		}
		if !h.fin {
			errs = append(errs, "FIN not set on control")
		}
	case opText, opBinary:
		if inMsg {
			errs = append(errs, "data before FIN")
		}
	case opContinuation:
		if !inMsg {
			errs = append(errs, "continuation after FIN")
		}
	default:
		errs = append(errs, "bad opcode "+strconv.Itoa(int(h.op)))
	}
	if h.masked == c.client {
		errs = append(errs, "bad MASK")
	}
	if h.n < 0 {
		errs = append(errs, "bad length")
	}
	return strings.Join(errs, ", ")
}

// control handles a control frame.
func (c *WS) control(h frameHeader) error {
	n := h.size + int(h.n)
	p, err := c.r.Peek(n)
	if err != nil {
		return readError(err)
	}
	_, _ = c.r.Discard(n) // p stays valid until the next read
	p = p[h.size:]
	if h.masked {
		maskBytes(h.key, 0, p)
	}
	switch h.op {
	case opPing:
		_ = c.WriteControl(websocket.PongMessage, p, time.Now().Add(controlWait))
	case opPong:
		if c.pong != nil {
			c.pong(p)
		}
	case opClose:
		code, text := websocket.CloseNoStatusReceived, ""
		switch {
		case len(p) == 1:
			return c.protocolError("bad close payload")
		case len(p) >= 2:
			code = int(binary.BigEndian.Uint16(p))
			if !validCloseCode(code) {
				return c.protocolError("bad close code " + strconv.Itoa(code))
			}
			if !utf8.Valid(p[2:]) {
				return c.protocolError("invalid utf8 payload in close frame")
			}
			text = string(p[2:])
		}
		// Echo the code (nothing if we sent our close first).
		var echo []byte
		if code != websocket.CloseNoStatusReceived {
			echo = binary.BigEndian.AppendUint16(nil, uint16(code))
		}
		_ = c.WriteControl(websocket.CloseMessage, echo, time.Now().Add(controlWait))
		return &websocket.CloseError{Code: code, Text: text}
	}
	return nil
}

// validCloseCode reports whether a peer may send code (the codes gorilla
// accepted).
func validCloseCode(code int) bool {
	switch code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return code >= 3000 && code <= 4999
}

// protocolError sends the peer close 1002 with reason.
func (c *WS) protocolError(reason string) error {
	msg := websocket.FormatCloseMessage(websocket.CloseProtocolError, reason)
	if len(msg) > maxControlPayload {
		msg = msg[:maxControlPayload]
	}
	_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(controlWait))
	return &ProtocolError{Reason: reason}
}

// tooBig sends the peer close 1009.
func (c *WS) tooBig() error {
	msg := binary.BigEndian.AppendUint16(nil, websocket.CloseMessageTooBig)
	_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(controlWait))
	return websocket.ErrReadLimit
}

// readError is a read error as gorilla reported it: the end of the stream,
// wherever it comes, is an abnormal closure (1006).
func readError(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: io.ErrUnexpectedEOF.Error()}
	}
	return err
}

// Buffered counts the buffered bytes when they start with a whole data
// message (all its fragments), pings and pongs before or among them
// allowed: then Read does not wait for the network. Only the reading
// goroutine may call it.
func (c *WS) Buffered() int {
	if c.rerr != nil {
		return 0
	}
	p := c.r.buf[c.r.rpos:c.r.wpos]
	total := 0
	for inMsg := false; ; {
		h, ok := parseHeader(p)
		if !ok || h.n < 0 || h.n > int64(len(p)-h.size) || c.check(h, inMsg) != "" {
			return 0
		}
		switch {
		case h.op == opClose:
			return 0
		case h.op&0x8 == 0:
			if total += int(h.n); total > c.max {
				return 0
			}
			if h.fin {
				return c.r.Buffered()
			}
			inMsg = true
		}
		p = p[h.size+int(h.n):]
	}
}

// maskBytes applies the masking key to b, which starts at position pos of
// the payload; it returns the position after b.
func maskBytes(key [4]byte, pos int, b []byte) int {
	var k8 [8]byte
	for i := range k8 {
		k8[i] = key[(pos+i)&3]
	}
	kw := binary.LittleEndian.Uint64(k8[:])
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^kw)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[(pos+i)&3]
	}
	return (pos + len(b)) & 3
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
	if c.client {
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
	if !c.client {
		c.out.set(append(b, payload...))
		return
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	maskBytes(key, 0, b[start:])
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
	if len(data) > maxControlPayload {
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

func (c *WS) restoreDeadline() {
	var t time.Time
	if n := c.wdl.Load(); n != 0 {
		t = time.Unix(0, n)
	}
	_ = c.nc.SetWriteDeadline(t)
}

func (c *WS) MaxMessage() int                   { return 1<<31 - 1 }
func (c *WS) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline applies to the next writes and to a write in progress.
func (c *WS) SetWriteDeadline(t time.Time) error {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	c.wdl.Store(n)
	return c.nc.SetWriteDeadline(t)
}
func (c *WS) Close() error    { return c.nc.Close() }
func (c *WS) WebSocket() bool { return true }

// NetConn returns the underlying connection.
func (c *WS) NetConn() net.Conn { return c.nc }

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
