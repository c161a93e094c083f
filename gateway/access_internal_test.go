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
		if n, ok := l.allow(start.Add(time.Duration(i) * time.Millisecond)); !ok || n != 0 {
			t.Fatalf("line %d: allow = %d, %v", i, n, ok)
		}
	}
	for i := range 5 {
		if _, ok := l.allow(start.Add(500 * time.Millisecond)); ok {
			t.Fatalf("line %d over the limit allowed", 3+i)
		}
	}
	// The next second: allowed again, with the count of those suppressed.
	if n, ok := l.allow(start.Add(time.Second)); !ok || n != 5 {
		t.Fatalf("next second: allow = %d, %v; want 5, true", n, ok)
	}
	if n, ok := l.allow(start.Add(time.Second)); !ok || n != 0 {
		t.Fatalf("then: allow = %d, %v; want 0, true", n, ok)
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
