package gateway

import (
	"net/netip"
	"testing"
	"time"
)

func TestIPLimiter(t *testing.T) {
	t.Parallel()
	l := newIPLimiter(3, 2) // 3 at once; 2 new per second, burst 4
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Unix(1000, 0)
	for i := range 3 {
		if limit, why := l.admit(a, now); limit != "" {
			t.Fatalf("session %d refused: %s", i+1, why)
		}
	}
	if limit, why := l.admit(a, now); limit != "max_sessions_per_ip" || why != "server busy: too many sessions from your address" {
		t.Fatalf("4th concurrent session: %q %q", limit, why)
	}
	if limit, _ := l.admit(b, now); limit != "" {
		t.Fatal("another address is limited too")
	}
	l.release(a)
	// One slot free, one token left of the burst of 4.
	if limit, why := l.admit(a, now); limit != "" {
		t.Fatalf("after a release: %s", why)
	}
	l.release(a)
	if limit, why := l.admit(a, now); limit != "session_rate_per_ip" || why != "server busy: sessions from your address start too fast" {
		t.Fatalf("burst spent: %q %q", limit, why)
	}
	// Half a second later one token is back.
	if limit, why := l.admit(a, now.Add(500*time.Millisecond)); limit != "" {
		t.Fatalf("after refill: %s", why)
	}
}

func TestIPLimiterSweeps(t *testing.T) {
	t.Parallel()
	l := newIPLimiter(10, 100)
	now := time.Unix(1000, 0)
	for i := range sweepAt + 10 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if limit, _ := l.admit(ip, now); limit != "" {
			t.Fatal("refused")
		}
		l.release(ip)
		now = now.Add(time.Second)
	}
	if n := len(l.m); n > sweepAt {
		t.Errorf("%d addresses tracked, want idle ones swept (at most %d)", n, sweepAt)
	}
}

func TestMsgRate(t *testing.T) {
	t.Parallel()
	r := msgRate{max: 3, start: time.Now()}
	for i := range 3 {
		if !r.allow() {
			t.Fatalf("message %d refused", i+1)
		}
	}
	if r.allow() {
		t.Error("4th message in the same second allowed")
	}
	r.start = r.start.Add(-time.Second)
	if !r.allow() {
		t.Error("a message in a new window refused")
	}
}

func BenchmarkMsgRate(b *testing.B) {
	r := msgRate{max: 1 << 30, start: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if !r.allow() {
			b.Fatal("refused")
		}
	}
}
