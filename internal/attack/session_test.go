package attack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/smq"
)

// Attacks by sessions: what a client that got in may send.

// uids hands out unique UIDs.
var uids atomic.Int64

func uid(kind string) string { return fmt.Sprintf("%s-%06d", kind, uids.Add(1)) }

// pinger is one ping flooder: it logs in (WebSocket or raw SMQ over TLS),
// writes pings (WebSocket ping frames, or SMQ Ping messages) at rate a
// second, in batches every 10 ms, and goes on after the gateway ends the
// session until the connection closes; it notes how the gateway ended the
// session ("end:close 1008") and after how many pings, and starts over.
func (a *arena) pinger(local string, ws bool, rate int) {
	frame := wsFrame(0x80|opPing, nil)
	if !ws {
		frame, _ = smq.AppendRawMessage(nil, smq.Ping{})
	}
	per := max(1, rate/100)
	batch := bytes.Repeat(frame, per)
	for a.ctx.Err() == nil {
		p, _, err := a.enter(local, ws, "pinger")
		if err != nil {
			if !a.retry(p, true) {
				return
			}
			continue
		}
		a.engage()
		a.inc("sessions")
		ended := make(chan string, 1)
		a.Go(func() { ended <- p.ending(waitLong) })
		tick := time.NewTicker(10 * time.Millisecond)
		pings := int64(0)
		for a.ctx.Err() == nil && p.write(batch) == nil {
			pings += int64(per)
			select {
			case <-a.ctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
		a.drop(p.Conn)
		how := <-ended
		a.add("pings", pings)
		if a.ctx.Err() != nil && (how == "eof" || how == "reset") {
			continue // closed by the end of the attack, not by the gateway
		}
		a.inc("end:" + how)
	}
}

// TestAttackPingFlood: 2 addresses run 2 sessions each that send pings at
// twice message_rate (20,000 a second), WebSocket ping frames from one
// address and SMQ Ping messages from the other; each session goes on
// sending until the gateway closes it, then starts over.
func TestAttackPingFlood(t *testing.T) {
	runAttack(t, pingFlood(2, 2, 20000))
}

// TestAttackPingFloodManySessions is the ping flood under each session's
// message_rate: 25 sessions from each of 2 addresses, each sending 9,500
// pings a second. message_rate_per_ip bounds what one address may make the
// gateway do (before it, this took both CPUs and the well-behaved client's
// p99 to 76 ms idle, 249 ms with two busy loops).
func TestAttackPingFloodManySessions(t *testing.T) {
	runAttack(t, pingFlood(2, 25, 9500))
}

// pingFlood is the ping flood: per sessions from each of addrs addresses
// sending rate pings a second, WebSocket ping frames from even addresses,
// SMQ Ping from odd ones.
func pingFlood(addrs, per, rate int) attack {
	return attack{
		name: fmt.Sprintf("ping flood, %d addresses × %d sessions", addrs, per),
		what: fmt.Sprintf("%d sessions from each address sending %s pings a second (message_rate is 10,000 a session, message_rate_per_ip 20,000 an address): WebSocket ping frames from one, SMQ Ping from the other; each goes on until the connection closes, then starts over",
			per, num(rate)),
		run: func(a *arena) {
			for i := range addrs {
				for range per {
					a.Go(func() { a.pinger(attackerAddr(i), i%2 == 0, rate) })
				}
			}
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			limited := r.Delta["smqgw_sessions_closed_total{rate_limited}"]
			if limited == 0 {
				t.Errorf("no session ended rate_limited")
			}
			perSession := r.Delta["smqgw_limit_refusals_total{message_rate}"]
			perAddr := r.Delta["smqgw_limit_refusals_total{message_rate_per_ip}"]
			c := a.counters()
			return fmt.Sprintf("message_rate: %s sessions, message_rate_per_ip: %s sessions ended rate_limited (close 1008; raw: Disconnect \"rate limit exceeded\")", num(perSession), num(perAddr)),
				fmt.Sprintf("%s pings in %s sessions, which ended by %s", num(a.count("pings")), num(a.count("sessions")), endings(c))
		},
	}
}

// endings lists the "end:..." counters.
func endings(c map[string]int64) string {
	var parts []string
	for _, k := range sortedKeys(c) {
		if how, ok := strings.CutPrefix(k, "end:"); ok {
			parts = append(parts, fmt.Sprintf("%s ×%d", how, c[k]))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// oversize sends one of the oversize and fragmented cases on a fresh
// session and notes how it ended, "CASE:HOW".
func (a *arena) oversize(local, name string, send func(p *peer) error, ws bool) {
	for a.ctx.Err() == nil {
		p, etid, err := a.enter(local, ws, "big")
		if err != nil {
			if !a.retry(p, true) {
				return
			}
			continue
		}
		a.engage()
		ended := make(chan string, 1)
		a.Go(func() { ended <- p.ending(waitLong) })
		_ = etid
		_ = send(p)
		how := ""
		select {
		case how = <-ended:
		case <-a.ctx.Done():
			a.drop(p.Conn)
			<-ended
			return // the attack ended first: no outcome
		}
		a.drop(p.Conn)
		a.inc(name + ":" + how)
		if !a.pause(50 * time.Millisecond) {
			return
		}
	}
}

// TestAttackOversizeFragmented: WebSocket messages over 65,533 bytes — in
// one frame, announced by a frame header of 1 TiB, or in 1-byte fragments
// — and raw PubFrag fragments past 65,520 bytes, each on a fresh session,
// over and over, from an address each; meanwhile two more stream valid
// Publish messages cut into 1-byte WebSocket fragments, 4 MiB a second
// each (600,000 fragments a second).
func TestAttackOversizeFragmented(t *testing.T) {
	big := make([]byte, 70000)
	big[0] = byte(smq.TypePublish)
	fragments := func(total int) []byte {
		var b bytes.Buffer
		b.Write(wsFrame(opBinary, []byte{byte(smq.TypePublish)}))
		one := wsFrame(opContinuation, []byte{'x'})
		for range total - 2 {
			b.Write(one)
		}
		b.Write(wsFrame(0x80|opContinuation, []byte{'x'}))
		return b.Bytes()
	}
	overInFragments := fragments(smq.MaxRawMessage + 1)
	cases := []struct {
		name string
		ws   bool
		send func(p *peer) error
	}{
		{"70000-byte message", true, func(p *peer) error { return p.write(wsFrame(0x80|opBinary, big)) }},
		{"1 TiB frame header", true, func(p *peer) error {
			return p.write(append(wsHeader(0x80|opBinary, 1<<40), bytes.Repeat([]byte{8}, 100)...))
		}},
		{"65534 bytes in 1-byte fragments", true, func(p *peer) error { return p.write(overInFragments) }},
		{"PubFrag past 65520 bytes", false, func(p *peer) error {
			frag := smqRaw(&smq.PubFrag{TID: 0, PTID: 0, Payload: make([]byte, 40000)})
			return p.write(append(append(frag, frag...), frag...))
		}},
	}
	runAttack(t, attack{
		name: "oversize and fragmented messages, 6 addresses",
		what: "over and over, a fresh session each time: a 70,000-byte WebSocket message, a frame header announcing 1 TiB, 65,534 bytes in 1-byte fragments, raw PubFrag past 65,520 bytes; meanwhile 2 sessions stream 1,000-byte Publish messages in 1-byte fragments at 4 MiB/s",
		run: func(a *arena) {
			for i, c := range cases {
				a.Go(func() { a.oversize(attackerAddr(i), c.name, c.send, c.ws) })
			}
			// Two streams of valid messages in 1-byte fragments.
			for i := range 2 {
				a.Go(func() { a.fragmentStream(attackerAddr(len(cases)+i), 4<<20) })
			}
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			c := a.counters()
			for _, cs := range cases[:3] {
				for k, n := range c {
					if strings.HasPrefix(k, cs.name+":") && k != cs.name+":close 1009" {
						t.Errorf("%s: %d sessions ended %q, want close 1009", cs.name, n, strings.TrimPrefix(k, cs.name+":"))
					}
				}
				if c[cs.name+":close 1009"] == 0 {
					t.Errorf("%s: never answered close 1009", cs.name)
				}
			}
			var parts []string
			for _, k := range sortedKeys(c) {
				if strings.Contains(k, ":") {
					parts = append(parts, fmt.Sprintf("%s ×%d", k, c[k]))
				}
			}
			t.Logf("outcomes: %s", strings.Join(parts, ", "))
			return fmt.Sprintf("max_message_size: %s sessions closed 1009 (a header over the limit at once, fragments once past it); the broker ended %s PubFrag reassemblies; the fragment streams went on, their %s messages relayed",
					num(r.Delta["smqgw_sessions_closed_total{too_big}"]), num(r.Delta["smqgw_broker_protocol_errors_total"]), num(a.count("fragmented_messages"))),
				fmt.Sprintf("%s fragments streamed", num(a.count("fragments")))
		},
	})
}

// smqRaw is m as a raw frame.
func smqRaw(m smq.Message) []byte {
	b, err := smq.AppendRawMessage(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// fragmentStream logs in over WebSocket and sends 1,000-byte Publish
// messages (to a topic nobody subscribes to) cut into 1-byte fragments,
// rate bytes a second (7 bytes a fragment on the wire) in bursts every 10
// ms, until the attack ends; it starts over if the gateway ends the
// session.
func (a *arena) fragmentStream(local string, rate int) {
	for a.ctx.Err() == nil {
		p, etid, err := a.enter(local, true, "frag")
		if err != nil {
			if !a.retry(p, false) {
				return
			}
			continue
		}
		ended := make(chan string, 1)
		a.Go(func() { ended <- p.ending(waitLong) })
		msg := (&smq.Publish{TID: 12345, PTID: etid, Payload: make([]byte, 1000-13)}).Append(nil)
		var b bytes.Buffer
		b.Write(wsFrame(opBinary, msg[:1]))
		for _, c := range msg[1 : len(msg)-1] {
			b.Write(wsFrame(opContinuation, []byte{c}))
		}
		b.Write(wsFrame(0x80|opContinuation, msg[len(msg)-1:]))
		one := b.Bytes()
		n := max(1, rate/100/len(one)) // messages a burst
		burst := bytes.Repeat(one, n)
		tick := time.NewTicker(10 * time.Millisecond)
		for a.ctx.Err() == nil && p.write(burst) == nil {
			a.add("fragments", int64(n*len(msg)))
			a.add("fragmented_messages", int64(n))
			select {
			case <-a.ctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
		a.drop(p.Conn)
		how := <-ended
		if a.ctx.Err() != nil && (how == "eof" || how == "reset") {
			how = "open at the end"
		}
		a.inc("1-byte fragment stream:" + how)
	}
}

// malformed is one malformed-input case: what to send on which transport,
// from the bootstrap on.
type malformed struct {
	name  string
	conn  string // "tcp": raw bytes to the TLS listener; "http": TLS, nothing sent; "raw", "ws": a session (Init read)
	login bool   // log in first
	send  func(p *peer) []byte
}

func malformedCases() []malformed {
	// The same bytes every run: a first byte that is no TLS record type,
	// and no CR or LF.
	garbage := make([]byte, 64)
	rng := mrand.New(mrand.NewPCG(16, 16))
	for i := range garbage {
		garbage[i] = byte(0x80 + rng.IntN(0x80))
	}
	return []malformed{
		{"bytes that are no ClientHello", "tcp", false, func(*peer) []byte { return garbage }},
		{"plain HTTP on the TLS port", "tcp", false, func(*peer) []byte { return []byte("GET /smq HTTP/1.1\r\nHost: x\r\nSimpleMQ: 1\r\n\r\n") }},
		{"bytes that are no request", "http", false, func(*peer) []byte { return append(append([]byte(nil), garbage...), "\r\n\r\n"...) }},
		{"a 20 KB request header", "http", false, func(p *peer) []byte {
			return []byte("GET /smq HTTP/1.1\r\nHost: x\r\nSimpleMQ: 1\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n")
		}},
		{"raw frame of length 0", "raw", false, func(*peer) []byte { return []byte{0, 0} }},
		{"raw frame of length 2", "raw", false, func(*peer) []byte { return []byte{0, 2, 0, 2} }},
		{"Publish before Connect", "raw", false, func(*peer) []byte { return smqRaw(&smq.Publish{TID: 1, PTID: 1}) }},
		{"Connect with a 3-byte UID", "raw", false, func(*peer) []byte { return smqRaw(smq.Connect{Version: 1, UID: "abc"}) }},
		{"Connect version 9", "raw", false, func(*peer) []byte {
			b, _ := smq.AppendRaw(nil, append([]byte{byte(smq.TypeConnect), 9, 12}, "version-nine\x00"...))
			return b
		}},
		{"unknown message type 99", "raw", true, func(*peer) []byte { return []byte{0, 4, 99, 0} }},
		{"short Publish", "raw", true, func(*peer) []byte { return []byte{0, 5, 8, 0, 0} }},
		{"Publish with another's ptid", "raw", true, func(*peer) []byte { return smqRaw(&smq.Publish{TID: 1, PTID: 7}) }},
		{"second Connect", "raw", true, func(*peer) []byte { return smqRaw(smq.Connect{Version: 1, UID: "second-connect"}) }},
		{"frames of unknown types", "raw", true, func(*peer) []byte {
			var b []byte
			for typ := byte(20); typ < 30; typ++ {
				b = append(b, 0, 4, typ, 'x')
			}
			return b
		}},
		{"PubFrag over WebSocket", "ws", true, func(*peer) []byte {
			return wsFrame(0x80|opBinary, (&smq.PubFrag{TID: 1}).Append(nil))
		}},
		{"WebSocket opcode 3", "ws", true, func(*peer) []byte { return wsFrame(0x80|3, []byte{1}) }},
		{"empty WebSocket message", "ws", true, func(*peer) []byte { return wsFrame(0x80|opBinary, nil) }},
		{"unmasked WebSocket frame", "ws", true, func(*peer) []byte { return []byte{0x80 | opBinary, 1, 12} }},
		{"WebSocket text that is no SMQ message", "ws", true, func(*peer) []byte { return wsFrame(0x80|opText, []byte("hello")) }},
	}
}

// sendMalformed runs case c once from local and notes how the gateway
// answered, "CASE:HOW".
func (a *arena) sendMalformed(local string, c malformed) {
	var p *peer
	var err error
	switch c.conn {
	case "tcp":
		p, err = a.dialTCP(local, "tls")
	case "http":
		p, err = a.dialTLS(local, "tls", nil)
	case "raw":
		p, err = a.rawSession(local, "tls", nil)
	case "ws":
		p, err = a.wsSession(local, "tls")
	}
	if err == nil && c.login {
		_, err = p.login(uid("bad"))
	}
	if err != nil {
		if p != nil {
			a.drop(p.Conn)
		}
		if a.ctx.Err() == nil {
			a.inc("refused")
		}
		return
	}
	defer a.drop(p.Conn)
	how := "write failed"
	if err := p.write(c.send(p)); err == nil {
		a.engage()
		if c.conn == "tcp" || c.conn == "http" {
			how = p.httpEnding(waitShort)
		} else {
			how = p.ending(waitShort)
		}
	}
	if a.ctx.Err() == nil { // else the end of the attack closed it
		a.inc(c.name + ":" + how)
	}
}

// httpEnding reads what the gateway answers to a connection that is not
// SMQ yet: "HTTP 400 then eof", "eof", "open".
func (p *peer) httpEnding(d time.Duration) string {
	_ = p.SetReadDeadline(time.Now().Add(d))
	head, err := p.br.Peek(12)
	status := ""
	if err == nil && bytes.HasPrefix(head, []byte("HTTP/1.")) {
		status = "HTTP " + string(head[9:12]) + " then "
	} else if len(head) > 0 && head[0] == 0x15 {
		status = "TLS alert then "
	}
	buf := make([]byte, 4096)
	for {
		_, err := p.br.Read(buf)
		switch {
		case err == nil:
			continue
		case isTimeout(err):
			return status + "open"
		default:
			return status + "eof"
		}
	}
}

// TestAttackMalformed: 8 addresses send malformed input of 19 kinds, from
// random bytes for a ClientHello to frames the WebSocket framing forbids,
// each on a fresh connection, over and over.
func TestAttackMalformed(t *testing.T) {
	cases := malformedCases()
	runAttack(t, attack{
		name: "malformed input, 8 addresses",
		what: "19 kinds in turn, each on a fresh connection: bytes that are no ClientHello or no request, plain HTTP on the TLS port, a 20 KB header, raw frames of length 0 and 2, Publish before Connect, bad UIDs and versions, unknown types, short Publish, another's ptid, a second Connect; over WebSocket PubFrag, opcode 3, empty, unmasked and text frames",
		run: func(a *arena) {
			var next atomic.Int64
			for i := range 8 {
				a.Go(func() {
					for a.ctx.Err() == nil {
						a.sendMalformed(attackerAddr(i), cases[int(next.Add(1))%len(cases)])
						if !a.pause(10 * time.Millisecond) {
							return
						}
					}
				})
			}
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			c := a.counters()
			answers := map[string][]string{}
			total := int64(0)
			for _, k := range sortedKeys(c) {
				name, how, ok := strings.Cut(k, ":")
				if !ok {
					continue
				}
				total += c[k]
				answers[name] = append(answers[name], how)
				if strings.HasSuffix(how, "open") || how == "write failed" {
					t.Errorf("%s: %d connections %s", name, c[k], how)
				}
			}
			for _, cs := range cases {
				if len(answers[cs.name]) == 0 {
					t.Errorf("%s: never tried", cs.name)
				}
			}
			var parts []string
			for _, cs := range cases {
				parts = append(parts, fmt.Sprintf("%s: %s", cs.name, strings.Join(answers[cs.name], " / ")))
			}
			t.Logf("answers: %s", strings.Join(parts, "; "))
			return fmt.Sprintf("each of %s connections answered and closed by the gateway (HTTP 400 or 431, a failed handshake, Connack 0x01, Disconnect \"protocol error\" or \"corrupt frame\", close 1002), none by an internal error", num(total)),
				fmt.Sprintf("%s connections", num(total))
		},
	})
}

// TestAttackSessionTakeover: a device with a client certificate holds its
// session (UID device-0001) on the listener with client_auth = "optional"
// and receives a message every 5 ms; attackers log in with its UID
// without a certificate (on that listener and on the one without client
// certificates) and with a certificate of the same CA and the same CN but
// another key, over and over.
func TestAttackSessionTakeover(t *testing.T) {
	var (
		device   *client.Client
		sender   *client.Client
		etid     uint32
		received atomic.Int64
		sent     atomic.Int64
		lost     atomic.Int64
		states   atomic.Int64
	)
	const victimUID = "device-0001"
	runAttack(t, attack{
		name: "session takeover, 3 identities",
		what: "a device with a client certificate holds UID device-0001 and receives a message every 5 ms; attackers log in with its UID, anonymously (on both TLS listeners) and with another certificate of the same CA and CN, over and over",
		run: func(a *arena) {
			t := a.t
			gw := a.gw
			leaf := gw.ca.Client(t, "device-1")
			opts := gw.clientOptions("127.0.0.211")
			opts.Certificate = &leaf.TLS
			opts.UID = victimUID
			opts.OnState = func(sc client.StateChange) {
				if sc.State == client.Reconnecting || sc.State == client.Closed && !errors.Is(sc.Err, client.ErrClosed) {
					states.Add(1)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitShort)
			defer cancel()
			var err error
			if device, err = client.Dial(ctx, "https://"+gw.addrs["mtls"]+"/smq", opts); err != nil {
				t.Fatalf("device: %v", err)
			}
			a.atEnd(func() {
				// What the sender sent arrives before the device leaves.
				pollUntil(waitShort, func() bool { return received.Load() >= sent.Load() })
				device.Close()
			})
			etid = device.ETID()
			var next int64
			if _, err := device.Subscribe(ctx, "device-1/inbox", func(m *client.Message) {
				n := int64(binary.BigEndian.Uint64(m.Payload))
				if n != next {
					lost.Add(1)
				}
				next = n + 1
				received.Add(1)
			}); err != nil {
				t.Fatalf("device: %v", err)
			}
			if sender, err = client.Dial(ctx, "https://"+gw.addrs["tls"]+"/smq", gw.clientOptions("127.0.0.211")); err != nil {
				t.Fatalf("sender: %v", err)
			}
			a.atEnd(func() { sender.Close() })
			a.Go(func() {
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				var p [8]byte
				for {
					select {
					case <-a.ctx.Done():
						return
					case <-tick.C:
					}
					binary.BigEndian.PutUint64(p[:], uint64(sent.Load()))
					wctx, cancel := context.WithTimeout(context.Background(), waitShort)
					err := sender.Publish(wctx, "device-1/inbox", p[:])
					cancel()
					if err != nil {
						a.inc("sender failed")
						return
					}
					sent.Add(1)
				}
			})
			intruder := gw.ca.Client(t, "device-1")
			who := []struct {
				name, listener string
				cert           bool
			}{
				{"no certificate, mtls listener", "mtls", false},
				{"no certificate, tls listener", "tls", false},
				{"another certificate with CN device-1", "mtls", true},
			}
			for i, w := range who {
				a.Go(func() {
					for a.ctx.Err() == nil {
						cert := &intruder.TLS
						if !w.cert {
							cert = nil
						}
						p, err := a.rawSession(attackerAddr(i), w.listener, cert)
						var got uint32
						if err == nil {
							got, err = p.login(victimUID)
						}
						switch {
						case err != nil && a.ctx.Err() == nil:
							a.inc("refused")
						case err == nil:
							a.engage()
							a.inc("logged in")
							if got == etid {
								a.inc("took the device's ETID: " + w.name)
							}
							// Try to drain the device's messages meanwhile.
							_, _ = p.read(20 * time.Millisecond)
						}
						if p != nil {
							a.drop(p.Conn)
						}
						if !a.pause(25 * time.Millisecond) {
							return
						}
					}
				})
			}
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			c := a.counters()
			for k, n := range c {
				if strings.HasPrefix(k, "took the device's ETID") {
					t.Errorf("%s: %d times", k, n)
				}
			}
			if c["logged in"] == 0 {
				t.Errorf("no attacker logged in")
			}
			if c["sender failed"] > 0 {
				t.Errorf("the sender's session failed")
			}
			if n := states.Load(); n > 0 {
				t.Errorf("the device lost its session %d times", n)
			}
			if device.ETID() != etid {
				t.Errorf("the device's ETID changed: %#x, was %#x", device.ETID(), etid)
			}
			if got, want := received.Load(), sent.Load(); got != want || lost.Load() > 0 {
				t.Errorf("the device received %d of %d messages (%d gaps)", got, want, lost.Load())
			}
			return fmt.Sprintf("the UID is bound to the identity: %s logins with the device's UID, none took its session or ETID; the device received %s of %s messages",
					num(c["logged in"]), num(received.Load()), num(sent.Load())),
				fmt.Sprintf("%s logins", num(c["logged in"]))
		},
	})
}

// TestAttackNeverReading: 20 subscribers from one address, with 4 KiB
// receive buffers, subscribe to a topic and never read; another address
// publishes 16 KiB messages to it, 2,000 a second (32 MB/s). Each
// subscriber starts over after a second.
func TestAttackNeverReading(t *testing.T) {
	runAttack(t, attack{
		name: "never-reading subscribers, 2 addresses",
		what: "20 subscribers from one address with 4 KiB receive buffers that never read, each replaced after 1 s; another address publishes 2,000 messages of 16 KiB a second to their topic",
		run: func(a *arena) {
			a.rcvbuf = 4 << 10
			for range 20 {
				a.Go(func() { a.neverReader(attackerAddr(0)) })
			}
			a.Go(func() { a.floodPublisher(attackerAddr(1), 16<<10, 2000) })
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			slow := r.Delta["smqgw_broker_slow_consumer_disconnects_total{queue}"] + r.Delta["smqgw_broker_slow_consumer_disconnects_total{max_queued_bytes}"]
			wt := r.Delta["smqgw_limit_refusals_total{write_timeout}"]
			if slow == 0 && wt == 0 {
				t.Errorf("no slow consumer was disconnected")
			}
			if q := r.Peak["smqgw_broker_queued_bytes"]; q > 256<<20 {
				t.Errorf("%v bytes queued at the peak, over max_queued_bytes", q)
			}
			return fmt.Sprintf("queue_bytes: %s of %s subscribers disconnected as slow consumers; at most %.0f MiB queued in the broker; peak RSS %s",
					num(slow), num(a.count("subscribed")), r.Peak["smqgw_broker_queued_bytes"]/(1<<20), kib(r.PeakRSS)),
				fmt.Sprintf("%s messages of 16 KiB published", num(a.count("published")))
		},
	})
}

// neverReader subscribes to "flood" and never reads; after a second it
// closes and starts over.
func (a *arena) neverReader(local string) {
	for a.ctx.Err() == nil {
		p, _, err := a.enter(local, false, "sink")
		if err == nil {
			err = p.send(smq.Subscribe{Topic: "flood"})
		}
		if err == nil {
			_, err = p.expect(smq.TypeSuback)
		}
		if err != nil {
			if !a.retry(p, false) {
				return
			}
			continue
		}
		a.inc("subscribed")
		a.engage()
		a.pause(time.Second)
		a.drop(p.Conn)
	}
}

// floodPublisher publishes size-byte messages to "flood", perSecond a
// second in bursts every 10 ms.
func (a *arena) floodPublisher(local string, size, perSecond int) {
	for a.ctx.Err() == nil {
		p, etid, err := a.enter(local, false, "flooder")
		var tid uint32
		if err == nil {
			if err = p.send(smq.Create{Topic: "flood"}); err == nil {
				var ack []byte
				if ack, err = p.expect(smq.TypeCreateack); err == nil {
					tid = binary.BigEndian.Uint32(ack[2:])
				}
			}
		}
		if err != nil {
			if !a.retry(p, false) {
				return
			}
			continue
		}
		a.Go(func() { p.ending(waitLong + window()) })
		burst := bytes.Repeat(smqRaw(&smq.Publish{TID: tid, PTID: etid, Payload: make([]byte, size-13)}), perSecond/100)
		tick := time.NewTicker(10 * time.Millisecond)
		for a.ctx.Err() == nil {
			if p.write(burst) != nil {
				break
			}
			a.add("published", int64(perSecond/100))
			select {
			case <-a.ctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
		a.drop(p.Conn)
	}
}

// TestAttackTopicFlood: 8 sessions from 2 addresses each create 1,100
// topics with 1,000-byte names and subscribe to 10 names of 2,000 bytes,
// in one burst, then close and start over.
func TestAttackTopicFlood(t *testing.T) {
	runAttack(t, attack{
		name: "topic-creation flood, 2 addresses",
		what: "8 sessions, each sending 1,100 Creates of 1,000-byte names and 10 Subscribes of 2,000-byte names at once, then starting over",
		run: func(a *arena) {
			for i := range 8 {
				a.Go(func() { a.topicFlooder(attackerAddr(i%2), i) })
			}
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			many := r.Delta["smqgw_broker_limit_refusals_total{max_topics_per_session}"]
			long := r.Delta["smqgw_broker_limit_refusals_total{max_topic_name}"]
			if many == 0 || long == 0 {
				t.Errorf("refusals: max_topics_per_session %v, max_topic_name %v; want both", many, long)
			}
			if peak := r.Peak["smqgw_broker_topics"]; peak > 8*1000+10 {
				t.Errorf("%v topics at the peak, want at most 8 sessions × 1,000", peak)
			}
			return fmt.Sprintf("max_topics_per_session refused %s, max_topic_name %s; at most %s topics at once, all freed with their sessions",
					num(many), num(long), num(r.Peak["smqgw_broker_topics"])),
				fmt.Sprintf("%s sessions asked for %s topics", num(a.count("sessions")), num(a.count("asked")))
		},
	})
}

// topicFlooder logs in, sends 1,100 Creates with 1,000-byte names and 10
// Subscribes with 2,000-byte ones in one write, reads the acks, and starts
// over (with the same names: the topics were freed).
func (a *arena) topicFlooder(local string, n int) {
	prefix := fmt.Sprintf("flood/%d/", n)
	var b []byte
	for i := range 1100 {
		name := prefix + fmt.Sprint(i)
		b = append(b, smqRaw(smq.Create{Topic: name + strings.Repeat("x", 1000-len(name))})...)
	}
	for i := range 10 {
		name := prefix + "long" + fmt.Sprint(i)
		b = append(b, smqRaw(smq.Subscribe{Topic: name + strings.Repeat("y", 2000-len(name))})...)
	}
	for a.ctx.Err() == nil {
		p, _, err := a.enter(local, false, "topics")
		if err != nil {
			if !a.retry(p, false) {
				return
			}
			continue
		}
		a.inc("sessions")
		a.engage()
		if p.write(b) == nil {
			for range 1110 {
				msg, err := p.read(waitShort)
				if err != nil {
					break
				}
				a.inc("asked")
				if len(msg) > 1 && msg[1] == byte(smq.AckOK) {
					a.inc("granted")
				}
			}
		}
		a.drop(p.Conn)
		if !a.pause(50 * time.Millisecond) {
			return
		}
	}
}
