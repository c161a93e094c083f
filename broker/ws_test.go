package broker_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// The WebSocket transport (SMQ-WIRE.md §1, §2): one SMQ message per
// WebSocket message, no length field, text frames accepted, replies always
// binary (smqtest fails any read of a non-binary message).

func TestWebSocketBootstrap(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	for _, path := range []string{"/", "/smq.lsp", "/any/path?with=query"} {
		t.Run(path, func(t *testing.T) {
			h := http.Header{"Sec-WebSocket-Protocol": {"smq, mqtt"}}
			c, resp := smqtest.OpenWS(t, "ws://"+b.Addr+path, h)
			if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" {
				t.Errorf("upgrade answered subprotocol %q, want none", p)
			}
			msg := c.Read()
			ip := "127.0.0.1"
			if len(msg) != 6+len(ip) || msg[0] != 1 || msg[1] != 1 || string(msg[6:]) != ip {
				t.Fatalf("Init message wrong\n%s", smqtest.Diff(msg, append([]byte{1, 1, msg[2], msg[3], msg[4], msg[5]}, ip...)))
			}
			c.Login(fmt.Sprintf("ws-boot-%d", len(path)))
			c.Barrier()
		})
	}
	t.Run("SimpleMQ header too", func(t *testing.T) {
		c, _ := smqtest.DialWS(t, b.Addr, http.Header{"Simplemq": {"1"}, "Sendsmqhttpresponse": {"true"}})
		c.Login("ws-with-simplemq")
		c.Barrier()
	})
}

func TestWebSocketFraming(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})

	t.Run("one message per WebSocket message", func(t *testing.T) {
		c := smqtest.ConnectWS(t, b.Addr, "ws-framing-1")
		c.Send(smq.Subscribe{Topic: "ws/topic"})
		ack := c.Read()
		if len(ack) != 6+len("ws/topic") || ack[0] != byte(smq.TypeSuback) || ack[1] != 0 {
			t.Fatalf("Suback: %s (% x)", smqtest.Describe(ack), ack)
		}
		id := binary.BigEndian.Uint32(ack[2:])
		msg := c.Publish(id, 3, []byte("over websocket"))
		c.Expect(msg)
		c.Send(smq.Ping{})
		c.Expect([]byte{byte(smq.TypePong)})
		c.Send(smq.Observe{ID: id})
		c.ExpectMessage(smq.Change{ID: id, Count: 1})
	})

	t.Run("text frames accepted", func(t *testing.T) {
		c, _ := smqtest.DialWS(t, b.Addr, nil)
		c.WriteWS(websocket.TextMessage, smq.Connect{Version: 1, UID: "ws-text-1"}.Append(nil))
		c.ExpectConnack(smq.CodeAccepted)
		c.WriteWS(websocket.TextMessage, smq.Ping{}.Append(nil))
		c.Expect([]byte{byte(smq.TypePong)})
		c.WriteWS(websocket.TextMessage, smq.Subscribe{Topic: "text"}.Append(nil))
		c.ExpectAck(smq.TypeSuback, smq.AckOK, "text")
	})

	t.Run("a second message packed into one is not a message", func(t *testing.T) {
		c := smqtest.ConnectWS(t, b.Addr, "ws-packed-1")
		// Ping, then what would be Subscribe "x": one Ping with trailing bytes.
		c.WriteWS(websocket.BinaryMessage, []byte{byte(smq.TypePing), byte(smq.TypeSubscribe), 'x'})
		c.Expect([]byte{byte(smq.TypePong)})
		c.Barrier() // no Suback
	})

	t.Run("raw to WebSocket and back", func(t *testing.T) {
		r := smqtest.Connect(t, b.Addr, "raw-side-1")
		w := smqtest.ConnectWS(t, b.Addr, "ws-side-1")
		tid := r.Subscribe("bridge")
		w.Subscribe("bridge")
		msg := r.Publish(tid, 0, []byte("from raw"))
		r.Expect(msg)
		w.Expect(msg)
		msg = w.Publish(tid, 0, []byte("from websocket"))
		w.Expect(msg)
		r.ExpectRaw(raw(msg...))
		r.ExpectRaw(raw(w.Publish(r.ETID, 0, []byte("direct"))...))
		w.Expect(r.Publish(w.ETID, 0, []byte("direct back")))
	})

	t.Run("65535-byte message accepted", func(t *testing.T) {
		c := smqtest.ConnectWS(t, b.Addr, "ws-max-1")
		tid := c.Subscribe("max")
		msg := c.Publish(tid, 0, make([]byte, smq.MaxRawFrame-13))
		if len(msg) != 65535 {
			t.Fatalf("test bug: %d bytes", len(msg))
		}
		c.Expect(msg)
	})

	t.Run("over 65535 bytes closes", func(t *testing.T) {
		c := smqtest.ConnectWS(t, b.Addr, "ws-over-1")
		tid := c.Subscribe("over")
		c.Publish(tid, 0, make([]byte, smq.MaxRawFrame-13+1))
		err := c.ExpectClosed()
		t.Logf("closed with %v", err)
	})
}

func TestWebSocketRefusal(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	c, _ := smqtest.DialWS(t, b.Addr, nil)
	c.Send(smq.Subscribe{Topic: "t"})
	c.ExpectConnack(smq.CodeBadVersion)
	c.ExpectClosed()
}

// TestWebSocketMalformed: protocol errors over WebSocket, and PubFrag, which
// is raw-only, close the connection without a Disconnect.
func TestWebSocketMalformed(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{})
	bystander := smqtest.ConnectWS(t, b.Addr, "ws-bystander")
	bystanderTID := bystander.Subscribe("ws-bystander")
	tests := []struct {
		name string
		msg  func(etid uint32) []byte
	}{
		{"empty message", func(uint32) []byte { return []byte{} }},
		{"type 0", func(uint32) []byte { return []byte{0} }},
		{"type 10", func(uint32) []byte { return []byte{10, 0, 0, 0, 1} }},
		{"type 20", func(uint32) []byte { return []byte{20} }},
		{"type 255", func(uint32) []byte { return []byte{255} }},
		{"Publish 11-byte body", func(uint32) []byte { return []byte{8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0} }},
		{"Unsubscribe 3-byte body", func(uint32) []byte { return []byte{9, 0, 0, 1} }},
		{"PubFrag last fragment", func(etid uint32) []byte {
			return smqtest.PubFragMsg(bystanderTID, etid, 0, []byte("frag"))
		}},
		{"PubFrag intermediate fragment", func(etid uint32) []byte {
			return smqtest.PubFragMsg(0, etid, 0, []byte("frag"))
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := smqtest.ConnectWS(t, b.Addr, fmt.Sprintf("ws-malformed-%d", i))
			bad.WriteWS(websocket.BinaryMessage, tc.msg(bad.ETID))
			bad.ExpectClosed()
			bystander.Barrier() // nothing was delivered, and it still works
			fresh := smqtest.ConnectWS(t, b.Addr, fmt.Sprintf("ws-after-malformed-%d", i))
			msg := fresh.Publish(bystanderTID, 0, []byte(tc.name))
			if got := bystander.Read(); !bytes.Equal(got, msg) {
				t.Fatalf("bystander\n%s", smqtest.Diff(got, msg))
			}
		})
	}
}
