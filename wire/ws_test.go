package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// waitFor bounds what must happen on a loaded machine.
const waitFor = 10 * time.Second

// Frame bytes: FIN, RSV1, and the first byte of common frames.
const (
	fin  = 0x80
	rsv1 = 0x40
	bin  = fin | opBinary
	text = fin | opText
)

// frm returns a frame: first is its first byte (FIN, RSV, opcode); masked
// frames are a client's, with a fixed non-zero key.
func frm(first byte, masked bool, payload string) []byte {
	b := []byte{first}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, m|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, m|127), uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	b = append(b, key[:]...)
	for i := range len(payload) {
		b = append(b, payload[i]^key[i&3])
	}
	return b
}

func closePayload(code int, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, uint16(code))) + reason
}

// peerFrames reads the frames a WS wrote to its peer until the end of the
// stream: "pong:<payload>", "close:<code> <reason>", "close:" (no code),
// "binary:<payload>". It parses them by hand, masked or not.
func peerFrames(t *testing.T, c net.Conn) []string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	data, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("peer read: %v", err)
	}
	var got []string
	for len(data) > 0 {
		if len(data) < 2 {
			t.Fatalf("peer got a cut frame: % x", data)
		}
		op, masked, n, at := data[0]&0x0f, data[1]&0x80 != 0, int(data[1]&0x7f), 2
		if data[0]&0xf0 != fin {
			t.Fatalf("peer got first byte %#x", data[0])
		}
		if n == 126 {
			n, at = int(binary.BigEndian.Uint16(data[2:])), 4
		}
		var key []byte
		if masked {
			key, at = data[at:at+4], at+4
		}
		p := append([]byte(nil), data[at:at+n]...)
		for i := 0; masked && i < len(p); i++ {
			p[i] ^= key[i&3]
		}
		data = data[at+n:]
		switch op {
		case opPong:
			got = append(got, "pong:"+string(p))
		case opBinary:
			got = append(got, "binary:"+string(p))
		case opClose:
			if len(p) < 2 {
				got = append(got, "close:")
			} else {
				got = append(got, fmt.Sprintf("close:%d %s", binary.BigEndian.Uint16(p), p[2:]))
			}
		default:
			got = append(got, fmt.Sprintf("op%d:%s", op, p))
		}
	}
	return got
}

// event names what a Read returned.
func event(msg []byte, err error) string {
	var ce *websocket.CloseError
	var pe *ProtocolError
	var me *smq.MessageError
	switch {
	case err == nil:
		return "msg:" + string(msg)
	case errors.As(err, &me):
		return "message error: " + me.Detail
	case errors.As(err, &ce):
		return fmt.Sprintf("close %d %q", ce.Code, ce.Text)
	case errors.As(err, &pe):
		return "protocol: " + pe.Reason
	case errors.Is(err, websocket.ErrReadLimit):
		return "read limit"
	}
	return "error: " + err.Error()
}

// TestWSRead: what Read makes of frame streams, and what it sends back.
func TestWSRead(t *testing.T) {
	t.Parallel()
	const eof = `close 1006 "unexpected EOF"`
	big := strings.Repeat("b", 70000)
	for _, tt := range []struct {
		name   string
		client bool // the WS is a client's: the frames come unmasked
		max    int
		stream [][]byte
		want   []string // Read's events, up to the first final error
		peer   []string // what the peer gets
	}{
		{name: "binary", stream: [][]byte{frm(bin, true, "\x0chello")}, want: []string{"msg:\x0chello", eof}},
		{name: "text, any bytes", stream: [][]byte{frm(text, true, "\xff\xfe")}, want: []string{"msg:\xff\xfe", eof}},
		{name: "16-bit length", stream: [][]byte{frm(bin, true, strings.Repeat("x", 300))},
			want: []string{"msg:" + strings.Repeat("x", 300), eof}},
		{name: "64-bit length, over the busy buffer", max: 1 << 20, stream: [][]byte{frm(bin, true, big)},
			want: []string{"msg:" + big, eof}},
		{name: "fragments with a ping among them", stream: [][]byte{
			frm(opBinary, true, "ab"), frm(fin|opPing, true, "p"), frm(opContinuation, true, "cd"),
			frm(fin|opContinuation, true, "ef")},
			want: []string{"msg:abcdef", eof}, peer: []string{"pong:p"}},
		{name: "big fragments", max: 1 << 20, stream: [][]byte{
			frm(opText, true, big), frm(fin|opContinuation, true, big)},
			want: []string{"msg:" + big + big, eof}},
		{name: "empty message, then on", stream: [][]byte{frm(bin, true, ""), frm(bin, true, "a")},
			want: []string{"message error: empty WebSocket message", "msg:a", eof}},
		{name: "empty fragments", stream: [][]byte{frm(opBinary, true, ""), frm(fin|opContinuation, true, "")},
			want: []string{"message error: empty WebSocket message", eof}},
		{name: "at the limit", max: 10, stream: [][]byte{frm(bin, true, "0123456789")},
			want: []string{"msg:0123456789", eof}},
		{name: "over the limit", max: 10, stream: [][]byte{frm(bin, true, "0123456789a")},
			want: []string{"read limit"}, peer: []string{"close:1009 "}},
		{name: "fragments over the limit", max: 10, stream: [][]byte{
			frm(opBinary, true, "012345"), frm(fin|opContinuation, true, "6789a")},
			want: []string{"read limit"}, peer: []string{"close:1009 "}},
		{name: "RSV1", stream: [][]byte{frm(bin|rsv1, true, "a")},
			want: []string{"protocol: RSV1 set"}, peer: []string{"close:1002 RSV1 set"}},
		{name: "bad opcode", stream: [][]byte{frm(fin|3, true, "a")},
			want: []string{"protocol: bad opcode 3"}, peer: []string{"close:1002 bad opcode 3"}},
		{name: "unmasked to a server", stream: [][]byte{frm(bin, false, "a")},
			want: []string{"protocol: bad MASK"}, peer: []string{"close:1002 bad MASK"}},
		{name: "masked to a client", client: true, stream: [][]byte{frm(bin, true, "a")},
			want: []string{"protocol: bad MASK"}, peer: []string{"close:1002 bad MASK"}},
		{name: "control over 125 bytes", stream: [][]byte{frm(fin|opPing, true, strings.Repeat("p", 126))},
			want: []string{"protocol: len > 125 for control"}, peer: []string{"close:1002 len > 125 for control"}},
		{name: "fragmented control", stream: [][]byte{frm(opPing, true, "p")},
			want: []string{"protocol: FIN not set on control"}, peer: []string{"close:1002 FIN not set on control"}},
		{name: "continuation first", stream: [][]byte{frm(fin|opContinuation, true, "a")},
			want: []string{"protocol: continuation after FIN"}, peer: []string{"close:1002 continuation after FIN"}},
		{name: "data inside a fragmented message", stream: [][]byte{frm(opBinary, true, "a"), frm(bin, true, "b")},
			want: []string{"protocol: data before FIN"}, peer: []string{"close:1002 data before FIN"}},
		{name: "length with its top bit set", stream: [][]byte{{bin, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}},
			want: []string{"protocol: bad length"}, peer: []string{"close:1002 bad length"}},
		{name: "close", stream: [][]byte{frm(fin|opClose, true, closePayload(1001, "bye")), frm(bin, true, "late")},
			want: []string{`close 1001 "bye"`}, peer: []string{"close:1001 "}},
		{name: "close without code", stream: [][]byte{frm(fin|opClose, true, "")},
			want: []string{`close 1005 ""`}, peer: []string{"close:"}},
		{name: "close with one byte", stream: [][]byte{frm(fin|opClose, true, "x")},
			want: []string{"protocol: bad close payload"}, peer: []string{"close:1002 bad close payload"}},
		{name: "close with a bad code", stream: [][]byte{frm(fin|opClose, true, closePayload(1005, ""))},
			want: []string{"protocol: bad close code 1005"}, peer: []string{"close:1002 bad close code 1005"}},
		{name: "close reason not UTF-8", stream: [][]byte{frm(fin|opClose, true, closePayload(1000, "\xff"))},
			want: []string{"protocol: invalid utf8 payload in close frame"},
			peer: []string{"close:1002 invalid utf8 payload in close frame"}},
		{name: "cut inside a frame", stream: [][]byte{frm(bin, true, "whole"), frm(bin, true, "cut")[:5]},
			want: []string{"msg:whole", eof}},
		{name: "cut inside a header", stream: [][]byte{frm(bin, true, strings.Repeat("x", 300))[:3]},
			want: []string{eof}},
		{name: "client reads", client: true, stream: [][]byte{frm(bin, false, "a"), frm(fin|opPing, false, "hi"),
			frm(text, false, "b")},
			want: []string{"msg:a", "msg:b", eof}, peer: []string{"pong:hi"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			peer, conn := tcpPair(t)
			ws := newWS(conn, NewElastic(conn, nil), tt.max, tt.client)
			go func() {
				for _, f := range tt.stream {
					if _, err := peer.Write(f); err != nil {
						return
					}
				}
				_ = peer.(*net.TCPConn).CloseWrite()
			}()
			var got []string
			for len(got) < len(tt.want)+1 {
				msg, err := ws.Read()
				got = append(got, event(msg, err))
				var me *smq.MessageError
				if err != nil && !errors.As(err, &me) {
					break
				}
			}
			if !equalStrings(got, tt.want) {
				t.Errorf("Read: %q\nwant  %q", got, tt.want)
			}
			if _, err := ws.Read(); event(nil, err) != tt.want[len(tt.want)-1] {
				t.Errorf("Read after the end: %v", err)
			}
			ws.Close()
			if p := peerFrames(t, peer); !equalStrings(p, tt.peer) {
				t.Errorf("peer got %q, want %q", p, tt.peer)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWSPongHandler: pongs go to the handler, set on the WS or, before
// NewWS, on gorilla's connection (as the gateway does).
func TestWSPongHandler(t *testing.T) {
	t.Parallel()
	peer, conn := tcpPair(t)
	ws := newWS(conn, NewElastic(conn, nil), 0, false)
	var pongs []string
	ws.SetPongHandler(func(p []byte) { pongs = append(pongs, string(p)) })
	peer.Write(slices(frm(fin|opPong, true, "1"), frm(fin|opPong, true, ""), frm(bin, true, "m")))
	if msg, err := ws.Read(); err != nil || string(msg) != "m" {
		t.Fatalf("Read: %q %v", msg, err)
	}
	if !equalStrings(pongs, []string{"1", ""}) {
		t.Fatalf("pongs %q", pongs)
	}

	got := make(chan string, 1)
	addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conn.SetPongHandler(func(s string) error { got <- s; return nil })
		ws := NewWS(conn, 0)
		defer ws.Close()
		_, _ = ws.Read()
	})
	c := dialGorilla(t, addr)
	if err := c.WriteControl(websocket.PongMessage, []byte("via gorilla"), time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != "via gorilla" {
		t.Fatalf("pong %q", p)
	}
}

func slices(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestWSControlHook: every control frame goes through the hook before it
// is handled; the hook's error ends reading, the ping unanswered.
func TestWSControlHook(t *testing.T) {
	t.Parallel()
	peer, conn := tcpPair(t)
	ws := newWS(conn, NewElastic(conn, nil), 0, false)
	errLimit := errors.New("too many frames")
	n := 0
	ws.SetControlHook(func() error {
		if n++; n > 2 {
			return errLimit
		}
		return nil
	})
	peer.Write(slices(frm(fin|opPong, true, ""), frm(fin|opPing, true, "a"), frm(bin, true, "m"), frm(fin|opPing, true, "b")))
	if msg, err := ws.Read(); err != nil || string(msg) != "m" || n != 2 {
		t.Fatalf("Read: %q %v after %d control frames", msg, err, n)
	}
	if _, err := ws.Read(); !errors.Is(err, errLimit) {
		t.Fatalf("third control frame: %v, want the hook's error", err)
	}
	// Only the first ping was answered.
	_ = peer.SetReadDeadline(time.Now().Add(waitFor))
	want := []byte{fin | opPong, 1, 'a'}
	got := make([]byte, len(want)+1)
	k, _ := io.ReadAtLeast(peer, got, len(want))
	if !bytes.Equal(got[:k], want) {
		t.Fatalf("peer got % x, want % x (one pong)", got[:k], want)
	}
}

// TestWSBuffered: Buffered counts exactly when a whole message is there.
func TestWSBuffered(t *testing.T) {
	t.Parallel()
	ping := frm(fin|opPing, true, "")
	msg := frm(bin, true, "\x0cpayload!!")
	for _, tt := range []struct {
		name   string
		stream []byte
		whole  bool
	}{
		{"message", msg, true},
		{"message cut", msg[:len(msg)-1], false},
		{"header cut", msg[:1], false},
		{"ping only", ping, false},
		{"ping then message", slices(ping, msg), true},
		{"close then message", slices(frm(fin|opClose, true, ""), msg), false},
		{"first fragment", frm(opBinary, true, "a"), false},
		{"fragments", slices(frm(opBinary, true, "a"), ping, frm(fin|opContinuation, true, "b")), true},
		{"bad frame", frm(bin, false, "a"), false},
		{"over the limit", frm(bin, true, strings.Repeat("x", 101)), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			peer, conn := tcpPair(t)
			ws := newWS(conn, NewElastic(conn, nil), 100, false)
			// A first message, read, and the stream after it arriving.
			if _, err := peer.Write(slices(frm(bin, true, "first"), tt.stream)); err != nil {
				t.Fatal(err)
			}
			if m, err := ws.Read(); err != nil || string(m) != "first" {
				t.Fatalf("Read: %q %v", m, err)
			}
			for ws.r.Buffered() < len(tt.stream) {
				if _, err := ws.r.Peek(ws.r.Buffered() + 1); err != nil {
					t.Fatal(err)
				}
			}
			want := 0
			if tt.whole {
				want = len(tt.stream)
			}
			if n := ws.Buffered(); n != want {
				t.Fatalf("Buffered = %d, want %d", n, want)
			}
		})
	}
}

// gorillaServer serves handler on a loopback listener and returns its
// address.
func gorillaServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func dialGorilla(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: waitFor, WriteBufferSize: 512}
	c, _, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialWS opens a client WS to addr with ClientHandshake.
func dialWS(t *testing.T, addr string, max int) *WS {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	ws, resp, err := ClientHandshake(nc, &url.URL{Scheme: "ws", Host: addr, Path: "/"}, nil, max, time.Now().Add(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %s", resp.Status)
	}
	return ws
}

// oracleMessages are messages of every size, some text, some binary.
func oracleMessages() (msgs [][]byte, textual []bool) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		n := 1 + r.IntN(200)
		if i%20 == 0 {
			n = 1 + r.IntN(70000)
		}
		m := make([]byte, n)
		for j := range m {
			m[j] = byte(r.IntN(256))
		}
		msgs = append(msgs, m)
		textual = append(textual, r.IntN(4) == 0)
	}
	return msgs, textual
}

// TestWSGorillaOracle: WS and gorilla understand each other, both ways,
// over loopback: gorilla's frames (fragmented by its small write buffer,
// pings among them) read by WS, WS's read by gorilla, and the closing
// handshake.
func TestWSGorillaOracle(t *testing.T) {
	t.Parallel()
	msgs, textual := oracleMessages()
	// talk writes msgs with gorilla, pinging as it goes, reads each echo,
	// then closes with 1000 "done" and expects the echo of the close.
	talk := func(t *testing.T, g *websocket.Conn) {
		pongs := make(chan string, len(msgs))
		g.SetPongHandler(func(s string) error { pongs <- s; return nil })
		errc := make(chan error, 1)
		go func() {
			for i, m := range msgs {
				typ := websocket.BinaryMessage
				if textual[i] {
					typ = websocket.TextMessage
				}
				if i%7 == 0 {
					if err := g.WriteControl(websocket.PingMessage, []byte(fmt.Sprint(i)), time.Now().Add(waitFor)); err != nil {
						errc <- err
						return
					}
				}
				if err := g.WriteMessage(typ, m); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		_ = g.SetReadDeadline(time.Now().Add(4 * waitFor))
		for i, m := range msgs {
			typ, echo, err := g.ReadMessage()
			if err != nil || typ != websocket.BinaryMessage || !bytes.Equal(echo, m) {
				t.Fatalf("echo %d: type %d, %d bytes (want %d), %v", i, typ, len(echo), len(m), err)
			}
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if len(pongs) != (len(msgs)+6)/7 {
			t.Errorf("%d pongs, want %d", len(pongs), (len(msgs)+6)/7)
		}
		if err := g.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "done"), time.Now().Add(waitFor)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := g.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("after the close: %v", err)
		}
	}
	// echo reads with WS and writes each message back, flushing when
	// nothing more is buffered.
	echo := func(ws *WS) error {
		for {
			msg, err := ws.Read()
			if err != nil {
				return err
			}
			if err := ws.Write(msg); err != nil {
				return err
			}
			if ws.Buffered() == 0 {
				if err := ws.Flush(); err != nil {
					return err
				}
			}
		}
	}
	wantClose := func(t *testing.T, err error) {
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 1000 || ce.Text != "done" {
			t.Errorf("WS ended with %v, want close 1000 done", err)
		}
	}

	t.Run("gorilla client, WS server", func(t *testing.T) {
		ended := make(chan error, 1)
		addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			ws := NewWS(conn, 1<<20)
			defer ws.Close()
			ended <- echo(ws)
		})
		talk(t, dialGorilla(t, addr))
		wantClose(t, <-ended)
	})
	t.Run("WS client, gorilla server", func(t *testing.T) {
		ws := make(chan *WS, 1)
		ended := make(chan error, 1)
		go func() { ended <- echo(<-ws) }()
		addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
			up := websocket.Upgrader{WriteBufferSize: 512}
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			talk(t, conn)
		})
		ws <- dialWS(t, addr, 1<<20)
		wantClose(t, <-ended)
	})
}

// TestClientHandshake: the answer, what comes right after it, and the
// refusals.
func TestClientHandshake(t *testing.T) {
	t.Parallel()
	// rawServer answers one upgrade request with answer(key), in one write.
	rawServer := func(t *testing.T, answer func(req *http.Request) string) (string, chan *http.Request) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		reqs := make(chan *http.Request, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err != nil {
				return
			}
			reqs <- req
			io.WriteString(c, answer(req))
		}()
		return l.Addr().String(), reqs
	}
	handshake := func(t *testing.T, addr string, u *url.URL, h http.Header, deadline time.Time) (*WS, *http.Response, error) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		if u == nil {
			u = &url.URL{Scheme: "ws", Host: addr, Path: "/smq"}
		}
		return ClientHandshake(nc, u, h, 0, deadline)
	}
	accept := func(req *http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
	}

	t.Run("frames in the answer's write", func(t *testing.T) {
		addr, reqs := rawServer(t, func(req *http.Request) string {
			return accept(req) + string(frm(bin, false, "init")) + string(frm(bin, false, "second"))
		})
		h := http.Header{"X-Smq": {"1"}, "Host": {"broker.example"}}
		u := &url.URL{Scheme: "wss", Host: addr, Path: "/a b", RawQuery: "q=1"}
		ws, resp, err := handshake(t, addr, u, h, time.Now().Add(waitFor))
		if err != nil {
			t.Fatal(err)
		}
		req := <-reqs
		if req.Host != "broker.example" || req.Header.Get("X-Smq") != "1" || req.URL.RequestURI() != "/a%20b?q=1" ||
			req.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("request: host %q, uri %q, header %v", req.Host, req.URL.RequestURI(), req.Header)
		}
		if resp.StatusCode != 101 {
			t.Errorf("status %s", resp.Status)
		}
		for _, want := range []string{"init", "second"} {
			if msg, err := ws.Read(); err != nil || string(msg) != want {
				t.Fatalf("Read: %q %v, want %q", msg, err, want)
			}
		}
	})
	t.Run("gorilla sends at once", func(t *testing.T) {
		addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			conn.WriteMessage(websocket.BinaryMessage, []byte("init"))
			conn.ReadMessage()
		})
		ws := dialWS(t, addr, 0)
		if msg, err := ws.Read(); err != nil || string(msg) != "init" {
			t.Fatalf("Read: %q %v", msg, err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		t.Cleanup(srv.Close)
		addr := strings.TrimPrefix(srv.URL, "http://")
		_, resp, err := handshake(t, addr, nil, nil, time.Now().Add(waitFor))
		var he *HandshakeError
		if !errors.As(err, &he) || !errors.Is(err, websocket.ErrBadHandshake) {
			t.Fatalf("%v, want a HandshakeError", err)
		}
		if he.StatusCode != 404 || he.Status != "404 Not Found" || string(he.Body) != "404 page not found\n" ||
			err.Error() != `wire: websocket upgrade refused: server answered "404 Not Found"` {
			t.Errorf("%d %q %q: %v", he.StatusCode, he.Status, he.Body, err)
		}
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 404 || string(b) != string(he.Body) {
			t.Errorf("response %s %q", resp.Status, b)
		}
	})
	t.Run("refusal with a body to the end of the stream", func(t *testing.T) {
		addr, _ := rawServer(t, func(*http.Request) string {
			return "HTTP/1.1 403 Forbidden\r\n\r\nnot you" // and the connection stays open
		})
		start := time.Now()
		_, _, err := handshake(t, addr, nil, nil, time.Now().Add(3*waitFor))
		var he *HandshakeError
		if !errors.As(err, &he) || he.StatusCode != 403 || string(he.Body) != "not you" {
			t.Fatalf("%v (%#v)", err, he)
		}
		if d := time.Since(start); d > 2*waitFor {
			t.Errorf("took %v: waited for the end of the body", d)
		}
	})
	for _, tt := range []struct{ name, answer, problem string }{
		{"wrong accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: xyz\r\n\r\n", "wrong Sec-WebSocket-Accept"},
		{"no upgrade", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "no Upgrade: websocket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := rawServer(t, func(*http.Request) string { return tt.answer })
			_, _, err := handshake(t, addr, nil, nil, time.Now().Add(waitFor))
			var he *HandshakeError
			if !errors.As(err, &he) || he.Problem != tt.problem ||
				err.Error() != "wire: bad websocket upgrade answer: "+tt.problem {
				t.Fatalf("%v, want %q", err, tt.problem)
			}
		})
	}
	t.Run("answer too long", func(t *testing.T) {
		addr, _ := rawServer(t, func(req *http.Request) string {
			return "HTTP/1.1 101 Switching Protocols\r\nX-Long: " + strings.Repeat("x", 30000) + "\r\n\r\n"
		})
		if _, _, err := handshake(t, addr, nil, nil, time.Now().Add(waitFor)); !errors.Is(err, errAnswerTooLong) {
			t.Fatalf("%v, want errAnswerTooLong", err)
		}
	})
	t.Run("the handshake's own header", func(t *testing.T) {
		addr, _ := rawServer(t, accept)
		_, _, err := handshake(t, addr, nil, http.Header{"Sec-Websocket-Key": {"x"}}, time.Now().Add(waitFor))
		if err == nil || !strings.Contains(err.Error(), "Sec-Websocket-Key") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		addr, _ := rawServer(t, func(*http.Request) string { return "" }) // answers nothing
		_, _, err := handshake(t, addr, nil, nil, time.Now().Add(200*time.Millisecond))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%v, want a timeout", err)
		}
	})
}

// TestWSAllocs: reading (single frames, fragments, a ping among them) and
// writing allocate nothing per message, on either side.
func TestWSAllocs(t *testing.T) {
	for _, client := range []bool{false, true} {
		t.Run(fmt.Sprintf("client=%v", client), func(t *testing.T) {
			peer, conn := tcpPair(t)
			ws := newWS(conn, NewElastic(conn, nil), 0, client)
			// The peer's messages, for 1,001 runs (AllocsPerRun warms up once).
			const runs = 1000
			masked := !client
			round := slices(frm(bin, masked, "\x0cone frame"), frm(fin|opPing, masked, "p"),
				frm(opBinary, masked, "\x0cfrag"), frm(fin|opPong, masked, ""), frm(fin|opContinuation, masked, "ments"),
				frm(bin, masked, strings.Repeat("\x0c", 3000)))
			_ = conn.SetReadDeadline(time.Now().Add(waitFor))
			go func() {
				for range (runs + 1 + 2) / 3 { // 3 messages a round
					if _, err := peer.Write(round); err != nil {
						return
					}
				}
			}()
			go func() { // drain what the WS writes, without allocating
				buf := make([]byte, 64<<10)
				for {
					if _, err := peer.Read(buf); err != nil {
						return
					}
				}
			}()
			allocs := testing.AllocsPerRun(runs, func() {
				msg, err := ws.Read()
				if err != nil {
					t.Fatal(err)
				}
				if err := ws.Write(msg); err != nil {
					t.Fatal(err)
				}
				if err := ws.Flush(); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per message", allocs)
			}
		})
	}
}

// TestWSOversizeClosesOnce: over the read limit WS sends close 1009 and
// nothing after it (no data frame, no second close).
func TestWSOversizeClosesOnce(t *testing.T) {
	t.Parallel()
	server := make(chan *WS, 1)
	readErr := make(chan error, 1)
	addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := NewWS(conn, 100)
		server <- s
		_, err = s.Read()
		readErr <- err
	})
	conn := dialGorilla(t, addr)
	s := <-server
	if err := conn.WriteMessage(websocket.BinaryMessage, make([]byte, 101)); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, websocket.ErrReadLimit) {
		t.Fatalf("oversize message: %v, want ErrReadLimit", err)
	}
	if err := s.Write(smq.Disconnect{Reason: "message too big"}.Append(nil)); !errors.Is(err, websocket.ErrCloseSent) {
		t.Errorf("Write after the close: %v, want ErrCloseSent", err)
	}
	if err := s.CloseWrite(websocket.CloseMessageTooBig, "again", time.Now().Add(waitFor)); err != nil {
		t.Errorf("CloseWrite after the close: %v", err)
	}
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("client: %v, want close 1009", err)
	}
}

// TestWSCoalesces: messages written before a Flush leave in one write, in
// order, masked by a client and not by a server (gorilla checks both);
// pings are answered and a close is echoed once, through the same queue.
func TestWSCoalesces(t *testing.T) {
	t.Parallel()
	serverDone := make(chan error, 1)
	addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := NewWS(conn, smq.MaxRawFrame)
		defer s.Close()
		for {
			msg, err := s.Read()
			if err != nil {
				serverDone <- err
				return
			}
			_ = s.Write(msg)
			_ = s.Flush()
		}
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingConn{Conn: nc}
	t.Cleanup(func() { nc.Close() })
	c, _, err := ClientHandshake(counting, &url.URL{Host: addr}, nil, smq.MaxRawFrame, time.Now().Add(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	counting.writes.Store(0) // the upgrade request
	var want [][]byte
	for i := range 50 {
		m := (&smq.Publish{TID: 1, PTID: 2, Payload: make([]byte, i*20)}).Append(nil)
		want = append(want, m)
		if err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if counting.writes.Load() != 0 {
		t.Fatalf("%d writes before Flush", counting.writes.Load())
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := counting.writes.Load(); n != 1 {
		t.Errorf("50 messages in %d writes, want 1", n)
	}
	for i, w := range want {
		got, err := c.Read()
		if err != nil || string(got) != string(w) {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
	}
	pong := make(chan string, 1)
	c.SetPongHandler(func(p []byte) { pong <- string(p) })
	if err := c.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(websocket.CloseNormalClosure, "bye", time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(want[0]); !errors.Is(err, websocket.ErrCloseSent) {
		t.Errorf("Write after close: %v", err)
	}
	_, err = c.Read()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after our close: %v, want the echo 1000", err)
	}
	if p := <-pong; p != "hi" {
		t.Errorf("pong %q", p)
	}
	if err := <-serverDone; !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server: %v", err)
	}
}

// wsPair returns a client WS on one end of a real WebSocket and the
// gorilla connection of the server end, served by serve.
func wsPair(t *testing.T, serve func(*websocket.Conn)) *WS {
	t.Helper()
	done := make(chan struct{})
	addr := gorillaServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		serve(conn)
		<-done
	})
	t.Cleanup(func() { close(done) })
	return dialWS(t, addr, smq.MaxRawFrame)
}

// TestWSWriteDeadline: a peer that stops reading trips the write deadline
// set before the writes.
func TestWSWriteDeadline(t *testing.T) {
	t.Parallel()
	c := wsPair(t, func(*websocket.Conn) {}) // never reads
	if err := c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 60000)
	msg[0] = byte(smq.TypePublish)
	for i := 0; ; i++ {
		if err := c.Write(msg); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("write %d: %v, want a timeout", i, err)
			}
			return
		}
		if i > 10000 {
			t.Fatal("600 MB written to a peer that reads nothing")
		}
	}
}

// TestWSControlKeepsDataDeadline: a control frame's short deadline does not
// stay on the connection for the data written after it.
func TestWSControlKeepsDataDeadline(t *testing.T) {
	t.Parallel()
	c := wsPair(t, func(conn *websocket.Conn) {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	})
	if err := c.WriteControl(websocket.PingMessage, nil, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // the ping's deadline passes (not a synchronisation)
	if err := c.Write(smq.Ping{}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("a write after the ping's deadline passed: %v", err)
	}
}

// TestWSCloseWriteCutsStuckWrite: CloseWrite returns by its deadline when
// a write is stuck on a peer that reads nothing.
func TestWSCloseWriteCutsStuckWrite(t *testing.T) {
	t.Parallel()
	c := wsPair(t, func(*websocket.Conn) {}) // never reads
	msg := make([]byte, 60000)
	msg[0] = byte(smq.TypePublish)
	// Fill the connection: from then on, every write blocks.
	if err := c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if err := c.Write(msg); err != nil {
			break
		}
		if i > 10000 {
			t.Fatal("600 MB written to a peer that reads nothing")
		}
	}
	_ = c.SetWriteDeadline(time.Time{})
	stuck := make(chan error, 1)
	go func() {
		for {
			if err := c.Write(msg); err != nil {
				stuck <- err
				return
			}
		}
	}()
	start := time.Now()
	_ = c.CloseWrite(websocket.CloseGoingAway, "bye", time.Now().Add(200*time.Millisecond))
	if d := time.Since(start); d > waitFor {
		t.Fatalf("CloseWrite took %v", d)
	}
	if err := <-stuck; err == nil {
		t.Fatal("the stuck write did not fail")
	}
}
