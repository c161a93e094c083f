package certs

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestACMEHandshakeNeverIssues: before Run holds a certificate, a client's
// handshake fails at once and the CA hears nothing of it.
func TestACMEHandshakeNeverIssues(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer ca.Close()
	a, err := NewACME(ACMEConfig{Domains: []string{"GW.Example.com.", "gw.example.com"}, CacheDir: t.TempDir(),
		DirectoryURL: ca.URL + "/dir"})
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Domains(); len(d) != 1 || d[0] != "gw.example.com" {
		t.Errorf("Domains() = %q, want the one normalised name", d)
	}
	for _, sni := range []string{"gw.example.com", "GW.EXAMPLE.COM.", "other.example.com", ""} {
		start := time.Now()
		_, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
		if err == nil || !strings.Contains(err.Error(), `no certificate for "gw.example.com" yet`) {
			t.Errorf("SNI %q: %v, want no certificate yet", sni, err)
		}
		if time.Since(start) > time.Second {
			t.Errorf("SNI %q: the handshake waited %v", sni, time.Since(start))
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("handshakes made %d requests to the CA", n)
	}
}

func TestNewACMEErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  ACMEConfig
		want string
	}{
		{ACMEConfig{CacheDir: "x"}, "no domains"},
		{ACMEConfig{Domains: []string{"*.example.com"}, CacheDir: "x"}, "DNS-01"},
		{ACMEConfig{Domains: []string{"localhost"}, CacheDir: "x"}, "not a fully qualified name"},
		{ACMEConfig{Domains: []string{"10.0.0.1"}, CacheDir: "x"}, "an IP address"},
		{ACMEConfig{Domains: []string{"gw.example.com"}}, "no cache directory"},
	} {
		if _, err := NewACME(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
