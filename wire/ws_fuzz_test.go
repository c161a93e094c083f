package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// feedConn is a net.Conn for the frame reader under test: reads come from
// in, writes (pongs, closes) collect in out. With strict set, a read is a
// test failure: Buffered promised that Read would not need one.
type feedConn struct {
	in     io.Reader
	out    bytes.Buffer
	strict bool
	t      *testing.T
}

func (c *feedConn) Read(p []byte) (int, error) {
	if c.strict {
		c.t.Fatal("Read went to the network after Buffered promised a whole message")
	}
	return c.in.Read(p)
}
func (c *feedConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *feedConn) Close() error                     { return nil }
func (c *feedConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *feedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *feedConn) SetDeadline(time.Time) error      { return nil }
func (c *feedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *feedConn) SetWriteDeadline(time.Time) error { return nil }

// wsEvents reads ws to its end: each message or error, as event names it,
// and what it wrote.
func wsEvents(t *testing.T, in io.Reader, client bool, max int) (events []string, wrote []byte) {
	fc := &feedConn{in: in, t: t}
	ws := newWS(fc, NewElastic(fc, nil), max, client)
	for range 10000 {
		whole := ws.Buffered() > 0
		fc.strict = whole
		msg, err := ws.Read()
		fc.strict = false
		events = append(events, event(msg, err))
		var me *smq.MessageError
		if err != nil && !errors.As(err, &me) {
			if whole {
				t.Fatalf("a whole message was buffered, Read: %v", err)
			}
			break
		}
	}
	return events, unmasked(fc.out.Bytes())
}

// unmasked returns frames with their masks taken off: a client's random
// keys make its bytes differ from run to run.
func unmasked(b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		h, ok := parseHeader(b)
		if !ok || int64(len(b)-h.size) < h.n {
			return append(out, b...)
		}
		p := append([]byte(nil), b[h.size:h.size+int(h.n)]...)
		if h.masked {
			maskBytes(h.key, 0, p)
		}
		out = append(append(out, b[0], byte(h.n)), p...) // control frames: short
		b = b[h.size+int(h.n):]
	}
	return out
}

// FuzzWSRead: the frame reader makes the same messages, errors and answers
// of a stream however it is cut, never reads past a whole message Buffered
// counted, and agrees with gorilla's reader on the messages and on how the
// stream ends.
func FuzzWSRead(f *testing.F) {
	f.Add(slices(frm(bin, true, "\x0chello"), frm(text, true, "x")), uint8(3), false, uint16(100))
	f.Add(slices(frm(opBinary, true, "ab"), frm(fin|opPing, true, "p"), frm(fin|opContinuation, true, "cd")),
		uint8(1), false, uint16(100))
	f.Add(slices(frm(bin, false, strings.Repeat("y", 300)), frm(fin|opClose, false, closePayload(1000, "bye"))),
		uint8(7), true, uint16(1000))
	f.Add(frm(bin, true, strings.Repeat("z", 2000)), uint8(200), false, uint16(1500))
	f.Add(slices(frm(fin|opPong, true, ""), frm(bin|rsv1, true, "a")), uint8(0), false, uint16(10))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8, client bool, max uint16) {
		if max == 0 {
			max = 1 // 0 is the default, smq.MaxRawFrame
		}
		want, wantOut := wsEvents(t, bytes.NewReader(data), client, int(max))
		chunked := func() io.Reader {
			c := &chunks{}
			step := int(cut) + 1
			for i := 0; i < len(data); i += step {
				c.script = append(c.script, data[i:min(i+step*(1+i%3), len(data))])
				i += step * (i % 3)
			}
			return c
		}
		got, gotOut := wsEvents(t, chunked(), client, int(max))
		if !equalStrings(got, want) || !bytes.Equal(gotOut, wantOut) {
			t.Fatalf("cut by %d: %q, wrote % x\nwhole:    %q, wrote % x", cut, got, gotOut, want, wantOut)
		}
		if !client {
			oracle(t, data, int(max), want)
		}
	})
}

// oracle reads data with gorilla's server-side reader and compares: the
// same messages, and the same end. Where gorilla is laxer (a 1-byte close
// payload, a length with its top bit set) it only has to end there too.
func oracle(t *testing.T, data []byte, max int, ours []string) {
	g := gorillaOn(t, &feedConn{in: bytes.NewReader(data), t: t})
	g.SetReadLimit(int64(max))
	var theirs []string
	for range 10000 {
		_, r, err := g.NextReader()
		if err != nil {
			theirs = append(theirs, gorillaEnd(err))
			break
		}
		msg, err := io.ReadAll(r)
		if err != nil {
			theirs = append(theirs, gorillaEnd(err))
			break
		}
		if len(msg) == 0 {
			theirs = append(theirs, "message error: empty WebSocket message")
		} else {
			theirs = append(theirs, "msg:"+string(msg))
		}
	}
	mine := make([]string, len(ours))
	copy(mine, ours)
	if last := mine[len(mine)-1]; strings.HasPrefix(last, "protocol: ") {
		mine[len(mine)-1] = "protocol"
	}
	if equalStrings(mine, theirs) {
		return
	}
	n := len(mine) - 1
	if len(theirs) == len(mine) && equalStrings(mine[:n], theirs[:n]) &&
		(ours[n] == "protocol: bad close payload" || ours[n] == "protocol: bad length") {
		return
	}
	t.Fatalf("WS: %q\ngorilla: %q", mine, theirs)
}

// gorillaEnd names gorilla's final error as event names ours.
func gorillaEnd(err error) string {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return event(nil, err)
	case errors.Is(err, websocket.ErrReadLimit):
		return "read limit"
	case strings.HasPrefix(err.Error(), "websocket: "):
		return "protocol"
	}
	return "error: " + err.Error()
}

// gorillaOn returns gorilla's server connection on c, by way of an
// upgrade request answered into c.
func gorillaOn(t *testing.T, c *feedConn) *websocket.Conn {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.Header = http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
	w := &hijacker{c: c}
	g, err := (&websocket.Upgrader{}).Upgrade(w, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.out.Reset()
	return g
}

// hijacker is a ResponseWriter that hands out its connection.
type hijacker struct {
	http.ResponseWriter
	c *feedConn
}

func (h *hijacker) Header() http.Header { return http.Header{} }
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.c, bufio.NewReadWriter(bufio.NewReaderSize(h.c, 4096), bufio.NewWriterSize(h.c, 4096)), nil
}
