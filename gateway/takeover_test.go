package gateway_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// TestNoSessionTakeover: a device connects with its certificate on
// /require with UID device-1; a client without a certificate on /open, and
// one with another certificate on /require, both to the same broker, send
// the same UID. Each gets a session of its own: the device keeps its ETID,
// gets no Disconnect "reconnect", and receives what is sent to its ETID.
// The device itself reconnecting takes its session over as before (its
// old ETID, Disconnect "reconnect" to the old connection). For a raw LAN
// broker and the embedded one alike.
func TestNoSessionTakeover(t *testing.T) {
	t.Parallel()
	emb := broker.New(broker.Config{})
	t.Cleanup(func() { emb.Shutdown(context.Background()) })
	embRequire := &gateway.Route{Path: "/embedded/require", Upstream: &upstream.Embedded{Broker: emb}}
	r := newRig(t, rigOptions{routes: []*gateway.Route{
		{Path: "/embedded/open", Upstream: &upstream.Embedded{Broker: emb}},
		embRequire,
	}})
	p, err := tlsterm.NewPolicy(tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: r.clientCA.Pool})
	if err != nil {
		t.Fatal(err)
	}
	embRequire.SetPolicy(p)
	device := r.clientCA.Client(t, "device-1")
	other := r.clientCA.Client(t, "device-2")
	for _, up := range []struct{ name, open, require string }{
		{"lan", "/open", "/require"},
		{"embedded", "/embedded/open", "/embedded/require"},
	} {
		t.Run(up.name, func(t *testing.T) {
			connect := func(path string, leaf *tls.Certificate) *smqtest.Conn {
				t.Helper()
				c := r.rawTLS(t, "", leaf)
				c.WriteBytes(r.bootstrap(path))
				c.ReadInit()
				return c
			}
			dev := connect(up.require, &device.TLS)
			etid := dev.Login("device-1")

			// Attackers: no certificate on the open route, and another
			// device's certificate on the same route.
			for _, a := range []struct {
				path string
				cert *tls.Certificate
			}{{up.open, nil}, {up.require, &other.TLS}} {
				att := connect(a.path, a.cert)
				if got := att.Login("device-1"); got == etid {
					t.Fatalf("a client on %s with the device's UID got the device's ETID %#x", a.path, got)
				}
				att.Barrier()
				// The device is undisturbed: still connected, and what is
				// sent to its ETID reaches it, not the attacker.
				dev.Barrier()
				sender := connect(up.open, nil)
				sender.Login("sender-" + up.name)
				msg := sender.Publish(etid, 0, []byte("command for device-1"))
				dev.Expect(msg)
				att.ExpectNothing()
			}

			// The device reconnecting with its certificate gets its session back.
			again := connect(up.require, &device.TLS)
			if got := again.Login("device-1"); got != etid {
				t.Errorf("the device reconnecting got ETID %#x, want its old %#x", got, etid)
			}
			dev.ExpectDisconnect("reconnect")
		})
	}
}

// TestUIDBounds: UIDs the broker would refuse (5 bytes or fewer) and UIDs
// too long to bear the identity's namespace get Connack 0x01 from the
// gateway, with the reason.
func TestUIDBounds(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	for _, tc := range []struct{ uid, reason string }{
		{"short", "uid must be longer than 5 bytes"},
		{strings.Repeat("u", gateway.MaxClientUID+1), "uid must be at most"},
	} {
		c := r.raw(t, "/open")
		c.Send(smq.Connect{Version: 1, UID: tc.uid})
		if ack := c.ExpectConnack(smq.CodeBadVersion); !strings.Contains(ack.Reason, tc.reason) {
			t.Errorf("UID of %d bytes: reason %q, want %q", len(tc.uid), ack.Reason, tc.reason)
		}
	}
	c := r.raw(t, "/open")
	c.Login(strings.Repeat("u", gateway.MaxClientUID)) // the longest that fits
}
