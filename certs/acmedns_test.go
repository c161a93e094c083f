//go:build unix

package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/certs/dns01"
	"github.com/smqgw/smqgw/internal/bindtest"
	"github.com/smqgw/smqgw/internal/pebbletest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// issueWait bounds an issuance against Pebble and BIND on loopback.
const issueWait = 60 * time.Second

// dnsCA is BIND serving example.test and Pebble validating DNS-01 against
// it.
func dnsCA(t *testing.T) (*bindtest.Server, *pebbletest.Pebble) {
	t.Helper()
	bind := bindtest.Start(t, bindtest.Options{})
	pb := pebbletest.Start(t, pebbletest.Options{DNSServer: bind.Addr})
	return bind, pb
}

func rfc2136(bind *bindtest.Server) *dns01.RFC2136 {
	return &dns01.RFC2136{Server: bind.Addr, Zone: bind.Zone, KeyName: bind.KeyName, Algorithm: bind.KeyAlgorithm, Secret: bind.KeySecret}
}

// run runs s until the test ends, and waits for Run to return.
func run(t *testing.T, s interface{ Run(context.Context) }) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// TestDNS01IssueRenew: a name and a wildcard obtained from Pebble by
// DNS-01, the TXT records set in BIND by RFC 2136 and removed after; each
// served by SNI (the exact name wins over the wildcard, which covers one
// label); stored in the cache in autocert's format; renewed when due (a
// RenewBefore just under Pebble's lifetime makes that seconds); and served
// from the cache by a new source whose CA is unreachable.
func TestDNS01IssueRenew(t *testing.T) {
	bind, pb := dnsCA(t)
	roots := pb.Roots(t)
	cache := t.TempDir()
	logs := &smqtest.SyncBuffer{}
	cfg := certs.DNS01Config{
		ACMEConfig: certs.ACMEConfig{
			Domains:        []string{"gw.example.test", "*.example.test"},
			Email:          "ops@example.test",
			DirectoryURL:   pb.DirectoryURL,
			DirectoryRoots: pb.CAPool,
			CacheDir:       cache,
			// Pebble's certificates last 90 days less a second.
			RenewBefore: 90*24*time.Hour - 4*time.Second,
			Retry:       100 * time.Millisecond,
			Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
		Solver:      rfc2136(bind),
		Propagation: &dns01.Propagation{Servers: []string{bind.Addr}, Timeout: 20 * time.Second, Interval: 50 * time.Millisecond},
	}
	s, err := certs.NewDNS01(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	}()
	if _, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "gw.example.test"}); err == nil {
		t.Error("a certificate before Run")
	}
	stop := run(t, s)
	smqtest.WaitUntilWithin(t, issueWait, "both certificates", func() bool { return len(s.Leaves()) == 2 })
	first := s.Leaves()

	served := func(sni string) *x509.Certificate {
		t.Helper()
		c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		inter := x509.NewCertPool()
		for _, der := range c.Certificate[1:] {
			ic, _ := x509.ParseCertificate(der)
			inter.AddCert(ic)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: sni, Roots: roots, Intermediates: inter}); err != nil && sni != "" {
			t.Errorf("SNI %q: %v", sni, err)
		}
		return leaf
	}
	if got := served("gw.example.test").DNSNames; !slices.Equal(got, []string{"gw.example.test"}) {
		t.Errorf("gw.example.test served %q, want the exact name's certificate", got)
	}
	for _, sni := range []string{"a.example.test", "B.Example.Test."} {
		if got := served(sni).DNSNames; !slices.Equal(got, []string{"*.example.test"}) {
			t.Errorf("%s served %q, want the wildcard", sni, got)
		}
	}
	// Two labels deep is not the wildcard's: the default, the first name.
	if got := served("").DNSNames; !slices.Equal(got, []string{"gw.example.test"}) {
		t.Errorf("no SNI served %q, want the first name's", got)
	}
	for _, want := range []string{"acme: order created", "acme: TXT record set", "acme: TXT record visible", "servers=1",
		"acme: challenge accepted", "acme: certificate stored", "acme: TXT record removed", "acme: serving certificate"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if s.Challenges() < 2 {
		t.Errorf("Challenges() = %d, want 2 or more", s.Challenges())
	}
	smqtest.WaitUntil(t, "the TXT records removed", func() bool {
		return len(bind.TXT(t, "_acme-challenge.example.test.")) == 0 && len(bind.TXT(t, "_acme-challenge.gw.example.test.")) == 0
	})

	// Renewal: due four seconds after issuance; a new serial is served.
	smqtest.WaitUntilWithin(t, issueWait, "a renewed certificate", func() bool {
		now := s.Leaves()
		return len(now) == 2 && serial(now[0]) != serial(first[0]) && serial(now[1]) != serial(first[1])
	})
	if !strings.Contains(logs.String(), "acme: renewing certificate") {
		t.Error("log lacks the renewal")
	}
	stop()

	// The cache: key and chain, PEM, under each name, as autocert keeps
	// them, and the account key autocert's.
	for _, name := range []string{"gw.example.test", "*.example.test", "acme_account+key"} {
		data, err := os.ReadFile(filepath.Join(cache, name))
		if err != nil {
			t.Fatal(err)
		}
		b, rest := pem.Decode(data)
		if b == nil || b.Type != "EC PRIVATE KEY" {
			t.Fatalf("cache %s: first block %v, want EC PRIVATE KEY", name, b)
		}
		if c, _ := pem.Decode(rest); name != "acme_account+key" && (c == nil || c.Type != "CERTIFICATE") {
			t.Errorf("cache %s: no certificate after the key", name)
		}
	}

	// A restart with the CA gone serves the cached certificates.
	held := s.Leaves()
	pb.Stop()
	cfg.RenewBefore = 0
	again, err := certs.NewDNS01(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, again)
	smqtest.WaitUntil(t, "the cached certificates", func() bool { return len(again.Leaves()) == 2 })
	for i, l := range again.Leaves() {
		if !l.Equal(held[i]) {
			t.Errorf("restart serves %s %s, want the cached %s", l.DNSNames, serial(l), serial(held[i]))
		}
	}
}

// TestDNS01Failures: each failing step is named in the error logged, and
// the TXT record is removed also after a failure.
func TestDNS01Failures(t *testing.T) {
	bind, pb := dnsCA(t)
	noop := filepath.Join(t.TempDir(), "noop-hook")
	if err := os.WriteFile(noop, []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	wrong := rfc2136(bind)
	wrong.Secret = "bm90IHRoZSBzZWNyZXQsIG5vdCB0aGUgc2VjcmV0ISE="
	unknownZone := rfc2136(bind)
	unknownZone.Zone = "gw.example.test"
	for _, tc := range []struct {
		name   string
		solver certs.DNSSolver
		noWait bool // no propagation check: the CA looks at once
		want   []string
	}{
		{"wrong secret", wrong, false, []string{"acme: step failed: setting the TXT record", "TSIG key rejected (NOTAUTH/BADSIG)"}},
		{"unknown zone", unknownZone, false, []string{"acme: step failed: setting the TXT record", `server is not authoritative for zone \"gw.example.test.\" (NOTAUTH)`}},
		{"record not visible", &dns01.Hook{Path: noop}, false, []string{"acme: TXT record set", "acme: step failed: waiting for the TXT record to be visible",
			"TXT record _acme-challenge.gw.example.test. not visible after", "acme: TXT record removed"}},
		{"CA validation", &dns01.Hook{Path: noop}, true, []string{"acme: challenge accepted", "acme: step failed: CA validation",
			"urn:ietf:params:acme:error:unauthorized", "acme: TXT record removed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &smqtest.SyncBuffer{}
			cfg := certs.DNS01Config{
				ACMEConfig: certs.ACMEConfig{Domains: []string{"gw.example.test"}, DirectoryURL: pb.DirectoryURL, DirectoryRoots: pb.CAPool,
					CacheDir: t.TempDir(), Retry: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))},
				Solver: tc.solver,
			}
			if !tc.noWait {
				cfg.Propagation = &dns01.Propagation{Servers: []string{bind.Addr}, Timeout: 500 * time.Millisecond, Interval: 50 * time.Millisecond}
			}
			s, err := certs.NewDNS01(cfg)
			if err != nil {
				t.Fatal(err)
			}
			run(t, s)
			smqtest.WaitUntilWithin(t, issueWait, "the failure logged", func() bool { return strings.Contains(logs.String(), "acme: cannot obtain certificate") })
			for _, w := range tc.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs)
				}
			}
			if strings.Contains(logs.String(), bind.KeySecret) || strings.Contains(logs.String(), wrong.Secret) {
				t.Errorf("a secret is in the log:\n%s", logs)
			}
			if n := len(s.Leaves()); n != 0 {
				t.Errorf("%d certificates after a failure", n)
			}
		})
	}
}
