package wire

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// NewWSClient returns the WebSocket Conn of a client on a connection
// gorilla's Dialer opened: its frames are masked.
//
// Deprecated: gorilla's Dialer may hold what the server sent right after
// its 101 (a broker's Init) in a buffer of its own, so this Conn has to let
// gorilla read the frames, and answers pings and closes by guessing what
// gorilla wrote. Open the connection with ClientHandshake instead, which
// leaves all the framing to WS.
func NewWSClient(conn *websocket.Conn, maxRead int) Conn {
	if maxRead <= 0 {
		maxRead = smq.MaxRawFrame
	}
	conn.SetReadLimit(int64(maxRead))
	c := &gorillaWS{WS: newWS(conn.NetConn(), nil, maxRead, true), conn: conn}
	// gorilla answers pings and closes by writing itself; the answers go
	// through WS instead, in order with the data.
	conn.SetPingHandler(func(data string) error {
		_ = c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(controlWait))
		return nil
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		var msg []byte
		if code != websocket.CloseNoStatusReceived {
			msg = websocket.FormatCloseMessage(code, "")
		}
		_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(controlWait))
		return nil
	})
	return c
}

// gorillaWS is a WS whose frames gorilla reads.
type gorillaWS struct {
	*WS
	conn *websocket.Conn
	buf  []byte
}

func (c *gorillaWS) Read() ([]byte, error) {
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
func (c *gorillaWS) readFailed(err error) {
	var ce *websocket.CloseError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, smq.ErrTooBig) {
		return // nothing written by gorilla
	}
	c.closeSent.Store(true)
	c.restoreDeadline()
}

// Buffered is always 0: gorilla's buffer cannot be seen.
func (c *gorillaWS) Buffered() int                     { return 0 }
func (c *gorillaWS) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }
func (c *gorillaWS) Close() error                      { return c.conn.Close() }
