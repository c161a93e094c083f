package attack

import (
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAttackNone is the suite's reference: the well-behaved client alone,
// with no attack.
func TestAttackNone(t *testing.T) {
	runAttack(t, attack{
		name: "none",
		what: "the well-behaved client alone, for reference",
		run:  func(a *arena) { a.engage() },
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			return "—", ""
		},
	})
}

// Attacks on connections before they are sessions: admission.

// holdSilent is one slowloris slot: it connects from local and holds the
// connection without sending a byte until the attack ends; when the
// gateway closes it (refused at once, or its handshake timed out), it
// connects again after a pause. It counts "dialed", "refused" (closed
// within a second) and "timed_out" (closed later).
func (a *arena) holdSilent(local, listener string, ready *atomic.Int64) {
	first := true
	for a.ctx.Err() == nil {
		p, err := a.dialTCP(local, listener)
		if err != nil {
			a.inc("dial_errors")
			if !a.pause(100 * time.Millisecond) {
				return
			}
			continue
		}
		a.inc("dialed")
		if first {
			ready.Add(1)
			first = false
		}
		start := time.Now()
		_, _ = p.Read(make([]byte, 1)) // until the gateway closes it
		a.drop(p.Conn)
		if a.ctx.Err() != nil {
			return
		}
		if time.Since(start) < time.Second {
			a.inc("refused")
		} else {
			a.inc("timed_out")
		}
		if !a.pause(200 * time.Millisecond) {
			return
		}
	}
}

// slowlorisHandshake opens per connections from each of addrs to the TLS
// listener and never starts the handshake.
func slowlorisHandshake(addrs, per int) func(a *arena) {
	return func(a *arena) {
		var ready atomic.Int64
		for i := range addrs {
			for range per {
				a.Go(func() { a.holdSilent(attackerAddr(i), "tls", &ready) })
			}
		}
		a.Go(func() {
			pollUntil(waitShort, func() bool { return ready.Load() == int64(addrs*per) || a.ctx.Err() != nil })
			a.engage()
		})
	}
}

// judgePending checks that each address held at most max_pending_per_ip
// (100) connections in the handshake and that the rest were refused.
func judgePending(addrs, per int) func(t *testing.T, a *arena, r *result) (string, string) {
	return func(t *testing.T, a *arena, r *result) (string, string) {
		refusals := r.Delta["smqgw_limit_refusals_total{max_pending_per_ip}"]
		if refusals < float64(addrs*(per-100)) {
			t.Errorf("max_pending_per_ip refused %v connections, want at least %d", refusals, addrs*(per-100))
		}
		if peak := r.Peak["smqgw_connections_pending"]; peak > float64(addrs*100+2) {
			t.Errorf("%v connections pending at the peak, want at most %d (100 per address)", peak, addrs*100)
		}
		held := fmt.Sprintf("max_pending_per_ip: 100 an address held in the handshake (%s pending at the peak, the well-behaved client's included), %s more closed at once",
			num(r.Peak["smqgw_connections_pending"]), num(refusals))
		if to := r.Delta["smqgw_tls_handshake_failures_total{timeout}"]; to > 0 {
			held += fmt.Sprintf("; handshake_timeout closed %s", num(to))
		}
		return held, fmt.Sprintf("%s connections opened", num(a.count("dialed")))
	}
}

// TestAttackHandshakeSlowlorisOne: one address opens 150 connections to
// the TLS listener and never sends a ClientHello.
func TestAttackHandshakeSlowlorisOne(t *testing.T) {
	runAttack(t, attack{
		name:  "handshake slowloris, 1 address",
		what:  "150 TCP connections to the TLS port that never send a ClientHello; each closed one is opened again 0.2 s later",
		run:   slowlorisHandshake(1, 150),
		judge: judgePending(1, 150),
	})
}

// TestAttackHandshakeSlowlorisMany: 25 addresses open 120 connections each
// (3,000 held, under the listener's max_pending of 4,096) and never send
// a ClientHello.
func TestAttackHandshakeSlowlorisMany(t *testing.T) {
	runAttack(t, attack{
		name:  "handshake slowloris, 25 addresses",
		what:  "120 such connections from each of 25 addresses: 3,000, under the listener's max_pending (4,096)",
		run:   slowlorisHandshake(25, 120),
		judge: judgePending(25, 120),
	})
}

// holdDribble is one bootstrap slowloris slot: it connects to listener
// (completing the handshake on a TLS one), then sends an HTTP request a
// byte every 500 ms, never ending its header. When the gateway closes it, it
// connects again after a pause. It counts "connections", "refused" (the
// handshake failed: closed at once) and "cut" (closed by the gateway
// later).
func (a *arena) holdDribble(local, listener string, ready *atomic.Int64) {
	first := true
	for a.ctx.Err() == nil {
		p, err := a.dial(local, listener)
		if err != nil {
			if a.ctx.Err() == nil {
				a.inc("refused")
			}
			if !a.pause(200 * time.Millisecond) {
				return
			}
			continue
		}
		a.inc("connections")
		if first {
			ready.Add(1)
			first = false
		}
		err = p.write([]byte("GET /smq HTTP/1.1\r\nHost: " + p.host + "\r\nX-Slow: "))
		for err == nil && a.pause(500*time.Millisecond) {
			err = p.write([]byte("a"))
		}
		a.drop(p.Conn)
		if a.ctx.Err() != nil {
			return
		}
		a.inc("cut")
	}
}

// TestAttackBootstrapSlowloris: 4 addresses open 130 connections each —
// two to the TLS listener, completing the handshake, two to the plain one
// — and dribble an HTTP request a byte every 500 ms.
func TestAttackBootstrapSlowloris(t *testing.T) {
	const addrs, per = 4, 130
	runAttack(t, attack{
		name: "bootstrap slowloris, 4 addresses",
		what: "130 connections from each address (2 on the TLS port, after the handshake; 2 on the plain port) that send a request header a byte every 0.5 s, never ending it",
		run: func(a *arena) {
			var ready atomic.Int64
			for i := range addrs {
				for range per {
					a.Go(func() { a.holdDribble(attackerAddr(i), []string{"tls", "lan"}[i/2], &ready) })
				}
			}
			a.Go(func() {
				pollUntil(waitShort, func() bool { return ready.Load() >= addrs*100 || a.ctx.Err() != nil })
				a.engage()
			})
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			refusals := r.Delta["smqgw_limit_refusals_total{max_pending_per_ip}"]
			if refusals < addrs*(per-100) {
				t.Errorf("max_pending_per_ip refused %v connections, want at least %d", refusals, addrs*(per-100))
			}
			if peak := r.Peak["smqgw_connections_pending"]; peak > addrs*100+2 {
				t.Errorf("%v connections pending at the peak, want at most %d", peak, addrs*100)
			}
			held := fmt.Sprintf("max_pending_per_ip: 100 an address held (%s pending at the peak, the well-behaved client's included), %s more closed at once, before any TLS or HTTP",
				num(r.Peak["smqgw_connections_pending"]), num(refusals))
			if to := r.Delta["smqgw_limit_refusals_total{request_timeout}"]; to > 0 {
				held += fmt.Sprintf("; request_timeout closed %s", num(to))
			}
			return held, fmt.Sprintf("%s connections opened", num(a.count("connections")))
		},
	})
}

// flood is one flooding worker: at the pace of its address, it opens a
// TLS connection, bootstraps raw SMQ and sends Connect; it holds the
// sessions it gets, up to maxHold for its address (held), and closes the
// rest. It counts "attempts", "sessions" and "refused".
func (a *arena) flood(local string, pace *pacer, held *atomic.Int64, maxHold int64, seq *atomic.Int64) {
	for pace.wait() {
		a.inc("attempts")
		p, err := a.rawSession(local, "tls", nil)
		if err == nil {
			_, err = p.login(fmt.Sprintf("flood-%s-%d", local, seq.Add(1)))
		}
		switch {
		case a.ctx.Err() != nil:
			return
		case err != nil:
			a.inc("refused")
			if p != nil {
				a.drop(p.Conn)
			}
		default:
			a.inc("sessions")
			a.inc("sessions from " + local)
			a.engage()
			if held.Add(1) > maxHold {
				held.Add(-1)
				a.drop(p.Conn)
			}
		}
	}
}

// floodAttack runs flooding workers from each of addrs addresses,
// each address making at most rate attempts a second and holding at most
// maxHold sessions.
func floodAttack(addrs, workers, rate int, maxHold int64) func(a *arena) {
	return func(a *arena) {
		var seq atomic.Int64
		for i := range addrs {
			held := new(atomic.Int64)
			pace := a.pace(rate)
			for range workers {
				a.Go(func() { a.flood(attackerAddr(i), pace, held, maxHold, &seq) })
			}
		}
	}
}

// judgeFlood checks that no address got more sessions than
// session_rate_per_ip lets it start (50 a second, bursts of 100).
func judgeFlood(t *testing.T, a *arena, r *result) (string, string) {
	rate := r.Delta["smqgw_limit_refusals_total{session_rate_per_ip}"]
	pending := r.Delta["smqgw_limit_refusals_total{max_pending_per_ip}"]
	perIP := r.Delta["smqgw_limit_refusals_total{max_sessions_per_ip}"]
	allowed := int64(100 + 50*time.Since(a.started).Seconds())
	most := int64(0)
	for k, n := range a.counters() {
		if from, ok := strings.CutPrefix(k, "sessions from "); ok {
			most = max(most, n)
			if n > allowed {
				t.Errorf("%s started %d sessions, more than session_rate_per_ip allows (%d)", from, n, allowed)
			}
		}
	}
	held := fmt.Sprintf("session_rate_per_ip: at most %s sessions from one address in %.1f s (bursts of 100, then 50 a second), %s refused at once (no Init)",
		num(most), time.Since(a.started).Seconds(), num(rate))
	if pending > 0 {
		held += fmt.Sprintf("; max_pending_per_ip closed %s at once", num(pending))
	}
	if perIP > 0 {
		held += fmt.Sprintf("; max_sessions_per_ip refused %s", num(perIP))
	}
	return held, fmt.Sprintf("%s attempts, %s sessions, %s open at the peak",
		num(a.count("attempts")), num(a.count("sessions")), num(r.Peak["smqgw_sessions_open"]))
}

// TestAttackFloodOne: one address tries to open 250 TLS sessions a second
// (five times session_rate_per_ip) with 32 workers and holds what it gets
// (at most 1,000).
func TestAttackFloodOne(t *testing.T) {
	runAttack(t, attack{
		name:  "connection flood, 1 address",
		what:  "250 TLS session attempts a second (TLS, raw SMQ bootstrap, Connect), from 32 workers; the sessions it gets are held (up to 1,000)",
		run:   floodAttack(1, 32, 250, 1000),
		judge: judgeFlood,
	})
}

// TestAttackFloodFlatOut is the flood from one address as fast as its 32
// workers can. An address hammering at its session limits has its new
// connections refused before the TLS handshake for the rest of the second
// (each refused session cost a handshake and a bootstrap, 0.5 ms of CPU,
// before).
func TestAttackFloodFlatOut(t *testing.T) {
	runAttack(t, attack{
		name:  "connection flood flat out, 1 address",
		what:  "TLS session attempts as fast as 32 workers can; the sessions it gets are held (up to 1,000)",
		run:   floodAttack(1, 32, 1_000_000, 1000),
		judge: judgeFlood,
	})
}

// TestAttackFloodMany: 8 addresses try to open 75 TLS sessions a second
// each (50% over session_rate_per_ip) and hold what they get (at most 250
// each).
func TestAttackFloodMany(t *testing.T) {
	runAttack(t, attack{
		name:  "connection flood, 8 addresses",
		what:  "75 TLS session attempts a second from each address; up to 250 sessions each held",
		run:   floodAttack(8, 4, 75, 250),
		judge: judgeFlood,
	})
}

// holder404 is one keep-alive 404 holder: over TLS, it sends GET
// /favicon.ico with Connection: keep-alive and, if the connection stays
// open, another after a second, to hold it without ever becoming a
// session. It counts "requests", "status_NNN", "closed_after_answer" and
// "kept_open".
func (a *arena) holder404(local string) {
	req := []byte("GET /favicon.ico HTTP/1.1\r\nHost: " + a.gw.addrs["tls"] + "\r\nConnection: keep-alive\r\n\r\n")
	// Holders come and go at their own times, not all at once.
	if !a.pause(time.Duration(mrand.Int64N(int64(time.Second)))) {
		return
	}
	for a.ctx.Err() == nil {
		p, err := a.dialTLS(local, "tls", nil)
		if err != nil {
			if a.ctx.Err() == nil {
				a.inc("refused")
			}
			if !a.pause(50 * time.Millisecond) {
				return
			}
			continue
		}
		for a.ctx.Err() == nil {
			if p.write(req) != nil {
				break
			}
			a.inc("requests")
			_ = p.SetReadDeadline(time.Now().Add(waitShort))
			resp, err := http.ReadResponse(p.br, nil)
			if err != nil {
				break
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			a.inc(fmt.Sprintf("status_%d", resp.StatusCode))
			a.engage()
			// Still open a second later? Then the next request.
			_ = p.SetReadDeadline(time.Now().Add(time.Second))
			_, err = p.br.ReadByte()
			switch {
			case a.ctx.Err() != nil: // closed by the end of the attack
			case isTimeout(err):
				a.inc("kept_open")
				continue
			default:
				a.inc("closed_after_answer")
			}
			break
		}
		a.drop(p.Conn)
		// A holder comes back a second later, as it would have sent its
		// next request.
		if !a.pause(time.Second) {
			return
		}
	}
}

// TestAttackKeepAlive404: 3 addresses run 100 keep-alive 404 holders each
// (their max_pending_per_ip), each sending a request every second, at
// times of its own.
func TestAttackKeepAlive404(t *testing.T) {
	runAttack(t, attack{
		name: "keep-alive 404 holders, 3 addresses",
		what: "100 TLS connections from each address (its max_pending_per_ip) sending GET /favicon.ico with Connection: keep-alive, each every second at a time of its own",
		run: func(a *arena) {
			for i := range 3 {
				for range 100 {
					a.Go(func() { a.holder404(attackerAddr(i)) })
				}
			}
		},
		judge: func(t *testing.T, a *arena, r *result) (string, string) {
			if kept := a.count("kept_open"); kept > 0 {
				t.Errorf("%d connections stayed open after a 404", kept)
			}
			if a.count("status_404") == 0 {
				t.Errorf("no 404 answered")
			}
			return fmt.Sprintf("404 closes the connection: %s of %s connections closed after their 404, %s kept open",
					num(a.count("closed_after_answer")), num(a.count("status_404")), num(a.count("kept_open"))),
				fmt.Sprintf("%s requests", num(a.count("requests")))
		},
	})
}

// num formats n with thousands separators: 12,345.
func num[N int64 | float64 | int](n N) string {
	s := strconv.FormatInt(int64(n), 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
