package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"
)

// upkeep is what every ACME source shares, whichever challenge proves its
// names: the names, Run's loop (obtain each certificate at start, check
// them every Check period, retry failures with back-off, and, for a
// source that does not renew by itself, wake at the earliest renewal
// point), the certificates held as of the last check (the Inventory), the
// choice of a name by SNI, and the renewal rule. Sources differ only in
// obtain.
type upkeep struct {
	names                  []string // normalised, in order, once each
	retry, retryMax, check time.Duration
	before                 time.Duration // RenewBefore; 0: the default rule
	log                    *slog.Logger
	// obtain returns name's certificate: held, cached or newly issued.
	obtain func(ctx context.Context, name string) (*tls.Certificate, error)
	// renews is whether the source renews by itself (autocert); if not,
	// the loop wakes at each renewal point and obtain renews.
	renews bool

	mu   sync.Mutex
	held map[string]*tls.Certificate // by name: what the last check got
}

// defaults fills the zero durations and makes the map.
func (u *upkeep) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&u.retry, DefaultACMERetry)
	def(&u.retryMax, DefaultACMERetryMax)
	def(&u.check, DefaultACMECheck)
	u.held = map[string]*tls.Certificate{}
}

// normaliseNames lowercases names, drops a final dot and duplicates, and
// says what is wrong with any; a wildcard is allowed only if wildcard.
func normaliseNames(prefix string, in []string, wildcard bool) ([]string, []error) {
	var errs []error
	seen := map[string]bool{}
	var names []string
	for _, d := range in {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if seen[d] {
			continue
		}
		seen[d] = true
		names = append(names, d)
		base, isWild := strings.CutPrefix(d, "*.")
		switch {
		case isWild && !wildcard:
			errs = append(errs, fmt.Errorf("%s: domain %q: wildcard certificates need the DNS-01 challenge (acme_challenge = \"dns-01\")", prefix, d))
		case strings.Contains(base, "*"):
			errs = append(errs, fmt.Errorf("%s: domain %q: a wildcard is only allowed as the whole first label (\"*.example.com\")", prefix, d))
		case !strings.Contains(base, "."):
			errs = append(errs, fmt.Errorf("%s: domain %q: not a fully qualified name", prefix, d))
		case isIP(base):
			errs = append(errs, fmt.Errorf("%s: domain %q: an IP address, not a name", prefix, d))
		}
	}
	if len(in) == 0 {
		errs = append(errs, fmt.Errorf("%s: no domains", prefix))
	}
	return names, errs
}

// Run obtains a certificate for every name now — from the cache when it
// holds a valid one — and then checks them every Check period until ctx
// ends. A failure is logged and retried after Retry, doubling up to
// RetryMax; certificates already held keep being served meanwhile. A
// source that does not renew by itself is also woken at the earliest
// renewal point, and obtain renews then.
func (u *upkeep) Run(ctx context.Context) {
	wait := u.retry
	for {
		next := jitter(u.check)
		if failed := u.checkAll(ctx); failed > 0 {
			next = jitter(wait)
			wait = min(2*wait, u.retryMax)
			u.log.Warn("acme: certificates missing, retrying", "missing", failed, "retry_in", next.Round(time.Second).String())
		} else {
			wait = u.retry
			if d, ok := u.untilRenewal(); ok && d < next {
				next = max(d, time.Second)
			}
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// untilRenewal is how long until the earliest renewal point of the
// certificates held, for a source that does not renew by itself.
func (u *upkeep) untilRenewal() (time.Duration, bool) {
	if u.renews {
		return 0, false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var first time.Time
	for _, c := range u.held {
		if at := u.renewAt(c.Leaf); first.IsZero() || at.Before(first) {
			first = at
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return time.Until(first), true
}

// jitter spreads d by up to a tenth, so many gateways do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/10+1)
}

// checkAll gets every name's certificate, returning how many failed.
func (u *upkeep) checkAll(ctx context.Context) int {
	failed := 0
	for _, d := range u.names {
		if ctx.Err() != nil {
			return 0
		}
		c, err := u.obtain(ctx, d)
		if err != nil && ctx.Err() != nil {
			return 0 // shutting down: not a failure
		}
		if err == nil && c.Leaf == nil {
			c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
		}
		if err != nil {
			failed++
			u.log.Error("acme: cannot obtain certificate", "domain", d, "err", err)
			continue
		}
		leaf := c.Leaf
		u.mu.Lock()
		prev := u.held[d]
		u.held[d] = c
		u.mu.Unlock()
		if prev == nil || !prev.Leaf.Equal(leaf) {
			u.log.Info("acme: serving certificate", "domain", d, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
				"issuer", leaf.Issuer.CommonName, "serial", leaf.SerialNumber.Text(16))
		}
		if left, renew := time.Until(leaf.NotAfter), u.renewBefore(leaf); left < renew/2 {
			u.log.Warn("acme: certificate not renewed in time: renewal keeps failing", "domain", d,
				"expires_in", left.Round(time.Minute).String())
		}
	}
	return failed
}

// renewBefore is how long before its expiry c is renewed: RenewBefore,
// else 30 days or a third of the lifetime if less; a RenewBefore as long
// as the lifetime counts as the default, lest every check renew.
func (u *upkeep) renewBefore(c *x509.Certificate) time.Duration {
	life := c.NotAfter.Sub(c.NotBefore)
	if u.before > 0 && u.before < life {
		return u.before
	}
	return min(30*24*time.Hour, life/3)
}

// renewAt is when c is due for renewal.
func (u *upkeep) renewAt(c *x509.Certificate) time.Time { return c.NotAfter.Add(-u.renewBefore(c)) }

// due reports whether c is due for renewal (or expired) at now.
func (u *upkeep) due(c *x509.Certificate, now time.Time) bool { return !now.Before(u.renewAt(c)) }

// Domains returns the names, normalised.
func (u *upkeep) Domains() []string { return append([]string(nil), u.names...) }

// Leaves returns the certificates held as of the last check, in the
// order of the names.
func (u *upkeep) Leaves() []*x509.Certificate {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]*x509.Certificate, 0, len(u.held))
	for _, d := range u.names {
		if c := u.held[d]; c != nil {
			out = append(out, c.Leaf)
		}
	}
	return out
}

// Want is the number of names.
func (u *upkeep) Want() int { return len(u.names) }

// choose returns the name whose certificate answers serverName: the name
// itself, else the wildcard covering it ("*.example.com" covers
// "a.example.com", one label deep), else — another name, or none, as a
// client connecting by IP address sends — the first name, as a web
// server's default host. The certificate is the one held, nil if none.
func (u *upkeep) choose(serverName string) (string, *tls.Certificate) {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.held[name]; c != nil {
		return name, c
	}
	if _, parent, ok := strings.Cut(name, "."); ok && name != "" {
		if c := u.held["*."+parent]; c != nil {
			return "*." + parent, c
		}
	}
	return u.names[0], u.held[u.names[0]]
}

func isIP(s string) bool { return net.ParseIP(s) != nil }
