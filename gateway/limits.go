package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ipLimiter bounds the sessions of each client address: how many may be
// open at once, and how fast new ones may start (a token bucket holding up
// to burst, refilled at rate per second). It is shared by every listener
// of a gateway, so one address cannot get around it by switching ports.
type ipLimiter struct {
	maxActive int
	rate      float64 // new sessions per second
	burst     float64

	mu sync.Mutex
	m  map[netip.Addr]*ipEntry
}

type ipEntry struct {
	active int
	tokens float64
	last   time.Time
	// refused counts the address's refused session starts in the second
	// from refusedAt.
	refused   int
	refusedAt time.Time
}

// sweepAt is the number of tracked addresses above which idle entries
// (no session open, bucket full again) are dropped.
const sweepAt = 4096

func newIPLimiter(maxActive int, rate float64) *ipLimiter {
	return &ipLimiter{maxActive: maxActive, rate: rate, burst: max(1, 2*rate), m: map[netip.Addr]*ipEntry{}}
}

// set changes the limits, for the sessions that start from now on.
func (l *ipLimiter) set(maxActive int, rate float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxActive, l.rate, l.burst = maxActive, rate, max(1, 2*rate)
}

// admit takes a session slot for ip, or returns the limit that refuses it
// ("max_sessions_per_ip", "session_rate_per_ip") and why, for the client.
// A refused attempt consumes nothing.
func (l *ipLimiter) admit(ip netip.Addr, now time.Time) (limit, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[ip]
	if e == nil {
		if len(l.m) >= sweepAt {
			l.sweep(now)
		}
		e = &ipEntry{tokens: l.burst, last: now}
		l.m[ip] = e
	}
	e.refill(now, l.rate, l.burst)
	switch {
	case e.active >= l.maxActive:
		e.refuse(now)
		return "max_sessions_per_ip", "server busy: too many sessions from your address"
	case e.tokens < 1:
		e.refuse(now)
		return "session_rate_per_ip", "server busy: sessions from your address start too fast"
	}
	e.tokens--
	e.active++
	return "", ""
}

// refuse counts a refused session start.
func (e *ipEntry) refuse(now time.Time) {
	if now.Sub(e.refusedAt) >= time.Second {
		e.refused, e.refusedAt = 0, now
	}
	e.refused++
}

// hammering reports whether ip has had a burst's worth of sessions
// refused within the last second: its new connections are refused before
// their TLS handshake until the second is over, so that an address
// retrying flat out costs at most a burst of handshakes a second for
// sessions it cannot get. An address that hits a limit now and then
// still hears why, in its Connack (temporary_failures = "refuse").
func (l *ipLimiter) hammering(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[ip]
	return e != nil && now.Sub(e.refusedAt) < time.Second && float64(e.refused) >= l.burst
}

// release gives back the slot admit took.
func (l *ipLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[ip]; e != nil && e.active > 0 {
		e.active--
	}
}

func (e *ipEntry) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(e.last); d > 0 {
		e.tokens = min(burst, e.tokens+d.Seconds()*rate)
		e.last = now
	}
}

// sweep drops entries that hold no session and whose bucket is full: they
// would be created the same way again.
func (l *ipLimiter) sweep(now time.Time) {
	for ip, e := range l.m {
		e.refill(now, l.rate, l.burst)
		if e.active == 0 && e.tokens >= l.burst {
			delete(l.m, ip)
		}
	}
}

// sharedRate is msgRate for the sessions of one client address together
// (message_rate_per_ip): its count is shared, so it is atomic; a window
// that rolls over is restarted by whoever sees it first.
type sharedRate struct {
	n     atomic.Int64
	start atomic.Int64 // Unix nanoseconds
	refs  int          // sessions holding it; guarded by rateTable.mu
}

// allow counts one message and reports whether it is within max.
func (r *sharedRate) allow(max int64) bool {
	if r.n.Add(1) <= max {
		return true
	}
	now, st := time.Now().UnixNano(), r.start.Load()
	if now-st >= int64(time.Second) && r.start.CompareAndSwap(st, now) {
		r.n.Store(1)
		return true
	}
	return false
}

// rateTable holds the sharedRate of each client address with sessions.
type rateTable struct {
	mu sync.Mutex
	m  map[netip.Addr]*sharedRate
}

// get returns ip's rate, held until put.
func (t *rateTable) get(ip netip.Addr) *sharedRate {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[netip.Addr]*sharedRate{}
	}
	r := t.m[ip]
	if r == nil {
		r = &sharedRate{}
		r.start.Store(time.Now().UnixNano())
		t.m[ip] = r
	}
	r.refs++
	return r
}

// put gives back what get returned.
func (t *rateTable) put(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.m[ip]; r != nil {
		if r.refs--; r.refs <= 0 {
			delete(t.m, ip)
		}
	}
}

// msgRate limits one client's messages to max per one-second window. It
// reads the clock only when a window's count passes max, so the relay pays
// an increment and a compare per message. Not safe for concurrent use: the
// client's copier owns it.
type msgRate struct {
	max   int
	n     int
	start time.Time
}

// allow counts one message and reports whether it is within the limit.
func (r *msgRate) allow() bool {
	r.n++
	if r.n <= r.max {
		return true
	}
	now := time.Now()
	if now.Sub(r.start) >= time.Second {
		r.start, r.n = now, 1
		return true
	}
	return false
}
