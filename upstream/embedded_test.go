package upstream_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/upstream"
)

// embeddedBroker is a broker without a listener, shut down when the test
// ends; Connect's peers are reported on the channel.
func embeddedBroker(t *testing.T) (*broker.Broker, chan broker.Peer) {
	t.Helper()
	peers := make(chan broker.Peer, 16)
	b := broker.New(broker.Config{Authenticate: func(req *broker.ConnectRequest) (smq.ConnackCode, string) {
		peers <- req.Peer
		return smq.CodeAccepted, ""
	}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return b, peers
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	b, peers := embeddedBroker(t)
	e := upstream.Embedded{Broker: b}
	if e.Name() != "embedded" {
		t.Errorf("Name %q", e.Name())
	}
	h := hostile.Clone()
	h.Set("X-SMQ-Client-CN", "device-1")
	sub := dial(t, e, upstream.Request{ClientIP: "203.0.113.9", Header: h})
	if init := readInit(t, sub); init.IP != "203.0.113.9" {
		t.Errorf("Init IP %q, want the client's", init.IP)
	}
	write(t, sub, smq.Connect{Version: 1, UID: "upstream-sub"})
	if ack, ok := read(t, sub).(smq.Connack); !ok || ack.Code != smq.CodeAccepted {
		t.Fatalf("Connack %+v", ack)
	}
	peer := <-peers
	if peer.IP != "203.0.113.9" || peer.RemoteAddr != "" ||
		peer.Header.Get("X-Forwarded-For") != "203.0.113.9" || len(peer.Header["X-Forwarded-For"]) != 1 ||
		peer.Header.Get("X-Smq-Client-Cn") != "device-1" || peer.Header.Get("Simplemq") != "" ||
		peer.Header.Get("Host") != "" {
		t.Errorf("broker saw %+v", peer)
	}

	// A second session publishes to the first; messages as large as a raw
	// frame allows go through both ways.
	pub := dial(t, e, upstream.Request{ClientIP: "203.0.113.10"})
	etid := login(t, pub, "upstream-pub")
	<-peers
	write(t, sub, smq.Subscribe{Topic: "news"})
	ack, ok := read(t, sub).(smq.Suback)
	if !ok || ack.Status != smq.AckOK {
		t.Fatalf("Suback %+v", ack)
	}
	write(t, pub, smq.Create{Topic: "news"})
	if cr, ok := read(t, pub).(smq.Createack); !ok || cr.ID != ack.ID {
		t.Fatalf("Createack %+v, want TID %d", cr, ack.ID)
	}
	big := bytes.Repeat([]byte("0123456789"), (smq.MaxRawMessage-13)/10)
	for i := range 5 {
		write(t, pub, &smq.Publish{TID: ack.ID, PTID: etid, Payload: big[i:]})
	}
	for i := range 5 {
		p, ok := read(t, sub).(*smq.Publish)
		if !ok || !bytes.Equal(p.Payload, big[i:]) {
			t.Fatalf("message %d: got %T, want the %d-byte publish", i, p, len(big[i:]))
		}
	}

	// Closing our side ends the broker's session.
	sub.Close()
	pub.Close()
	for start := time.Now(); b.Stats().Sessions != 0; time.Sleep(time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d sessions left after the conns were closed", b.Stats().Sessions)
		}
	}
}

func TestEmbeddedFails(t *testing.T) {
	t.Parallel()
	t.Run("shut down", func(t *testing.T) {
		b, _ := embeddedBroker(t)
		if err := b.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		_, err := upstream.Embedded{Broker: b}.Dial(context.Background(), upstream.Request{ClientIP: "192.0.2.1"})
		var e *upstream.Error
		if !errors.As(err, &e) || e.Aborted {
			t.Fatalf("%v", err)
		}
		if r := upstream.Reason(err); !strings.HasPrefix(r, "upstream embedded unreachable: dial memory embedded: ") {
			t.Errorf("reason %q", r)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		b, _ := embeddedBroker(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := upstream.Embedded{Broker: b}.Dial(ctx, upstream.Request{ClientIP: "192.0.2.1"})
		var e *upstream.Error
		if !errors.As(err, &e) || !e.Aborted || !errors.Is(err, context.Canceled) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("no broker", func(t *testing.T) {
		if _, err := (upstream.Embedded{}).Dial(context.Background(), upstream.Request{}); err == nil {
			t.Fatal("no error")
		}
	})
}
