package tlsterm_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/tlsterm"
)

func TestServerConfigFields(t *testing.T) {
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
// ServerConfig server (ECDSA certificate).
func TestServerConfigHandshakes(t *testing.T) {
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
			l, err := tls.Listen("tcp", "127.0.0.1:0", tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return &leaf.TLS, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			served := make(chan error, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					served <- err
					return
				}
				defer c.Close()
				err = tlsterm.Handshake(context.Background(), c.(*tls.Conn), waitTimeout)
				if err == nil {
					_, err = c.Write([]byte{0})
				}
				served <- err
			}()
			cfg := tt.client.Clone()
			cfg.RootCAs = ca.Pool
			c, err := tls.Dial("tcp", l.Addr().String(), cfg)
			if err == nil {
				defer c.Close()
				_, err = io.ReadFull(c, make([]byte, 1))
			}
			serr := <-served
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

// TestHandshake runs Handshake against clients that stay silent, send
// garbage, complete the handshake, or arrive after the context ended.
func TestHandshake(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Server(t)
	cfg := tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &leaf.TLS, nil })
	const short = 200 * time.Millisecond
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		client  func(net.Conn) // runs on the dialled end, which it owns
		ctx     context.Context
		timeout time.Duration
		check   func(t *testing.T, err error, remote string, took time.Duration)
	}{
		{
			name:    "silent client times out",
			client:  func(net.Conn) {},
			ctx:     context.Background(),
			timeout: short,
			check: func(t *testing.T, err error, remote string, took time.Duration) {
				want := fmt.Sprintf("tlsterm: handshake with %s timed out after 200ms: context deadline exceeded", remote)
				if err == nil || err.Error() != want {
					t.Fatalf("error %v, want %q", err, want)
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Error("error does not match context.DeadlineExceeded")
				}
				var ne interface{ Timeout() bool }
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Error("error is not a timeout")
				}
				if took < short || took > 5*time.Second {
					t.Errorf("returned after %v, want about %v", took, short)
				}
			},
		},
		{
			name:    "garbage",
			client:  func(c net.Conn) { c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) },
			ctx:     context.Background(),
			timeout: waitTimeout,
			check: func(t *testing.T, err error, remote string, _ time.Duration) {
				var rh tls.RecordHeaderError
				if !errors.As(err, &rh) || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("error %v, want a tls.RecordHeaderError", err)
				}
				if !strings.HasPrefix(err.Error(), "tlsterm: handshake with "+remote+": tls: ") {
					t.Errorf("error %q", err)
				}
			},
		},
		{
			name: "real client, default timeout",
			client: func(c net.Conn) {
				tc := tls.Client(c, &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
				tc.Handshake()
			},
			ctx: context.Background(),
			check: func(t *testing.T, err error, _ string, _ time.Duration) {
				if err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:    "context already cancelled",
			client:  func(net.Conn) {},
			ctx:     cancelled,
			timeout: waitTimeout,
			check: func(t *testing.T, err error, remote string, _ time.Duration) {
				want := fmt.Sprintf("tlsterm: handshake with %s: context canceled", remote)
				if err == nil || err.Error() != want || !errors.Is(err, context.Canceled) {
					t.Fatalf("error %v, want %q", err, want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			cc, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			sc, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			clientDone := make(chan struct{})
			go func() {
				defer close(clientDone)
				defer cc.Close()
				tt.client(cc)
				io.Copy(io.Discard, cc) // stay connected until the server closes
			}()
			start := time.Now()
			err = tlsterm.Handshake(tt.ctx, tls.Server(sc, cfg), tt.timeout)
			took := time.Since(start)
			sc.Close()
			<-clientDone
			tt.check(t, err, sc.RemoteAddr().String(), took)
		})
	}
}
