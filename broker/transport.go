package broker

import (
	"bufio"
	"encoding/binary"
	"net"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// transport is one client connection in one of the two framings.
type transport interface {
	// read returns the next message (type + body); valid until the next read.
	read() ([]byte, error)
	// writeBatch writes messages (type + body) in order, then flushes.
	writeBatch(msgs [][]byte, deadline time.Time) error
	setReadDeadline(t time.Time) error
	// setWriteDeadline may be called from any goroutine to cut a blocked
	// write short.
	setWriteDeadline(t time.Time) error
	// closeWrite ends the sending side after the last message: a TCP
	// half-close, or a WebSocket close frame with code. The reader goes on
	// until the peer closes, so unread input cannot turn the close into a
	// reset that destroys the last message.
	closeWrite(code int, deadline time.Time) error
	close() error
	isRaw() bool
}

type rawTransport struct {
	conn net.Conn
	r    *smq.Reader
	bw   *bufio.Writer
	hdr  [2]byte
}

func newRawTransport(conn net.Conn, br *bufio.Reader) *rawTransport {
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	return &rawTransport{conn: conn, r: smq.NewReader(br), bw: bufio.NewWriterSize(conn, 16<<10)}
}

func (t *rawTransport) read() ([]byte, error) { return t.r.Read() }

func (t *rawTransport) writeBatch(msgs [][]byte, deadline time.Time) error {
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	for _, m := range msgs {
		// Callers never queue a message over smq.MaxRawMessage for a raw
		// client; the length field cannot wrap here.
		binary.BigEndian.PutUint16(t.hdr[:], uint16(len(m)+2))
		if _, err := t.bw.Write(t.hdr[:]); err != nil {
			return err
		}
		if _, err := t.bw.Write(m); err != nil {
			return err
		}
	}
	return t.bw.Flush()
}

func (t *rawTransport) setReadDeadline(d time.Time) error  { return t.conn.SetReadDeadline(d) }
func (t *rawTransport) setWriteDeadline(d time.Time) error { return t.conn.SetWriteDeadline(d) }
func (t *rawTransport) close() error                       { return t.conn.Close() }

func (t *rawTransport) closeWrite(_ int, _ time.Time) error {
	if cw, ok := t.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return t.conn.Close()
}
func (t *rawTransport) isRaw() bool { return true }

type wsTransport struct {
	conn *websocket.Conn
	buf  []byte
}

// wsMaxMessage is the largest WebSocket message the broker reads: the
// reference broker refuses frames over 65,535 bytes.
const wsMaxMessage = smq.MaxRawFrame

func newWSTransport(conn *websocket.Conn) *wsTransport {
	conn.SetReadLimit(wsMaxMessage)
	return &wsTransport{conn: conn}
}

func (t *wsTransport) read() ([]byte, error) {
	for {
		typ, r, err := t.conn.NextReader()
		if err != nil {
			return nil, err
		}
		if typ != websocket.BinaryMessage && typ != websocket.TextMessage {
			continue
		}
		t.buf, err = smq.ReadWS(r, t.buf, wsMaxMessage)
		if err != nil {
			return nil, err
		}
		return t.buf, nil
	}
}

func (t *wsTransport) writeBatch(msgs [][]byte, deadline time.Time) error {
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	for _, m := range msgs {
		if err := t.conn.WriteMessage(websocket.BinaryMessage, m); err != nil {
			return err
		}
	}
	return nil
}

func (t *wsTransport) setReadDeadline(d time.Time) error { return t.conn.SetReadDeadline(d) }
func (t *wsTransport) setWriteDeadline(d time.Time) error {
	// Not t.conn.SetWriteDeadline: that is a plain field of the writer's.
	return t.conn.NetConn().SetWriteDeadline(d)
}

func (t *wsTransport) closeWrite(code int, deadline time.Time) error {
	return t.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), deadline)
}
func (t *wsTransport) close() error { return t.conn.Close() }
func (t *wsTransport) isRaw() bool  { return false }
