package client

import (
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// transport is one broker connection: a wire.Conn in either framing, with
// the client's write discipline on top (one message at a time, flushed at
// once, under a write deadline). read is called by one goroutine only; write
// and closeWrite by one at a time, under the write token.
type transport struct {
	wc wire.Conn
	// halfClose: the connection is raw and can be half-closed. A raw one
	// that cannot is left open after the Disconnect, for the broker to
	// close.
	halfClose bool
	wbuf      []byte
}

// newTransport wraps a connection smqdial made.
func newTransport(wc wire.Conn) *transport {
	t := &transport{wc: wc}
	if raw, ok := wc.(*wire.Raw); ok {
		_, t.halfClose = raw.NetConn().(interface{ CloseWrite() error })
	}
	return t
}

// read returns the next message (type + body), valid until the next read.
func (t *transport) read() ([]byte, error) { return t.wc.Read() }

// write sends one message and flushes it. A message too big for the framing
// fails with smq.ErrTooBig before anything is written.
func (t *transport) write(m smq.Message, deadline time.Time) error {
	b := m.Append(t.wbuf[:0])
	if cap(b) <= 4<<10 {
		t.wbuf = b // keep small buffers only
	}
	if err := t.wc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if err := t.wc.Write(b); err != nil {
		return err
	}
	return t.wc.Flush()
}

// writeAll sends messages and flushes once: one write to the socket for
// all of them when they fit its buffer.
func (t *transport) writeAll(ms []smq.Message, deadline time.Time) error {
	if err := t.wc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	for _, m := range ms {
		b := m.Append(t.wbuf[:0])
		if cap(b) <= 4<<10 {
			t.wbuf = b
		}
		if err := t.wc.Write(b); err != nil {
			return err
		}
	}
	return t.wc.Flush()
}

// closeWrite tells the broker no more messages follow: a TCP (or TLS)
// half-close on raw, a close frame on WebSocket.
func (t *transport) closeWrite(deadline time.Time) error {
	if !t.wc.WebSocket() && !t.halfClose {
		// wire would close the connection; leave that to the broker, who
		// has our Disconnect.
		_ = t.wc.SetWriteDeadline(deadline)
		return t.wc.Flush()
	}
	return t.wc.CloseWrite(websocket.CloseNormalClosure, "", deadline)
}

// setReadDeadline may be called from any goroutine.
func (t *transport) setReadDeadline(d time.Time) error { return t.wc.SetReadDeadline(d) }
func (t *transport) close() error                      { return t.wc.Close() }
