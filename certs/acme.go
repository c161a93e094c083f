package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Defaults of ACMEConfig.
const (
	// DefaultACMERetry is the first wait after a failed attempt to obtain a
	// certificate; it doubles up to DefaultACMERetryMax. autocert itself
	// remembers a failure for a minute, so shorter waits gain nothing.
	DefaultACMERetry    = time.Minute
	DefaultACMERetryMax = time.Hour
	// DefaultACMECheck is how often held certificates are checked: a
	// missing one is requested again, one past its renewal point is
	// reported.
	DefaultACMECheck = 6 * time.Hour
	// MaxACMERenewBefore is the longest RenewBefore autocert honours.
	MaxACMERenewBefore = 30 * 24 * time.Hour
)

// ACMEConfig configures an ACME source.
type ACMEConfig struct {
	// Domains are the names certificates are obtained for, one ECDSA
	// certificate each; only these are ever requested (autocert's host
	// policy), and only by Run, never by a client's handshake. Required.
	// Case and a trailing dot do not matter. Wildcards are not possible:
	// they need the DNS-01 challenge.
	Domains []string
	// Email is the account's contact address, for the CA's expiry and
	// incident notices. Optional.
	Email string
	// DirectoryURL is the ACME directory. Default: Let's Encrypt production
	// (autocert.DefaultACMEDirectory).
	DirectoryURL string
	// DirectoryRoots verify the directory's HTTPS certificate, for a
	// private ACME CA. Nil: the system roots.
	DirectoryRoots *x509.CertPool
	// EAB is the External Account Binding some CAs require. Optional.
	EAB *acme.ExternalAccountBinding
	// CacheDir keeps the account key and the certificates across restarts
	// (0700). Required: without it every restart asks the CA again and
	// soon meets its rate limits.
	CacheDir string
	// RenewBefore is how long before expiry a certificate is renewed.
	// Zero: autocert's rule, 30 days or a third of the lifetime if less.
	// More than MaxACMERenewBefore counts as MaxACMERenewBefore.
	RenewBefore time.Duration
	// Retry and RetryMax bound the waits between failed attempts (defaults
	// DefaultACMERetry, DefaultACMERetryMax); Check is the period of the
	// expiry check (DefaultACMECheck).
	Retry, RetryMax, Check time.Duration
	// Logger receives what happens: certificates obtained, challenges
	// answered, failures. Nil discards.
	Logger *slog.Logger
}

// ACME is an ACMESource: it obtains certificates for its domains from an
// ACME CA with golang.org/x/crypto/acme/autocert, answering TLS-ALPN-01 on
// the TLS listeners that serve it and HTTP-01 through HTTPHandler. Run
// obtains every certificate at start-up, so no client waits for issuance,
// and keeps watching them; autocert renews ahead of expiry. Certificates
// and the account key are kept in CacheDir, so a restart while the CA is
// unreachable serves the cached certificates.
type ACME struct {
	cfg ACMEConfig
	log *slog.Logger
	m   *autocert.Manager
	u   *upkeep // its obtain is autocert's

	alpnChallenges atomic.Uint64
	httpChallenges atomic.Uint64

	transport *http.Transport // to the CA
}

// NewACME checks cfg and returns an ACME source. Nothing is requested until
// Run, or a client's handshake, asks for a certificate.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	names, errs := normaliseNames("certs: acme", cfg.Domains, false)
	if cfg.CacheDir == "" {
		errs = append(errs, errors.New("certs: acme: no cache directory"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.Domains = names
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = autocert.DefaultACMEDirectory
	}
	// autocert renews at most 30 days ahead, whatever it is asked.
	cfg.RenewBefore = min(cfg.RenewBefore, MaxACMERenewBefore)
	a := &ACME{cfg: cfg, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("directory", cfg.DirectoryURL)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	a.transport = tr
	tr.Proxy = http.ProxyFromEnvironment
	if cfg.DirectoryRoots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.DirectoryRoots, MinVersion: tls.VersionTLS12}
	}
	a.u = &upkeep{names: names, retry: cfg.Retry, retryMax: cfg.RetryMax, check: cfg.Check,
		before: cfg.RenewBefore, log: a.log, obtain: a.obtain, renews: true}
	a.u.defaults()
	whitelist := autocert.HostWhitelist(cfg.Domains...)
	a.m = &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  &logCache{DirCache: autocert.DirCache(cfg.CacheDir), a: a},
		// The host is host:port when HTTP-01 is validated on another
		// port than 80; the port says nothing about the name.
		HostPolicy: func(ctx context.Context, host string) error {
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			return whitelist(ctx, host)
		},
		RenewBefore:            cfg.RenewBefore,
		Email:                  cfg.Email,
		ExternalAccountBinding: cfg.EAB,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			UserAgent:    "smqgw",
			HTTPClient:   &http.Client{Transport: &logTransport{base: tr, log: a.log}},
		},
	}
	return a, nil
}

// GetCertificate answers a TLS-ALPN-01 probe with its challenge
// certificate, and any other handshake with the certificate of its server
// name. A name outside Domains, or no name (a client connecting by IP
// address), gets the first domain's certificate, as a web server's default
// host would. Only certificates Run has obtained are served: a handshake
// never starts an issuance (which would bypass Run's back-off and spend the
// CA's rate limits), and a handshake before the first certificate arrives
// fails at once.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
		c, err := a.m.GetCertificate(hello)
		if err == nil {
			a.alpnChallenges.Add(1)
			a.log.Info("acme: answered tls-alpn-01 challenge", "domain", hello.ServerName)
		} else {
			a.log.Debug("acme: tls-alpn-01 probe without a pending challenge", "domain", hello.ServerName, "err", err)
		}
		return c, err
	}
	name, held := a.u.choose(hello.ServerName)
	if held == nil {
		return nil, fmt.Errorf("certs: acme: no certificate for %q yet", name)
	}
	// autocert holds it in memory (and renews it): this returns without
	// contacting the CA.
	return a.m.GetCertificate(ecdsaHello(name))
}

// ecdsaHello is a ClientHello for name from a client that takes ECDSA,
// which is what Run obtains.
func ecdsaHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        name,
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
}

// HTTPHandler answers HTTP-01 challenges and passes every other request to
// fallback (nil: autocert's redirect to https).
func (a *ACME) HTTPHandler(fallback http.Handler) http.Handler {
	h := a.m.HTTPHandler(fallback)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			a.httpChallenges.Add(1)
			a.log.Debug("acme: http-01 challenge request", "host", r.Host, "client", r.RemoteAddr)
		}
		h.ServeHTTP(w, r)
	})
}

// Challenges returns how many TLS-ALPN-01 and HTTP-01 challenge requests
// have been answered (HTTP-01: received).
func (a *ACME) Challenges() (tlsALPN, http01 uint64) {
	return a.alpnChallenges.Load(), a.httpChallenges.Load()
}

// Domains returns the configured domains.
func (a *ACME) Domains() []string { return a.u.Domains() }

// Leaves returns the certificates held as of the last check, in the
// order of the domains.
func (a *ACME) Leaves() []*x509.Certificate { return a.u.Leaves() }

// Want is the number of domains.
func (a *ACME) Want() int { return a.u.Want() }

// Run obtains a certificate for every domain now — from the cache when it
// holds a valid one — and then checks them every Check period until ctx
// ends. A failure is logged with the CA's answer and retried after Retry,
// doubling up to RetryMax; certificates already held keep being served
// meanwhile. Renewal itself is autocert's: it starts RenewBefore ahead of
// expiry and retries on its own; a certificate found past its renewal point
// is logged as a warning.
//
// A request to the CA in progress when ctx ends is left to finish in the
// background (autocert bounds it by 5 minutes); Run itself returns at once.
func (a *ACME) Run(ctx context.Context) {
	defer a.transport.CloseIdleConnections()
	a.u.Run(ctx)
}

// obtain asks autocert for domain's certificate as a modern client would
// (ECDSA), returning early when ctx ends.
func (a *ACME) obtain(ctx context.Context, domain string) (*tls.Certificate, error) {
	hello := ecdsaHello(domain)
	type result struct {
		c   *tls.Certificate
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := a.m.GetCertificate(hello)
		done <- result{c, err}
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-done:
		return r.c, r.err
	}
}

// logCache is autocert's DirCache, logging each certificate stored: the
// only sign autocert gives of an issuance or a renewal.
type logCache struct {
	autocert.DirCache
	a *ACME
}

func (c *logCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.DirCache.Put(ctx, key, data)
	domain, _ := strings.CutSuffix(key, "+rsa")
	if strings.Contains(domain, "+") || key == "acme_account+key" {
		return err // account key, challenge tokens
	}
	if err != nil {
		c.a.log.Error("acme: cannot store certificate in cache", "domain", domain, "err", err)
		return err
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if leaf, perr := x509.ParseCertificate(b.Bytes); perr == nil {
				c.a.log.Info("acme: certificate issued", "domain", domain,
					"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "issuer", leaf.Issuer.CommonName)
			}
			break
		}
	}
	return nil
}

// logTransport logs requests to the CA that fail, which autocert would
// otherwise keep to itself during renewals.
type logTransport struct {
	base http.RoundTripper
	log  *slog.Logger
}

func (t *logTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	switch {
	case err != nil:
		t.log.Warn("acme: request to the CA failed", "method", r.Method, "url", r.URL.Redacted(), "err", err)
	case resp.StatusCode >= 500:
		t.log.Warn("acme: CA answered with an error", "method", r.Method, "url", r.URL.Redacted(), "status", resp.Status)
	}
	return resp, err
}
