package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
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
	{CN: []string{"device-*"}, Publish: []string{"devices/{cn}/telemetry/#"}, Subscribe: []string{"devices/{cn}/commands"},
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
			dev.Send(smq.Create{Topic: "devices/device-7/commands"}) // its own: it may not forge them
			dev.ExpectAck(smq.TypeCreateack, smq.AckDenied, "devices/device-7/commands")
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
			// never sent; never a topic ID: one the session does not know
			// is dropped (as the broker drops a message to a client that
			// left), the session goes on.
			adm := connect(&admin.TLS, "admin-console")
			note := adm.Publish(dev.ETID, 0, []byte("maintenance at noon"))
			dev.Expect(note)
			adm.Publish(telemetry, 0, []byte("not a client"))
			adm.Barrier()
			op.Barrier() // subscribed to telemetry: nothing came

			// one_to_one "reply": an ID the device does not know — a topic
			// learned out of band, a client that never sent to it — is
			// dropped; its session goes on.
			other := op.Create("devices/device-8/commands")
			dev.Publish(other, 0, []byte("spoofed command"))
			dev2 := connect(&device.TLS, "device-7-second")
			dev2.Publish(op.ETID, 0, []byte("unsolicited"))
			dev.Barrier()
			dev2.Barrier()
			op.Barrier()
			// A topic it knows but may not publish to (its commands, which
			// it subscribes to): the session ends.
			dev.Publish(cmds, 0, []byte("forged command"))
			dev.ExpectDisconnect("access denied")
			op.ExpectMessage(smq.Change{ID: opCmds}) // the device that heard its commands left
			op.Barrier()
		})
	}

	m := scrape(t, r.gw)
	for _, route := range []string{"/lan/fleet", "/embedded/fleet"} {
		for op, want := range map[string]float64{"subscribe": 2, "create": 2, "createsub": 1, "observe": 1,
			"unobserve": 0, "unsubscribe": 1, "publish": 5} {
			if got := m.get(t, "smqgw_access_denied_total", "route", route, "op", op); got != want {
				t.Errorf("%s: denials of %s: %v, want %v", route, op, got, want)
			}
		}
	}
	// 24 denials: up to 10 lines a second are logged, the next line says
	// how many were not.
	recs := r.logs.records(t, "access denied")
	suppressed := 0.0
	for _, rec := range recs {
		if n, ok := rec["suppressed_before"].(float64); ok {
			suppressed += n
		}
	}
	if len(recs) < 10 || float64(len(recs))+suppressed > 24 {
		t.Errorf("%d access denied lines (%v reported suppressed), want 10 to 24", len(recs), suppressed)
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

// TestDeniedPublishFlushesWhatCameBefore: a granted Publish and a denied
// one in one write: the granted one still reaches the subscriber before
// the session ends (it was lost: the end dropped what was buffered).
func TestDeniedPublishFlushesWhatCameBefore(t *testing.T) {
	t.Parallel()
	policy, err := access.Compile([]access.Rule{{Anonymous: true, Publish: []string{"public/#"}, Subscribe: []string{"private/#"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{routes: []*gateway.Route{{Path: "/public", Access: policy, AccessName: "public"}}})
	sub := r.raw(t, "/open")
	sub.Login("public-reader")
	news := sub.Subscribe("public/news")
	c := r.raw(t, "/public")
	c.Login("anonymous-writer")
	c.Create("public/news")
	private := c.Subscribe("private/inbox") // known, but not to publish to
	granted := smqtest.PublishMsg(news, c.ETID, 0, []byte("granted"))
	first, _ := smq.AppendRaw(nil, granted)
	second, _ := smq.AppendRaw(nil, smqtest.PublishMsg(private, c.ETID, 0, []byte("denied")))
	c.WriteBytes(append(first, second...))
	c.ExpectDisconnect("access denied")
	sub.Expect(granted)
}

// TestNotConnectFirst: a message other than Connect after Init gets
// Connack 0x01, as from the reference broker (it crashed the gateway:
// the UID binding took it for a Connect); the gateway serves on.
func TestNotConnectFirst(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	for _, m := range []smq.Message{smq.Ping{}, smq.Subscribe{Topic: "x"}, smq.Disconnect{}} {
		c := r.raw(t, "/open")
		c.Send(m)
		want := "the first message must be Connect, not " + m.Type().String()
		if ack := c.ExpectConnack(smq.CodeBadVersion); ack.Reason != want {
			t.Errorf("Connack 0x01 %q, want %q", ack.Reason, want)
		}
	}
	c := r.raw(t, "/open")
	c.Login("still-serving")
}

// TestNameTooLongForAnAck: a Subscribe, Create or Createsub whose name
// its ack could not echo in one raw frame ends the session as too big,
// before it reaches the broker (the reference broker's ack would break
// its stream; a denial could not be answered).
func TestNameTooLongForAnAck(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	for _, m := range []smq.Message{smq.Subscribe{Topic: strings.Repeat("n", smq.MaxName+1)},
		smq.Createsub{Topic: strings.Repeat("n", smq.MaxName+1)}} {
		c := r.raw(t, "/open")
		c.Login("long-names")
		c.Send(m)
		c.ExpectDisconnect("message too big")
	}
	c := r.raw(t, "/open")
	c.Login("longest-name")
	// The longest that fits goes to the broker, which answers it (its own
	// max_topic_name may deny it).
	c.Send(smq.Create{Topic: strings.Repeat("n", smq.MaxName)})
	if ack := c.ExpectType(smq.TypeCreateack); len(ack) != 6+smq.MaxName {
		t.Fatalf("Createack of %d bytes", len(ack))
	}
}
