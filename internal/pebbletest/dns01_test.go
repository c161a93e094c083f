//go:build unix

package pebbletest

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/smqgw/smqgw/internal/bindtest"
)

// TestIssueDNS01WithBIND runs Pebble against a real BIND and gets a
// certificate for a name and a wildcard by DNS-01, the TXT records set by
// TSIG-signed RFC 2136 updates; an unanswered challenge fails.
func TestIssueDNS01WithBIND(t *testing.T) {
	t.Parallel()
	b := bindtest.Start(t, bindtest.Options{})
	p := Start(t, Options{DNSServer: b.Addr})
	if p.DNSAddr != b.Addr || p.ChallSrvURL != "" {
		t.Errorf("DNSAddr %q, ChallSrvURL %q; want %q and none", p.DNSAddr, p.ChallSrvURL, b.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newClient(t, p)
	if _, err := cl.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("register: %v", err)
	}

	// authorize orders names, answers each dns-01 challenge when answer is
	// set, and returns the first authorization error.
	authorize := func(answer bool, names ...string) (*acme.Order, error) {
		t.Helper()
		order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(names...))
		if err != nil {
			t.Fatalf("new order: %v", err)
		}
		for _, u := range order.AuthzURLs {
			z, err := cl.GetAuthorization(ctx, u)
			if err != nil {
				t.Fatalf("authorization: %v", err)
			}
			var chal *acme.Challenge
			for _, c := range z.Challenges {
				if c.Type == "dns-01" {
					chal = c
				}
			}
			if chal == nil {
				t.Fatalf("no dns-01 challenge for %s in %+v", z.Identifier.Value, z.Challenges)
			}
			// For *.example.test the identifier is example.test, with
			// Wildcard set: both are validated at _acme-challenge.NAME.
			name := "_acme-challenge." + z.Identifier.Value + "."
			if answer {
				value, err := cl.DNS01ChallengeRecord(chal.Token)
				if err != nil {
					t.Fatal(err)
				}
				b.Update(t, name, value)
				defer b.Delete(t, name, value)
				if got := b.TXT(t, name); !slices.Contains(got, value) {
					t.Fatalf("TXT %s = %q after the update, want %q", name, got, value)
				}
			}
			if _, err := cl.Accept(ctx, chal); err != nil {
				t.Fatalf("accept: %v", err)
			}
			if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
				return nil, err
			}
		}
		return order, nil
	}

	var authzErr *acme.AuthorizationError
	// BIND answered NXDOMAIN (rcode 3), which tells a real lookup from a
	// DNS server that did not answer.
	const nxdomain = "returned an unsuccessful response: 3"
	if _, err := authorize(false, "unanswered.example.test"); !errors.As(err, &authzErr) {
		t.Errorf("unanswered DNS-01 challenge: got %v, want an authorization error", err)
	} else if !strings.Contains(err.Error(), nxdomain) {
		t.Errorf("unanswered DNS-01 challenge: %v, want Pebble's %q", err, nxdomain)
	}

	names := []string{"host.example.test", "*.example.test"}
	order, err := authorize(true, names...)
	if err != nil {
		t.Fatalf("answered DNS-01 challenges: %v", err)
	}
	leaf, inter := finalize(t, ctx, cl, order, names...)
	got := slices.Clone(leaf.DNSNames)
	slices.Sort(got)
	if want := []string{"*.example.test", "host.example.test"}; !slices.Equal(got, want) {
		t.Errorf("certificate names %q, want %q", got, want)
	}
	roots := p.Roots(t)
	for _, name := range []string{"host.example.test", "gw.example.test"} {
		opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("certificate for %s does not verify against Roots: %v", name, err)
		}
	}
}
