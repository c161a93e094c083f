// Package smqtest is a tiny raw SMQ wire peer for tests. It dials a broker
// over a real socket, sends a bootstrap request with exactly the header lines
// a test chooses, and reads and writes frames byte for byte, so tests check
// the wire and not a client library. Expect helpers fail the test with a
// readable diff of the bytes.
//
// Every read runs under a deadline (Timeout). Absence is proven in one of two
// ways: Barrier, a Ping/Pong round trip after which nothing else may have
// arrived (the broker handles one connection's messages in order), or
// ExpectNothing, a short read deadline.
package smqtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// DefaultTimeout bounds every read that expects something to arrive.
const DefaultTimeout = 5 * time.Second

// QuietPeriod is the read deadline ExpectNothing uses to conclude that nothing
// arrives.
const QuietPeriod = 100 * time.Millisecond

// Conn is one test peer: a raw SMQ connection (length-prefixed frames on a
// socket) or a WebSocket one (one SMQ message per binary message).
type Conn struct {
	tb testing.TB

	// NetConn is the socket of a raw connection (nil for WebSocket); tests
	// may tune it, e.g. shrink its receive buffer.
	NetConn net.Conn
	br      *bufio.Reader

	// WS is the connection of a WebSocket peer (nil for raw).
	WS *websocket.Conn

	// Init is the broker's Init, once ReadInit has run; ETID is the ETID
	// from an accepted Connack, once Login has run.
	Init smq.Init
	ETID uint32

	// Timeout bounds reads that expect something; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// New wraps an open socket (a net.Pipe end, an accepted connection) as a raw
// peer. It is closed when the test ends.
func New(tb testing.TB, conn net.Conn) *Conn {
	tb.Helper()
	tb.Cleanup(func() { conn.Close() })
	return &Conn{tb: tb, NetConn: conn, br: bufio.NewReaderSize(conn, 64<<10)}
}

// DialTCP opens a socket to addr and sends nothing.
func DialTCP(tb testing.TB, addr string) *Conn {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, DefaultTimeout)
	if err != nil {
		tb.Fatalf("smqtest: dial %s: %v", addr, err)
	}
	return New(tb, conn)
}

// RawRequest returns an HTTP request head: the request line, each header
// line as given (names are not canonicalised), and the blank line.
func RawRequest(requestLine string, headerLines ...string) []byte {
	var b bytes.Buffer
	b.WriteString(requestLine)
	b.WriteString("\r\n")
	for _, h := range headerLines {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// DialWith opens a socket to addr and sends "GET / HTTP/1.1", a Host header
// and headerLines. It reads nothing: the test decides what must come back.
func DialWith(tb testing.TB, addr string, headerLines ...string) *Conn {
	tb.Helper()
	c := DialTCP(tb, addr)
	c.WriteBytes(RawRequest("GET / HTTP/1.1", append([]string{"Host: " + addr}, headerLines...)...))
	return c
}

// Dial bootstraps a raw connection like the C client (SimpleMQ header, no
// HTTP answer requested) and reads Init, which must be the first bytes.
func Dial(tb testing.TB, addr string) *Conn {
	tb.Helper()
	c := DialWith(tb, addr, "SimpleMQ: 1", "User-Agent: smqtest")
	c.ReadInit()
	return c
}

// Connect dials a raw connection and logs in with uid (Connect version 1).
func Connect(tb testing.TB, addr, uid string) *Conn {
	tb.Helper()
	c := Dial(tb, addr)
	c.Login(uid)
	return c
}

// OpenWS opens a WebSocket to url with extra request headers and reads
// nothing. It returns the upgrade response too.
func OpenWS(tb testing.TB, url string, h http.Header) (*Conn, *http.Response) {
	tb.Helper()
	d := websocket.Dialer{HandshakeTimeout: DefaultTimeout}
	ws, resp, err := d.Dial(url, h)
	if err != nil {
		tb.Fatalf("smqtest: websocket dial %s: %v", url, err)
	}
	tb.Cleanup(func() { ws.Close() })
	return &Conn{tb: tb, WS: ws}, resp
}

// NewWS wraps an open WebSocket (one dialled with a TLS configuration of
// the test's, say) as a peer. It reads nothing.
func NewWS(tb testing.TB, ws *websocket.Conn) *Conn {
	tb.Helper()
	tb.Cleanup(func() { ws.Close() })
	return &Conn{tb: tb, WS: ws}
}

// DialWS opens a WebSocket to ws://addr/ with extra request headers and reads
// Init. It returns the upgrade response too.
func DialWS(tb testing.TB, addr string, h http.Header) (*Conn, *http.Response) {
	tb.Helper()
	c, resp := OpenWS(tb, "ws://"+addr+"/", h)
	c.ReadInit()
	return c, resp
}

// ConnectWS dials a WebSocket and logs in with uid.
func ConnectWS(tb testing.TB, addr, uid string) *Conn {
	tb.Helper()
	c, _ := DialWS(tb, addr, nil)
	c.Login(uid)
	return c
}

// IsWebSocket reports whether c uses the WebSocket framing.
func (c *Conn) IsWebSocket() bool { return c.WS != nil }

// Close closes the connection.
func (c *Conn) Close() {
	if c.WS != nil {
		c.WS.Close()
		return
	}
	c.NetConn.Close()
}

func (c *Conn) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// WriteBytes writes p to a raw connection as is: no framing added.
func (c *Conn) WriteBytes(p []byte) {
	c.tb.Helper()
	if c.WS != nil {
		c.tb.Fatal("smqtest: WriteBytes on a WebSocket peer")
	}
	_ = c.NetConn.SetWriteDeadline(time.Now().Add(c.timeout()))
	if _, err := c.NetConn.Write(p); err != nil {
		c.tb.Fatalf("smqtest: write % x: %v", head(p), err)
	}
}

// WriteWS sends p as one WebSocket message of type typ
// (websocket.BinaryMessage or websocket.TextMessage).
func (c *Conn) WriteWS(typ int, p []byte) {
	c.tb.Helper()
	if c.WS == nil {
		c.tb.Fatal("smqtest: WriteWS on a raw peer")
	}
	_ = c.WS.SetWriteDeadline(time.Now().Add(c.timeout()))
	if err := c.WS.WriteMessage(typ, p); err != nil {
		c.tb.Fatalf("smqtest: websocket write % x: %v", head(p), err)
	}
}

// SendMsg sends msg (type byte + body) in c's framing: a raw frame with the
// 2-byte length, or one binary WebSocket message.
func (c *Conn) SendMsg(msg []byte) {
	c.tb.Helper()
	if c.WS != nil {
		c.WriteWS(websocket.BinaryMessage, msg)
		return
	}
	frame, err := smq.AppendRaw(nil, msg)
	if err != nil {
		c.tb.Fatalf("smqtest: %v", err)
	}
	c.WriteBytes(frame)
}

// Send sends m in c's framing.
func (c *Conn) Send(m smq.Message) {
	c.tb.Helper()
	c.SendMsg(m.Append(nil))
}

// Frame is what one read returned.
type Frame struct {
	Raw []byte // the whole raw frame, length field included (nil on WebSocket)
	Msg []byte // type byte + body
}

// ReadFrame reads the next message within d. It never fails the test, so it
// may run on another goroutine. Errors: the broker closed (IsClosed), the
// deadline passed (IsTimeout), or anything else.
func (c *Conn) ReadFrame(d time.Duration) (Frame, error) {
	if c.WS != nil {
		_ = c.WS.SetReadDeadline(time.Now().Add(d))
		typ, p, err := c.WS.ReadMessage()
		if err != nil {
			return Frame{}, err
		}
		if typ != websocket.BinaryMessage {
			return Frame{Msg: p}, fmt.Errorf("broker sent a WebSocket message of type %d, want binary (2): % x", typ, head(p))
		}
		if len(p) == 0 {
			return Frame{}, errors.New("broker sent an empty WebSocket message")
		}
		return Frame{Msg: p}, nil
	}
	_ = c.NetConn.SetReadDeadline(time.Now().Add(d))
	hdr, err := c.br.Peek(2)
	if err != nil {
		if len(hdr) > 0 && errors.Is(err, io.EOF) {
			return Frame{}, fmt.Errorf("stream cut after % x: %w", hdr, io.ErrUnexpectedEOF)
		}
		return Frame{}, err
	}
	n := int(binary.BigEndian.Uint16(hdr))
	if n < smq.MinRawFrame {
		_, _ = c.br.Discard(2)
		return Frame{Raw: append([]byte(nil), hdr...)},
			fmt.Errorf("broker sent a raw frame of length %d (% x)", n, hdr)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(c.br, raw); err != nil {
		return Frame{}, fmt.Errorf("reading a %d-byte frame: %w", n, err)
	}
	return Frame{Raw: raw, Msg: raw[2:]}, nil
}

// IsClosed reports whether err from ReadFrame means the peer closed the
// connection: end of stream, reset, or a WebSocket close.
func IsClosed(err error) bool {
	var ce *websocket.CloseError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ce)
}

// IsTimeout reports whether err from ReadFrame is a passed read deadline.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Read returns the next message (type byte + body), failing the test if none
// arrives in time or the connection ends.
func (c *Conn) Read() []byte {
	c.tb.Helper()
	return c.ReadFull().Msg
}

// ReadFull is Read, with the raw frame too.
func (c *Conn) ReadFull() Frame {
	c.tb.Helper()
	f, err := c.ReadFrame(c.timeout())
	switch {
	case err == nil:
		return f
	case IsTimeout(err):
		c.tb.Fatalf("smqtest: nothing received within %v", c.timeout())
	case IsClosed(err):
		c.tb.Fatalf("smqtest: connection closed while a message was expected (%v)", err)
	default:
		c.tb.Fatalf("smqtest: %v", err)
	}
	return Frame{}
}

// ReadInit reads Init and checks its layout: version 1, a 4-byte seed and a
// non-empty IP text.
func (c *Conn) ReadInit() smq.Init {
	c.tb.Helper()
	msg := c.Read()
	if smq.Type(msg[0]) != smq.TypeInit || len(msg) < 6 {
		c.tb.Fatalf("smqtest: want Init, got %s", Describe(msg))
	}
	m, _ := smq.Decode(msg)
	in := m.(smq.Init)
	if in.Version != 1 {
		c.tb.Fatalf("smqtest: Init version %d, want 1", in.Version)
	}
	if in.IP == "" {
		c.tb.Fatal("smqtest: Init carries an empty IP")
	}
	c.Init = in
	return in
}

// Login sends Connect version 1 with uid and expects Connack 0x00 with a
// non-zero ETID, which it stores and returns.
func (c *Conn) Login(uid string) uint32 {
	c.tb.Helper()
	c.Send(smq.Connect{Version: 1, UID: uid})
	ack := c.ExpectConnack(smq.CodeAccepted)
	c.ETID = ack.ETID
	return ack.ETID
}

// ExpectConnack reads a Connack and checks its code. An accepted one must
// carry a non-zero ETID; a refusal ETID 0 and a non-empty reason.
func (c *Conn) ExpectConnack(code smq.ConnackCode) smq.Connack {
	c.tb.Helper()
	msg := c.ExpectType(smq.TypeConnack)
	if len(msg) < 6 {
		c.tb.Fatalf("smqtest: short Connack: % x", msg)
	}
	m, _ := smq.Decode(msg)
	ack := m.(smq.Connack)
	switch {
	case ack.Code != code:
		c.tb.Fatalf("smqtest: Connack code %v (reason %q), want %v", ack.Code, ack.Reason, code)
	case code == smq.CodeAccepted && ack.ETID == 0:
		c.tb.Fatal("smqtest: accepting Connack with ETID 0")
	case code != smq.CodeAccepted && ack.ETID != 0:
		c.tb.Fatalf("smqtest: refusing Connack %v with ETID %#x, want 0", code, ack.ETID)
	case code != smq.CodeAccepted && ack.Reason == "":
		c.tb.Fatalf("smqtest: refusing Connack %v without a reason", code)
	}
	return ack
}

// ExpectType reads the next message and checks its type.
func (c *Conn) ExpectType(t smq.Type) []byte {
	c.tb.Helper()
	msg := c.Read()
	if smq.Type(msg[0]) != t {
		c.tb.Fatalf("smqtest: want %v, got %s", t, Describe(msg))
	}
	return msg
}

// Expect reads the next message and compares it (type byte + body) with
// want byte for byte.
func (c *Conn) Expect(want []byte) []byte {
	c.tb.Helper()
	got := c.Read()
	if !bytes.Equal(got, want) {
		c.tb.Fatalf("smqtest: unexpected message\n%s", Diff(got, want))
	}
	return got
}

// ExpectMessage is Expect(m.Append(nil)).
func (c *Conn) ExpectMessage(m smq.Message) []byte {
	c.tb.Helper()
	return c.Expect(m.Append(nil))
}

// ExpectRaw reads the next raw frame and compares it, length field included,
// with want.
func (c *Conn) ExpectRaw(want []byte) {
	c.tb.Helper()
	if c.WS != nil {
		c.tb.Fatal("smqtest: ExpectRaw on a WebSocket peer")
	}
	got := c.ReadFull().Raw
	if !bytes.Equal(got, want) {
		c.tb.Fatalf("smqtest: unexpected raw frame\n%s", Diff(got, want))
	}
}

// ExpectBytes reads exactly len(want) bytes from a raw connection and
// compares them with want; for the HTTP answer before Init.
func (c *Conn) ExpectBytes(want []byte) {
	c.tb.Helper()
	if c.WS != nil {
		c.tb.Fatal("smqtest: ExpectBytes on a WebSocket peer")
	}
	_ = c.NetConn.SetReadDeadline(time.Now().Add(c.timeout()))
	got := make([]byte, len(want))
	n, err := io.ReadFull(c.br, got)
	if !bytes.Equal(got[:n], want) {
		c.tb.Fatalf("smqtest: unexpected bytes (read error: %v)\n%s", err, Diff(got[:n], want))
	}
}

// ReadHTTPResponse reads an HTTP response head from a raw connection.
func (c *Conn) ReadHTTPResponse() *http.Response {
	c.tb.Helper()
	_ = c.NetConn.SetReadDeadline(time.Now().Add(c.timeout()))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.tb.Fatalf("smqtest: reading HTTP response: %v", err)
	}
	return resp
}

// ExpectNothing proves that nothing arrives by reading under the short
// deadline QuietPeriod. Raw connections only: a WebSocket connection cannot
// be read after a deadline passes; use Barrier there.
func (c *Conn) ExpectNothing() {
	c.tb.Helper()
	if c.WS != nil {
		c.tb.Fatal("smqtest: ExpectNothing on a WebSocket peer; use Barrier")
	}
	f, err := c.ReadFrame(QuietPeriod)
	switch {
	case IsTimeout(err):
	case err == nil:
		c.tb.Fatalf("smqtest: want nothing, got %s\n% x", Describe(f.Msg), head(f.Raw))
	default:
		c.tb.Fatalf("smqtest: want nothing, got %v", err)
	}
}

// Barrier sends Ping and expects the very next message to be Pong: whatever
// the broker queued for c before it handled that Ping has then arrived and
// been checked by the caller, and nothing else was queued.
func (c *Conn) Barrier() {
	c.tb.Helper()
	c.Send(smq.Ping{})
	got := c.Read()
	if !bytes.Equal(got, []byte{byte(smq.TypePong)}) {
		c.tb.Fatalf("smqtest: barrier: want Pong and nothing before it\n%s", Diff(got, []byte{byte(smq.TypePong)}))
	}
}

// ExpectClosed expects a silent close: the broker ends the connection
// without sending anything more, in particular no Disconnect. Then it closes
// c, as a real client does when its stream ends. It returns the error that
// ended the stream (a *websocket.CloseError carries the close code).
func (c *Conn) ExpectClosed() error {
	c.tb.Helper()
	f, err := c.ReadFrame(c.timeout())
	switch {
	case err == nil && len(f.Msg) > 0 && smq.Type(f.Msg[0]) == smq.TypeDisconnect:
		c.tb.Fatalf("smqtest: want a silent close, got Disconnect %q", f.Msg[1:])
	case err == nil:
		c.tb.Fatalf("smqtest: want a silent close, got %s", Describe(f.Msg))
	case IsTimeout(err):
		c.tb.Fatalf("smqtest: want a silent close, connection still open after %v", c.timeout())
	case !IsClosed(err):
		c.tb.Fatalf("smqtest: want a silent close, got %v", err)
	}
	c.Close()
	return err
}

// ExpectDisconnect expects Disconnect with reason as the next message, then
// a close.
func (c *Conn) ExpectDisconnect(reason string) {
	c.tb.Helper()
	c.ExpectMessage(smq.Disconnect{Reason: reason})
	c.ExpectClosed()
}

// Subscribe subscribes to topic, expects an accepting Suback echoing the name
// and returns the TID.
func (c *Conn) Subscribe(topic string) uint32 {
	c.tb.Helper()
	c.Send(smq.Subscribe{Topic: topic})
	return c.ExpectAck(smq.TypeSuback, smq.AckOK, topic)
}

// Create creates topic and returns its TID.
func (c *Conn) Create(topic string) uint32 {
	c.tb.Helper()
	c.Send(smq.Create{Topic: topic})
	return c.ExpectAck(smq.TypeCreateack, smq.AckOK, topic)
}

// Createsub creates a sub-topic and returns its ID.
func (c *Conn) Createsub(name string) uint32 {
	c.tb.Helper()
	c.Send(smq.Createsub{Topic: name})
	return c.ExpectAck(smq.TypeCreatesuback, smq.AckOK, name)
}

// ExpectAck reads a Suback, Createack or Createsuback (t) and checks status
// and name. An accepting ack must carry a non-zero ID, a denying one ID 0.
// It returns the ID.
func (c *Conn) ExpectAck(t smq.Type, status smq.AckStatus, name string) uint32 {
	c.tb.Helper()
	msg := c.ExpectType(t)
	if len(msg) < 6 {
		c.tb.Fatalf("smqtest: short %v: % x", t, msg)
	}
	id := binary.BigEndian.Uint32(msg[2:])
	switch {
	case smq.AckStatus(msg[1]) != status:
		c.tb.Fatalf("smqtest: %v status %d, want %d: %s", t, msg[1], status, Describe(msg))
	case string(msg[6:]) != name:
		c.tb.Fatalf("smqtest: %v names %q, want %q", t, msg[6:], name)
	case status == smq.AckOK && id == 0:
		c.tb.Fatalf("smqtest: accepting %v with ID 0", t)
	case status != smq.AckOK && id != 0:
		c.tb.Fatalf("smqtest: denying %v with ID %#x, want 0", t, id)
	}
	return id
}

// Publish sends a Publish with c's ETID as ptid and returns the message
// (type byte + body) it sent.
func (c *Conn) Publish(tid, subtid uint32, payload []byte) []byte {
	c.tb.Helper()
	msg := PublishMsg(tid, c.ETID, subtid, payload)
	c.SendMsg(msg)
	return msg
}

// PublishMsg builds a Publish (type byte + body).
func PublishMsg(tid, ptid, subtid uint32, payload []byte) []byte {
	return (&smq.Publish{TID: tid, PTID: ptid, SubTID: subtid, Payload: payload}).Append(nil)
}

// PubFragMsg builds a PubFrag (type byte + body).
func PubFragMsg(tid, ptid, subtid uint32, payload []byte) []byte {
	return (&smq.PubFrag{TID: tid, PTID: ptid, SubTID: subtid, Payload: payload}).Append(nil)
}

// ChangeRaw is the exact raw frame of Change(id, count): 11 bytes.
func ChangeRaw(id, count uint32) []byte {
	f, _ := smq.AppendRawMessage(nil, smq.Change{ID: id, Count: count})
	return f
}

// Describe decodes msg (type byte + body) for failure messages.
func Describe(msg []byte) string {
	if len(msg) == 0 {
		return "<empty message>"
	}
	m, err := smq.Decode(msg)
	if err != nil {
		return fmt.Sprintf("undecodable %d-byte message (%v)", len(msg), err)
	}
	switch m := m.(type) {
	case *smq.Publish:
		return fmt.Sprintf("Publish{TID:%#x PTID:%#x SubTID:%#x Payload:%d bytes}", m.TID, m.PTID, m.SubTID, len(m.Payload))
	case *smq.PubFrag:
		return fmt.Sprintf("PubFrag{TID:%#x PTID:%#x SubTID:%#x Payload:%d bytes}", m.TID, m.PTID, m.SubTID, len(m.Payload))
	case smq.Init:
		return fmt.Sprintf("Init{Version:%d Seed:%#x IP:%q}", m.Version, m.Seed, m.IP)
	case smq.Connack:
		return fmt.Sprintf("Connack{Code:%v ETID:%#x Reason:%q}", m.Code, m.ETID, m.Reason)
	case smq.Suback:
		return fmt.Sprintf("Suback{Status:%d ID:%#x Topic:%q}", m.Status, m.ID, m.Topic)
	case smq.Createack:
		return fmt.Sprintf("Createack{Status:%d ID:%#x Topic:%q}", m.Status, m.ID, m.Topic)
	case smq.Createsuback:
		return fmt.Sprintf("Createsuback{Status:%d ID:%#x Topic:%q}", m.Status, m.ID, m.Topic)
	case smq.Change:
		return fmt.Sprintf("Change{ID:%#x Count:%d}", m.ID, m.Count)
	case smq.Disconnect:
		return fmt.Sprintf("Disconnect{Reason:%q}", m.Reason)
	}
	return fmt.Sprintf("%v%+v", m.Type(), m)
}

// Diff shows got and want as hex around their first difference, each with
// its decoding.
func Diff(got, want []byte) string {
	off := 0
	for off < len(got) && off < len(want) && got[off] == want[off] {
		off++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "got  %5d bytes: %s\n", len(got), window(got, off))
	fmt.Fprintf(&b, "want %5d bytes: %s\n", len(want), window(want, off))
	fmt.Fprintf(&b, "first difference at byte %d\n", off)
	fmt.Fprintf(&b, "got  %s\nwant %s", describeAny(got), describeAny(want))
	return b.String()
}

// describeAny decodes b as a message, or as a raw frame when its first two
// bytes are its own length.
func describeAny(b []byte) string {
	if len(b) >= 3 && int(binary.BigEndian.Uint16(b)) == len(b) {
		return "raw frame: " + Describe(b[2:])
	}
	return Describe(b)
}

// window formats up to 48 bytes of b around off.
func window(b []byte, off int) string {
	const span = 48
	start := max(0, off-16)
	if len(b) <= span {
		start = 0
	}
	end := min(len(b), start+span)
	s := fmt.Sprintf("% x", b[start:end])
	if start > 0 {
		s = fmt.Sprintf("[%d:] … %s", start, s)
	}
	if end < len(b) {
		s += " …"
	}
	return s
}

func head(p []byte) []byte {
	if len(p) > 32 {
		return p[:32]
	}
	return p
}
