package tlsterm_test

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/tlsterm"
)

// TestNewPolicyErrors checks the exact message of every validation error,
// and that all problems of one configuration are reported together.
func TestNewPolicyErrors(t *testing.T) {
	t.Parallel()
	pool := x509.NewCertPool()
	goodPin := "sha256:" + strings.Repeat("A", 43) + "="
	tests := []struct {
		name string
		cfg  tlsterm.PolicyConfig
		want []string // the lines of the joined error
	}{
		{"pin without prefix", tlsterm.PolicyConfig{Mode: tlsterm.Require, Pins: []string{"xyz"}},
			[]string{`tlsterm: invalid pin "xyz": expected sha256:<base64>`}},
		{"pin with other hash", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, Pins: []string{"sha1:AAAA"}},
			[]string{`tlsterm: invalid pin "sha1:AAAA": expected sha256:<base64>`}},
		{"pin not base64", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, Pins: []string{"sha256:not base64!"}},
			[]string{`tlsterm: invalid pin "sha256:not base64!": expected sha256:<base64>: illegal base64 data at input byte 3`}},
		{"pin hex", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, Pins: []string{"sha256:" + strings.Repeat("ab", 32)}},
			[]string{`tlsterm: invalid pin "sha256:` + strings.Repeat("ab", 32) + `": digest is 48 bytes, want 32`}},
		{"pin too short", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, Pins: []string{"sha256:AAAA"}},
			[]string{`tlsterm: invalid pin "sha256:AAAA": digest is 3 bytes, want 32`}},
		{"CN character class", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, AllowCN: []string{"device-[0-9]"}},
			[]string{`tlsterm: invalid allow_cn pattern "device-[0-9]": only * is a wildcard: write \[ for a literal [`}},
		{"OU empty pattern", tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: pool, AllowOU: []string{""}},
			[]string{`tlsterm: invalid allow_ou pattern "": empty pattern`}},
		{"DNS question mark", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, AllowDNS: []string{"dev?.example.com"}},
			[]string{`tlsterm: invalid allow_dns pattern "dev?.example.com": only * is a wildcard: write \? for a literal ?`}},
		{"URI bad escape", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, AllowURI: []string{`spiffe://example.org/\d`}},
			[]string{`tlsterm: invalid allow_uri pattern "spiffe://example.org/\\d": \d is not an escape: only \*, \\, \?, \[ and \] are`}},
		{"URI trailing backslash", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, AllowURI: []string{`spiffe://x/\`}},
			[]string{`tlsterm: invalid allow_uri pattern "spiffe://x/\\": pattern ends in a lone \`}},
		{"require without CAs or pins", tlsterm.PolicyConfig{Mode: tlsterm.Require, AllowCN: []string{"device-*"}},
			[]string{`tlsterm: client_auth "require" needs client_ca (a CA bundle) or pins: without either no client certificate can be verified`}},
		{"optional without CAs or pins", tlsterm.PolicyConfig{Mode: tlsterm.Optional},
			[]string{`tlsterm: client_auth "optional" needs client_ca (a CA bundle) or pins: without either no client certificate can be verified`}},
		{"off with a list", tlsterm.PolicyConfig{AllowCN: []string{"device-*"}},
			[]string{`tlsterm: client_auth "off" ignores client certificates, but allow_cn is set: use optional or require, or remove them`}},
		{"off with everything", tlsterm.PolicyConfig{ClientCAs: pool, AllowCN: []string{"a"}, AllowOU: []string{"b"}, AllowDNS: []string{"c"}, AllowURI: []string{"d"}, Pins: []string{goodPin}},
			[]string{`tlsterm: client_auth "off" ignores client certificates, but client_ca, allow_cn, allow_ou, allow_dns, allow_uri, pins are set: use optional or require, or remove them`}},
		{"unknown mode", tlsterm.PolicyConfig{Mode: 3, ClientCAs: pool},
			[]string{`tlsterm: invalid client_auth Mode(3): want off, optional or require`}},
		{"every problem at once", tlsterm.PolicyConfig{Mode: tlsterm.Require, AllowCN: []string{"ok-*", "[x]"}, AllowOU: []string{""}, Pins: []string{"bad", "sha256:AAAA"}},
			[]string{
				`tlsterm: invalid allow_cn pattern "[x]": only * is a wildcard: write \[ for a literal [`,
				`tlsterm: invalid allow_ou pattern "": empty pattern`,
				`tlsterm: invalid pin "bad": expected sha256:<base64>`,
				`tlsterm: invalid pin "sha256:AAAA": digest is 3 bytes, want 32`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tlsterm.NewPolicy(tt.cfg)
			if err == nil {
				t.Fatalf("NewPolicy accepted the configuration (%v)", p)
			}
			if p != nil {
				t.Error("NewPolicy returned a policy with its error")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("error\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestNewPolicyValid(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	pin := tlsterm.SPKIPin(ca.Client(t, "device-1").Cert)
	tests := []struct {
		name string
		cfg  tlsterm.PolicyConfig
	}{
		{"zero is off", tlsterm.PolicyConfig{}},
		{"optional with CAs", tlsterm.PolicyConfig{Mode: tlsterm.Optional, ClientCAs: ca.Pool}},
		{"require with pins only", tlsterm.PolicyConfig{Mode: tlsterm.Require, Pins: []string{pin, pin}}},
		{"require with everything", tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: ca.Pool, Pins: []string{pin},
			AllowCN: []string{"*"}, AllowOU: []string{`weird\*ou`}, AllowDNS: []string{"*.example.com"}, AllowURI: []string{"spiffe://example.org/device/*", `https://x/y\?a=b`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tlsterm.NewPolicy(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode() != tt.cfg.Mode {
				t.Errorf("Mode %v, want %v", p.Mode(), tt.cfg.Mode)
			}
		})
	}
}

// TestPolicyImmutable changes the configuration's slices and CA pool after
// NewPolicy: the policy must not see it.
func TestPolicyImmutable(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	other := testpki.NewCA(t)
	device := ca.Client(t, "device-1")
	stranger := other.Client(t, "stranger")
	pool := ca.Pool.Clone()
	cfg := tlsterm.PolicyConfig{Mode: tlsterm.Require, ClientCAs: pool, AllowCN: []string{"device-*"}}
	p := mustPolicy(t, cfg)
	cfg.AllowCN[0] = "nobody"
	pool.AddCert(other.Cert)

	for _, tt := range []struct {
		leaf *testpki.Leaf
		ok   bool
	}{{device, true}, {stranger, false}} {
		d := p.Check(stateOf(tt.leaf), time.Now())
		if d.Accepted() != tt.ok {
			t.Errorf("%s: decision %v %q, want accepted %v", tt.leaf.Cert.Subject.CommonName, d.Code, d.Reason, tt.ok)
		}
	}
}

// stateOf is the ConnectionState a server would see from a client sending
// leaf's chain, for tests of Check that need no connection.
func stateOf(leaf *testpki.Leaf) *tls.ConnectionState {
	cs := &tls.ConnectionState{}
	for _, der := range leaf.TLS.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		cs.PeerCertificates = append(cs.PeerCertificates, c)
	}
	return cs
}
