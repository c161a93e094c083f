package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// fleetRules is the README's worked example: operators (OU=operators)
// command every device and watch everything below devices/; a device
// (CN=device-N) publishes below its own name and hears only its own
// commands; clients without a certificate read public/.
var fleetRules = []access.Rule{
	{OU: []string{"operators"}, Publish: []string{"devices/+/commands"}, Subscribe: []string{"devices/#"},
		Observe: []string{"devices/#"}, OneToOne: access.Reply},
	{CN: []string{"device-*"}, Publish: []string{"devices/{cn}/#"}, Subscribe: []string{"devices/{cn}/commands"},
		SubTopics: []string{"temperature"}, OneToOne: access.Reply},
	{Anonymous: true, Subscribe: []string{"public/#"}},
}

// adminRule lets CN=admin send one to one to any client.
var adminRule = access.Rule{CN: []string{"admin"}, OneToOne: access.Any}

// TestTopicPermissions runs the worked example through the gateway to a
// raw LAN broker and to the embedded one: granted requests go through, a
// denied Subscribe or Create gets status 1 and ID 0 from the gateway and
// the client carries on, a denied Observe gets Change(id, 0), a Publish to
// a topic or client not granted ends the session with Disconnect "access
// denied"; one-to-one replies reach those that sent. Every denial is
// counted by route and operation and logged.
func TestTopicPermissions(t *testing.T) {
	t.Parallel()
	policy, err := access.Compile(append(fleetRules, adminRule))
	if err != nil {
		t.Fatal(err)
	}
	emb := broker.New(broker.Config{})
	t.Cleanup(func() { emb.Shutdown(context.Background()) })
	lanRoute := &gateway.Route{Path: "/lan/fleet", Access: policy, AccessName: "fleet"}
	embRoute := &gateway.Route{Path: "/embedded/fleet", Upstream: &upstream.Embedded{Broker: emb},
		Access: policy, AccessName: "fleet"}
	r := newRig(t, rigOptions{routes: []*gateway.Route{lanRoute, embRoute}})
	optional, err := tlsterm.NewPolicy(tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: r.clientCA.Pool})
	if err != nil {
		t.Fatal(err)
	}
	lanRoute.SetPolicy(optional)
	embRoute.SetPolicy(optional)

	operator := r.clientCA.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"operators"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	device := r.clientCA.Client(t, "device-7")
	admin := r.clientCA.Client(t, "admin")
	for _, path := range []string{"/lan/fleet", "/embedded/fleet"} {
		t.Run(path, func(t *testing.T) {
			connect := func(leaf *tls.Certificate, uid string) *smqtest.Conn {
				t.Helper()
				c := r.rawTLS(t, "", leaf)
				c.WriteBytes(r.bootstrap(path))
				c.ReadInit()
				c.Login(uid)
				return c
			}
			op := connect(&operator.TLS, "operator-console")
			dev := connect(&device.TLS, "device-7-main")
			anon := connect(nil, "anonymous-1")

			// Granted: the device hears its commands, the operator its
			// telemetry (SMQ subscribes to names, not patterns).
			cmds := dev.Subscribe("devices/device-7/commands")
			op.Subscribe("devices/device-7/telemetry")
			// Denied: another device's commands. The device carries on.
			dev.Send(smq.Subscribe{Topic: "devices/device-8/commands"})
			dev.ExpectAck(smq.TypeSuback, smq.AckDenied, "devices/device-8/commands")
			dev.Send(smq.Create{Topic: "devices/device-8/telemetry"})
			dev.ExpectAck(smq.TypeCreateack, smq.AckDenied, "devices/device-8/telemetry")
			dev.Send(smq.Createsub{Topic: "humidity"})
			dev.ExpectAck(smq.TypeCreatesuback, smq.AckDenied, "humidity")
			temp := dev.Createsub("temperature")
			telemetry := dev.Create("devices/device-7/telemetry")
			reading := dev.Publish(telemetry, temp, []byte("21.5"))
			op.Expect(reading)

			// The operator commands the device; the device replies one to
			// one to the operator, who sent to it.
			opCmds := op.Create("devices/device-7/commands")
			if opCmds != cmds {
				t.Fatalf("Create gave %#x, Subscribe %#x", opCmds, cmds)
			}
			command := op.Publish(opCmds, 0, []byte("reboot"))
			dev.Expect(command)
			reply := dev.Publish(op.ETID, 0, []byte("rebooting"))
			op.Expect(reply)

			// Observe: the operator may watch devices/, the device may not
			// observe its telemetry topic (it may publish there only): a
			// Change(id, 0) as for an unknown ID.
			op.Send(smq.Observe{ID: opCmds})
			op.ExpectMessage(smq.Change{ID: opCmds, Count: 1})
			dev.Send(smq.Observe{ID: telemetry})
			dev.ExpectMessage(smq.Change{ID: telemetry})
			// Unsubscribe of an ID not granted: dropped, the session goes on.
			dev.Send(smq.Unsubscribe{TID: telemetry})
			dev.Barrier()

			// Anonymous: public/ only, no one-to-one.
			anon.Subscribe("public/news")
			anon.Send(smq.Subscribe{Topic: "devices/#"})
			anon.ExpectAck(smq.TypeSuback, smq.AckDenied, "devices/#")
			anon.Publish(dev.ETID, 0, []byte("hello device"))
			anon.ExpectDisconnect("access denied")
			dev.Barrier() // nothing reached the device

			// one_to_one "any": a client the gateway knows, even one that
			// never sent; never a topic ID.
			adm := connect(&admin.TLS, "admin-console")
			note := adm.Publish(dev.ETID, 0, []byte("maintenance at noon"))
			dev.Expect(note)
			adm.Publish(telemetry, 0, []byte("not a client"))
			adm.ExpectDisconnect("access denied")

			// A device publishing to a topic ID it was not granted (the
			// operator's, learned out of band): session ended; the other
			// sessions go on.
			other := op.Create("devices/device-8/commands")
			dev.Publish(other, 0, []byte("spoofed command"))
			dev.ExpectDisconnect("access denied")
			// A device replying to a client that never sent to it.
			dev2 := connect(&device.TLS, "device-7-second")
			dev2.Publish(op.ETID, 0, []byte("unsolicited"))
			dev2.ExpectDisconnect("access denied")
			op.ExpectMessage(smq.Change{ID: opCmds}) // the device that heard its commands left
			op.Barrier()
		})
	}

	m := scrape(t, r.gw)
	for _, route := range []string{"/lan/fleet", "/embedded/fleet"} {
		for op, want := range map[string]float64{"subscribe": 2, "create": 1, "createsub": 1, "observe": 1,
			"unobserve": 0, "unsubscribe": 1, "publish": 4} {
			if got := m.get(t, "smqgw_access_denied_total", "route", route, "op", op); got != want {
				t.Errorf("%s: denials of %s: %v, want %v", route, op, got, want)
			}
		}
	}
	// 20 denials: up to 10 lines a second are logged, the next line says
	// how many were not.
	recs := r.logs.records(t, "access denied")
	suppressed := 0.0
	for _, rec := range recs {
		if n, ok := rec["suppressed_before"].(float64); ok {
			suppressed += n
		}
	}
	if len(recs) < 10 || float64(len(recs))+suppressed > 20 {
		t.Errorf("%d access denied lines (%v reported suppressed), want 10 to 20", len(recs), suppressed)
	}
	for _, rec := range recs {
		if rec["permissions"] != "fleet" || rec["op"] == nil || rec["why"] == nil || rec["identity"] == nil {
			t.Errorf("access denied line lacks fields: %v", rec)
		}
	}
}

// TestPermissionsWebSocketAndPubFrag: a WebSocket client (as smq.js) gets
// status 1 for a denied Subscribe and carries on; a denied Publish closes
// it with Disconnect "access denied" and close code 1008. A raw client's
// PubFrag is judged by its last fragment.
func TestPermissionsWebSocketAndPubFrag(t *testing.T) {
	t.Parallel()
	policy, err := access.Compile(fleetRules)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/fleet", Access: policy, AccessName: "fleet"}}})

	ws := r.wss(t, "", "/fleet", nil)
	wsLogin(t, ws, "browser-anonymous")
	wsSend(t, ws, smq.Subscribe{Topic: "devices/device-7/commands"})
	if got := wsRead(t, ws); got != (smq.Suback{Status: smq.AckDenied, Topic: "devices/device-7/commands"}) {
		t.Fatalf("denied Subscribe: got %#v", got)
	}
	wsSend(t, ws, smq.Subscribe{Topic: "public/news"})
	ack, ok := wsRead(t, ws).(smq.Suback)
	if !ok || ack.Status != smq.AckOK || ack.ID == 0 {
		t.Fatalf("granted Subscribe after a denied one: got %#v", ack)
	}
	wsSend(t, ws, &smq.Publish{TID: ack.ID, Payload: []byte("x")})
	if got := wsRead(t, ws); got != (smq.Disconnect{Reason: "access denied"}) {
		t.Fatalf("denied Publish: got %#v", got)
	}
	if ce := wsClose(t, ws); ce.Code != 1008 {
		t.Errorf("close code %d, want 1008", ce.Code)
	}

	// PubFrag: the fragments before the last (TID 0) pass; the last one,
	// to a topic not granted, ends the session before it reaches the
	// broker: the subscriber gets nothing.
	sub := r.raw(t, "/open")
	sub.Login("subscriber-1")
	tid := sub.Subscribe("public/news")
	c := r.raw(t, "/fleet")
	c.Login("anonymous-frag")
	c.SendMsg(smqtest.PubFragMsg(0, c.ETID, 0, []byte("part one, ")))
	c.SendMsg(smqtest.PubFragMsg(tid, c.ETID, 0, []byte("part two")))
	c.ExpectDisconnect("access denied")
	sub.ExpectNothing()
}
