package smqtest

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// Fast is a raw SMQ peer for benchmarks: the codec's reader straight on the
// socket, with no per-message deadline (unlike Conn), so it costs no more
// than a lean real client. Its methods fail the benchmark on error.
type Fast struct {
	Conn net.Conn
	R    *smq.Reader
	ETID uint32
}

// DialFast connects to addr (over TLS when cfg is not nil), bootstraps raw
// SMQ, and logs in as uid; the connection closes with the test.
func DialFast(tb testing.TB, addr string, cfg *tls.Config, uid string) *Fast {
	tb.Helper()
	var conn net.Conn
	var err error
	if cfg != nil {
		conn, err = tls.Dial("tcp", addr, cfg)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	c := &Fast{Conn: conn, R: smq.NewReader(bufio.NewReaderSize(conn, 64<<10))}
	_ = conn.SetDeadline(time.Now().Add(DefaultTimeout))
	req := smq.Request{Path: "/smq", Host: addr}
	c.Write(tb, req.Append(nil))
	c.Expect(tb, smq.TypeInit)
	c.Send(tb, smq.Connect{Version: 1, UID: uid})
	ack := c.Expect(tb, smq.TypeConnack)
	if ack[1] != 0 {
		tb.Fatalf("smqtest: connack %x", ack)
	}
	_ = conn.SetDeadline(time.Time{})
	c.ETID = binary.BigEndian.Uint32(ack[2:])
	return c
}

// Write writes raw bytes.
func (c *Fast) Write(tb testing.TB, p []byte) {
	if _, err := c.Conn.Write(p); err != nil {
		tb.Fatal(err)
	}
}

// Send writes one message as a raw frame.
func (c *Fast) Send(tb testing.TB, m smq.Message) {
	b, err := smq.AppendRawMessage(nil, m)
	if err != nil {
		tb.Fatal(err)
	}
	c.Write(tb, b)
}

// Expect reads one message and fails unless it has type t.
func (c *Fast) Expect(tb testing.TB, t smq.Type) []byte {
	tb.Helper()
	msg, err := c.R.Read()
	if err != nil {
		tb.Fatalf("smqtest: reading %v: %v", t, err)
	}
	if smq.Type(msg[0]) != t {
		tb.Fatalf("smqtest: got %v, want %v", smq.Type(msg[0]), t)
	}
	return msg
}
