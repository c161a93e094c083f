package gateway_test

import (
	"crypto/tls"
	"testing"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// TestTicketsOutliveReload: a client resumes its TLS session after a
// reload (every device did a full handshake after each SIGHUP: a new
// configuration had new ticket keys); and gateways given the same keys
// resume each other's sessions, as behind one load balancer.
func TestTicketsOutliveReload(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	cfg := func(keys [][32]byte) gateway.Config {
		return gateway.Config{SessionTicketKeys: keys, Listeners: []gateway.Listener{{Name: "edge", Listener: smqtest.Listen(t),
			Certs: (*certs.Static)(&server.TLS), Routes: []*gateway.Route{{Path: "/", Upstream: &countingUpstream{}}}}}}
	}
	gw := runGateway(t, cfg(nil))
	addr := gw.Addr("edge").String()
	client := &tls.Config{RootCAs: ca.Pool, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	if smqtest.Resumes(t, addr, client) {
		t.Fatal("the first connection resumed")
	}
	if !smqtest.Resumes(t, addr, client) {
		t.Fatal("no resumption without a reload")
	}
	reloaded := cfg(nil)
	reloaded.Listeners[0].Listener = nil
	reloaded.Listeners[0].Addr = addr
	if _, err := gw.Apply(reloaded); err != nil {
		t.Fatal(err)
	}
	if !smqtest.Resumes(t, addr, client) {
		t.Error("no resumption after a reload")
	}

	// Shared keys: a ticket of one gateway opens on the other.
	keys := [][32]byte{{1, 2, 3}, {4, 5, 6}}
	one, two := runGateway(t, cfg(keys)), runGateway(t, cfg(keys[1:]))
	shared := &tls.Config{RootCAs: ca.Pool, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	smqtest.Resumes(t, one.Addr("edge").String(), shared)
	// two seals with keys[1] and opens with it only: one's ticket
	// (sealed with keys[0]) does not open there...
	if smqtest.Resumes(t, two.Addr("edge").String(), shared) {
		t.Error("a ticket sealed with a key the second gateway lacks was opened")
	}
	// ...but two's ticket opens on one, which has keys[1] too.
	if !smqtest.Resumes(t, one.Addr("edge").String(), shared) {
		t.Error("a ticket sealed with a shared key did not open on the other gateway")
	}
}
