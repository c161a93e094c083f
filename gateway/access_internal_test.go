package gateway

import (
	"testing"
	"time"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
)

func TestLogLimiter(t *testing.T) {
	t.Parallel()
	l := logLimiter{perSecond: 3}
	start := time.Unix(1000, 0)
	for i := range 3 {
		if n, ok := l.allow(start.Add(time.Duration(i)*time.Millisecond), false); !ok || n != 0 {
			t.Fatalf("line %d: allow = %d, %v", i, n, ok)
		}
	}
	for i := range 5 {
		if _, ok := l.allow(start.Add(500*time.Millisecond), false); ok {
			t.Fatalf("line %d over the limit allowed", 3+i)
		}
	}
	// The next second: allowed again, with the count of those suppressed.
	if n, ok := l.allow(start.Add(time.Second), false); !ok || n != 5 {
		t.Fatalf("next second: allow = %d, %v; want 5, true", n, ok)
	}
	if n, ok := l.allow(start.Add(time.Second), false); !ok || n != 0 {
		t.Fatalf("then: allow = %d, %v; want 0, true", n, ok)
	}
	// Forced past the limit (a session's first denial), and counted.
	l.allow(start.Add(time.Second), false)
	if _, ok := l.allow(start.Add(time.Second), false); ok {
		t.Fatal("over the limit allowed")
	}
	if n, ok := l.allow(start.Add(time.Second), true); !ok || n != 1 {
		t.Fatalf("forced: allow = %d, %v; want 1, true", n, ok)
	}
}

func TestClientSet(t *testing.T) {
	t.Parallel()
	var c clientSet
	c.remove("lan", 7) // nothing to remove: no panic
	c.add("lan", 7)
	c.add("lan", 7) // a takeover by the same identity: two sessions, one ETID
	c.remove("lan", 7)
	if !c.has("lan", 7) || c.has("cloud", 7) {
		t.Fatal("after one of two sessions left: want ETID 7 on lan only")
	}
	c.remove("lan", 7)
	if c.has("lan", 7) {
		t.Fatal("ETID 7 still known after both sessions left")
	}
}

// grantedPublish returns a session whose guard has been acked topic
// "devices/device-7/telemetry" as tid, and a Publish to it.
func grantedPublish(tb testing.TB) (*session, []byte) {
	tb.Helper()
	p, err := access.Compile([]access.Rule{{CN: []string{"device-*"}, Publish: []string{"devices/{cn}/#"}}})
	if err != nil {
		tb.Fatal(err)
	}
	s := &session{guard: newGuard(p.For(&tlsterm.Identity{CN: "device-7"}), "fleet")}
	const tid = 0x1234
	s.learn(smq.Createack{Status: smq.AckOK, ID: tid, Topic: "devices/device-7/telemetry"}.Append(nil))
	return s, (&smq.Publish{TID: tid, PTID: 0x77, Payload: make([]byte, 64)}).Append(nil)
}

// TestPermittedPublishAllocates nothing: the relay path's check is a map
// lookup under the guard's lock.
func TestPermittedPublishAllocatesNothing(t *testing.T) {
	s, msg := grantedPublish(t)
	if !s.permit(msg) {
		t.Fatal("granted Publish denied")
	}
	if n := testing.AllocsPerRun(1000, func() { s.permit(msg) }); n != 0 {
		t.Errorf("a permitted Publish allocates %v times", n)
	}
}

// BenchmarkPermitPublish is the per-message cost of the permission check
// of a granted Publish.
func BenchmarkPermitPublish(b *testing.B) {
	s, msg := grantedPublish(b)
	b.ReportAllocs()
	for b.Loop() {
		if !s.permit(msg) {
			b.Fatal("denied")
		}
	}
}

// TestSendersForgetTheLongestUnheard: the senders a session may reply to
// are bounded; a new one past the bound forgets one heard from long ago,
// never the one heard from last (a flood of new senders could otherwise
// make a client forget the one it is talking to).
func TestSendersForgetTheLongestUnheard(t *testing.T) {
	t.Parallel()
	p, err := access.Compile([]access.Rule{{Anonymous: true, OneToOne: access.Reply}})
	if err != nil {
		t.Fatal(err)
	}
	s := &session{guard: newGuard(p.For(nil), "replies")}
	hear := func(etid uint32) { s.learn(smqtestPublish(1, etid)) }
	for id := uint32(1); id <= maxSenders; id++ {
		hear(100 + id)
	}
	hear(101) // the first sender speaks again
	for id := uint32(0); id < 100; id++ {
		hear(10000 + id) // new senders push out old ones
	}
	if n := len(s.guard.senders); n != maxSenders {
		t.Fatalf("%d senders remembered, want %d", n, maxSenders)
	}
	if _, ok := s.guard.senders[101]; !ok {
		t.Error("the sender heard from last was forgotten")
	}
	if verdict, _ := s.mayPublish(10099, 0); verdict != publishOK {
		t.Error("the newest sender cannot be replied to")
	}
}

func smqtestPublish(tid, ptid uint32) []byte {
	return (&smq.Publish{TID: tid, PTID: ptid, Payload: []byte("x")}).Append(nil)
}
