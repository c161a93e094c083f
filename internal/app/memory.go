package app

import (
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smqgw/smqgw/gateway"
)

// The memory policy after bursts of sessions.
//
// A burst of sessions (thousands of TLS handshakes within seconds) leaves
// the heap holding the handshakes' garbage and free spans: the collector
// lets the heap grow to twice its live size (GOGC=100) before it runs, and
// once the burst is over nothing allocates, so no collection comes, and
// the scavenger gives freed pages back to the OS only slowly. Measured
// with 9,000 idle sessions on the LAN path (README, Performance), that is
// about 10 KiB per session of resident memory the process does not use:
// smqgw held 34-35 KiB per wss session after the burst, 25.6 after the
// release (raw SMQ over TLS: 33 -> 25). So once a burst has ended, the
// gateway collects and returns the freed memory to the OS
// (debug.FreeOSMemory), once. The release lasts while the process
// allocates little: what it allocates later (churn, scrapes) grows the
// heap back toward the collector's goal before the next collection.
//
// It must cost nothing under steady load: it looks at the session count
// once a second (no work on the session path), releases only after the
// count has gone up by at least releaseRise since the last release (or
// the lowest count since) and then stayed the same for a whole tick, and
// never more often than every releaseEvery. Constant churn (as many
// sessions ending as starting) never raises the count, and a count still
// rising is no ended burst: neither releases. Each release is counted in
// smqgw_memory_releases_total.
//
// GOMEMLIMIT, if set, still bounds the heap as the runtime documents; no
// default is set, since the right one depends on the machine.
const (
	releaseTick  = time.Second
	releaseRise  = 1000             // sessions: about 11 MiB of burst garbage
	releaseEvery = 10 * time.Second // at most one release (one full collection) per this
)

// releaser decides when to release memory: tick is the policy, a pure
// function of the session counts it is fed.
type releaser struct {
	rise  int           // releaseRise
	every time.Duration // releaseEvery

	started bool
	prev    int       // the count at the last tick
	mark    int       // the count at the last release, or the lowest since
	last    time.Time // the last release
}

// tick takes the session count at now (once per releaseTick) and reports
// whether to release memory now.
func (r *releaser) tick(now time.Time, sessions int) bool {
	if !r.started {
		r.started, r.prev, r.mark = true, sessions, sessions
		return false
	}
	r.mark = min(r.mark, sessions)
	changed := sessions != r.prev
	r.prev = sessions
	if changed || sessions-r.mark < r.rise || (!r.last.IsZero() && now.Sub(r.last) < r.every) {
		return false
	}
	r.last, r.mark = now, sessions
	return true
}

// releaseMemory runs the policy on gw until stop is called.
func releaseMemory(gw *gateway.Gateway) (stop func()) {
	releases := prometheus.NewCounter(prometheus.CounterOpts{Name: "smqgw_memory_releases_total",
		Help: "Times the gateway collected garbage and returned free memory to the OS after a burst of sessions ended."})
	if err := gw.Metrics().Registry().Register(releases); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err) // a name taken by another collector: a bug
		}
		releases = are.ExistingCollector.(prometheus.Counter)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		r := releaser{rise: releaseRise, every: releaseEvery}
		t := time.NewTicker(releaseTick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if r.tick(now, gw.Sessions()) {
					debug.FreeOSMemory()
					releases.Inc()
				}
			}
		}
	})
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}
