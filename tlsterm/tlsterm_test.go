package tlsterm_test

import (
	"crypto/tls"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/tlsterm"
)

func TestServerConfigFields(t *testing.T) {
	t.Parallel()
	cfg := tlsterm.ServerConfig(nil)
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x", cfg.MinVersion)
	}
	if cfg.ClientAuth != tls.RequestClientCert {
		t.Errorf("ClientAuth %v, want RequestClientCert", cfg.ClientAuth)
	}
	if cfg.VerifyPeerCertificate != nil || cfg.VerifyConnection != nil {
		t.Error("a verification callback could fail the handshake over a client certificate")
	}
	if cfg.SessionTicketsDisabled {
		t.Error("session tickets disabled")
	}
	if !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) {
		t.Errorf("NextProtos %q", cfg.NextProtos)
	}
	secure := map[uint16]string{}
	for _, cs := range tls.CipherSuites() {
		secure[cs.ID] = cs.Name
	}
	if len(cfg.CipherSuites) == 0 {
		t.Error("no cipher suites: Go's defaults would apply")
	}
	for _, id := range cfg.CipherSuites {
		name, ok := secure[id]
		if !ok || !strings.HasPrefix(name, "TLS_ECDHE_") || !(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("cipher suite %s (%#04x) is not ECDHE with AEAD", tls.CipherSuiteName(id), id)
		}
	}
	// Each call returns a fresh configuration the caller may change.
	cfg.NextProtos = append(cfg.NextProtos, "acme-tls/1")
	cfg.CipherSuites[0] = 0
	if again := tlsterm.ServerConfig(nil); len(again.NextProtos) != 1 || again.CipherSuites[0] == 0 {
		t.Error("ServerConfig results share memory")
	}
}

// TestServerConfigHandshakes connects real clients with various offers to a
// Listener with a ServerConfig (ECDSA certificate).
func TestServerConfigHandshakes(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	leaf := ca.Server(t)
	tests := []struct {
		name   string
		client *tls.Config
		ok     bool
		alpn   string
	}{
		{name: "TLS 1.3 default", client: &tls.Config{NextProtos: []string{"http/1.1"}}, ok: true, alpn: "http/1.1"},
		{name: "TLS 1.3 no ALPN", client: &tls.Config{}, ok: true},
		{name: "TLS 1.2 AES-GCM", client: &tls.Config{MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, ok: true, alpn: "http/1.1"},
		{name: "TLS 1.2 ChaCha20", client: &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, ok: true},
		{name: "TLS 1.2 CBC only", client: &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}},
		// With an ECDSA certificate this would fail anyway; the suite list
		// itself is checked in TestServerConfigFields.
		{name: "TLS 1.2 RSA key exchange only", client: &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}},
		{name: "TLS 1.1", client: &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := listen(t, nil, tlsterm.ListenerConfig{Config: func() *tls.Config {
				return tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &leaf.TLS, nil })
			}})
			cfg := tt.client.Clone()
			cfg.RootCAs = ca.Pool
			c, err := tls.Dial("tcp", tl.addr, cfg)
			serr := tl.next(t).err
			if err == nil {
				defer c.Close()
				if serr == nil {
					sc := tl.nextConn(t)
					sc.Write([]byte{0})
					sc.Close()
				}
				c.SetDeadline(time.Now().Add(smqtest.WaitFor))
				_, err = io.ReadFull(c, make([]byte, 1))
			}
			if tt.ok != (err == nil) || tt.ok != (serr == nil) {
				t.Fatalf("client: %v; server: %v; want success %v", err, serr, tt.ok)
			}
			if tt.ok {
				if got := c.ConnectionState().NegotiatedProtocol; got != tt.alpn {
					t.Errorf("ALPN %q, want %q", got, tt.alpn)
				}
			} else {
				t.Logf("refused as expected: %v", serr)
			}
		})
	}
}
