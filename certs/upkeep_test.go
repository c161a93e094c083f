package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestUpkeepChoose: the exact name wins, a wildcard covers one label, and
// anything else gets the first name's certificate.
func TestUpkeepChoose(t *testing.T) {
	t.Parallel()
	cert := func(name string) *tls.Certificate {
		return &tls.Certificate{Leaf: &x509.Certificate{DNSNames: []string{name}}}
	}
	u := &upkeep{names: []string{"gw.example.com", "*.example.com", "a.example.com"}, log: slog.New(slog.DiscardHandler)}
	u.defaults()
	if name, c := u.choose("gw.example.com"); name != "gw.example.com" || c != nil {
		t.Errorf("nothing held: %q %v", name, c)
	}
	for _, n := range []string{"gw.example.com", "*.example.com", "a.example.com"} {
		u.held[n] = cert(n)
	}
	for sni, want := range map[string]string{
		"gw.example.com":    "gw.example.com",
		"A.Example.COM.":    "a.example.com", // exact beats the wildcard
		"b.example.com":     "*.example.com",
		"x.b.example.com":   "gw.example.com", // two labels deep: not the wildcard's
		"example.com":       "gw.example.com",
		"other.example.org": "gw.example.com",
		"":                  "gw.example.com",
	} {
		if name, c := u.choose(sni); name != want || c != u.held[want] {
			t.Errorf("choose(%q) = %q, want %q", sni, name, want)
		}
	}
}

// TestUpkeepRenewal: the renewal point, and the wake-up of a source that
// does not renew by itself.
func TestUpkeepRenewal(t *testing.T) {
	t.Parallel()
	now := time.Now()
	leaf := func(life time.Duration) *x509.Certificate {
		return &x509.Certificate{NotBefore: now, NotAfter: now.Add(life)}
	}
	for _, tc := range []struct {
		before, life, want time.Duration
	}{
		{0, 90 * 24 * time.Hour, 30 * 24 * time.Hour},
		{0, 6 * 24 * time.Hour, 2 * 24 * time.Hour},
		{10 * 24 * time.Hour, 90 * 24 * time.Hour, 10 * 24 * time.Hour},
		{7 * 24 * time.Hour, 6 * 24 * time.Hour, 2 * 24 * time.Hour}, // not every check
	} {
		u := &upkeep{before: tc.before}
		if got := u.renewBefore(leaf(tc.life)); got != tc.want {
			t.Errorf("RenewBefore %v, lifetime %v: renew %v ahead, want %v", tc.before, tc.life, got, tc.want)
		}
	}
	u := &upkeep{names: []string{"a.example.com", "b.example.com"}}
	u.defaults()
	u.held["a.example.com"] = &tls.Certificate{Leaf: leaf(90 * time.Hour)}
	u.held["b.example.com"] = &tls.Certificate{Leaf: leaf(9 * time.Hour)}
	if d, ok := u.untilRenewal(); !ok || d > 6*time.Hour || d < 5*time.Hour {
		t.Errorf("untilRenewal() = %v, %v: want about 6h, b's point", d, ok)
	}
	if !u.due(leaf(9*time.Hour), now.Add(6*time.Hour)) || u.due(leaf(9*time.Hour), now.Add(5*time.Hour)) {
		t.Error("due: wrong side of the renewal point")
	}
	u.renews = true
	if _, ok := u.untilRenewal(); ok {
		t.Error("a source that renews by itself is woken for renewals")
	}
}

func TestNewDNS01Errors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  DNS01Config
		want string
	}{
		{DNS01Config{ACMEConfig: ACMEConfig{CacheDir: "x"}, Solver: nopSolver{}}, "no domains"},
		{DNS01Config{ACMEConfig: ACMEConfig{Domains: []string{"*.*.example.com"}, CacheDir: "x"}, Solver: nopSolver{}}, "whole first label"},
		{DNS01Config{ACMEConfig: ACMEConfig{Domains: []string{"*.com"}, CacheDir: "x"}, Solver: nopSolver{}}, "not a fully qualified name"},
		{DNS01Config{ACMEConfig: ACMEConfig{Domains: []string{"gw.example.com"}}, Solver: nopSolver{}}, "no cache directory"},
		{DNS01Config{ACMEConfig: ACMEConfig{Domains: []string{"gw.example.com"}, CacheDir: "x"}}, "no DNS solver"},
	} {
		if _, err := NewDNS01(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg.Domains, err, tc.want)
		}
	}
	s, err := NewDNS01(DNS01Config{ACMEConfig: ACMEConfig{Domains: []string{"*.Example.com.", "gw.example.com"}, CacheDir: "x"}, Solver: nopSolver{}})
	if err != nil || strings.Join(s.Domains(), ",") != "*.example.com,gw.example.com" || s.Want() != 2 {
		t.Errorf("NewDNS01: %v %v", s, err)
	}
}

type nopSolver struct{}

func (nopSolver) Present(_ context.Context, _, _ string) error { return nil }
func (nopSolver) CleanUp(_ context.Context, _, _ string) error { return nil }
