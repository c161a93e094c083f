package gateway

import (
	"net/netip"
	"sync"
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
		return "max_sessions_per_ip", "server busy: too many sessions from your address"
	case e.tokens < 1:
		return "session_rate_per_ip", "server busy: sessions from your address start too fast"
	}
	e.tokens--
	e.active++
	return "", ""
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
