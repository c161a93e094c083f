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

// TestHammering: an address that had a burst's worth of session starts
// refused within a second is hammering until the second is over (its
// connections are then refused before their TLS handshake); one refused
// now and then is not.
func TestHammering(t *testing.T) {
	t.Parallel()
	ip := netip.MustParseAddr("192.0.2.1")
	l := newIPLimiter(10, 1) // bursts of 2
	t0 := time.Unix(1e9, 0)
	for range 2 {
		if limit, _ := l.admit(ip, t0); limit != "" {
			t.Fatalf("refused within the burst: %s", limit)
		}
	}
	if limit, _ := l.admit(ip, t0); limit != "session_rate_per_ip" {
		t.Fatalf("third start: %q", limit)
	}
	if l.hammering(ip, t0) {
		t.Fatal("hammering after one refusal")
	}
	l.admit(ip, t0.Add(100*time.Millisecond))
	if !l.hammering(ip, t0.Add(200*time.Millisecond)) {
		t.Fatal("not hammering after a burst's worth of refusals within a second")
	}
	if l.hammering(ip, t0.Add(1100*time.Millisecond)) {
		t.Fatal("still hammering after the second was over")
	}
	if l.hammering(netip.MustParseAddr("192.0.2.2"), t0) {
		t.Fatal("another address hammering")
	}
}

// TestSharedRate: the sessions of one address share message_rate_per_ip;
// a window rolls over after a second.
func TestSharedRate(t *testing.T) {
	t.Parallel()
	var tab rateTable
	ip := netip.MustParseAddr("192.0.2.1")
	a, b := tab.get(ip), tab.get(ip)
	if a != b {
		t.Fatal("two sessions of one address got two rates")
	}
	for i := range 10 {
		r := a
		if i%2 == 1 {
			r = b
		}
		if !r.allow(10) {
			t.Fatalf("message %d refused within the limit", i+1)
		}
	}
	if b.allow(10) {
		t.Fatal("the 11th message of the address allowed")
	}
	a.start.Add(-int64(time.Second)) // the window began a second ago
	if !a.allow(10) {
		t.Fatal("refused in a new window")
	}
	tab.put(ip)
	tab.put(ip)
	if len(tab.m) != 0 {
		t.Fatal("the rate outlived its sessions")
	}
}
