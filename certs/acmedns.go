package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// DNSSolver sets and removes the TXT records of DNS-01 challenges.
// Package certs/dns01 has two: by RFC 2136 dynamic update, and by an exec
// hook.
type DNSSolver interface {
	// Present sets the TXT record fqdn ("_acme-challenge.example.com.")
	// with value, next to any others of the name.
	Present(ctx context.Context, fqdn, value string) error
	// CleanUp removes that record, and only it.
	CleanUp(ctx context.Context, fqdn, value string) error
}

// DNSPropagation waits until a TXT record set by a DNSSolver is answered
// by the zone's authoritative servers, returning the servers asked.
// *dns01.Propagation is one.
type DNSPropagation interface {
	Wait(ctx context.Context, fqdn, value string) (servers []string, err error)
}

// accountKeyName is the cache entry of the ACME account key: autocert's,
// so that both paths use one account per CacheDir.
const accountKeyName = "acme_account+key"

// issueTimeout bounds one issuance, propagation wait excluded.
const issueTimeout = 5 * time.Minute

// DNS01Config configures a DNS01 source: ACMEConfig's fields mean what
// they mean there, and the challenge is answered by Solver.
type DNS01Config struct {
	ACMEConfig
	// Solver sets the TXT records. Required.
	Solver DNSSolver
	// Propagation waits for each record before the CA is told to look.
	// Nil: no wait (a solver that returns only once the record is
	// served).
	Propagation DNSPropagation
}

// DNS01 is a Source that obtains certificates from an ACME CA by the
// DNS-01 challenge, with golang.org/x/crypto/acme: for names the CA
// cannot reach, and for wildcards ("*.example.com"). It shares ACME's
// upkeep — Run, the inventory, the retry and renewal rules, the cache
// layout and account key (autocert's), the choice by SNI — and differs
// only in how a certificate is obtained: one order per name, each of its
// authorizations answered by setting "_acme-challenge.NAME" (a wildcard's
// is that of its base name) through Solver, waiting for Propagation,
// accepting the challenge, and removing the record whatever happened.
// DNS01 renews by itself, RenewBefore ahead of expiry.
type DNS01 struct {
	cfg       DNS01Config
	log       *slog.Logger
	u         *upkeep
	cache     autocert.DirCache
	transport *http.Transport

	challenges atomic.Uint64

	clientMu sync.Mutex
	client   *acme.Client // registered
}

// NewDNS01 checks cfg and returns a DNS01 source. Nothing is requested
// until Run.
func NewDNS01(cfg DNS01Config) (*DNS01, error) {
	names, errs := normaliseNames("certs: acme dns-01", cfg.Domains, true)
	if cfg.CacheDir == "" {
		errs = append(errs, errors.New("certs: acme dns-01: no cache directory"))
	}
	if cfg.Solver == nil {
		errs = append(errs, errors.New("certs: acme dns-01: no DNS solver"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.Domains = names
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = autocert.DefaultACMEDirectory
	}
	s := &DNS01{cfg: cfg, log: cfg.Logger, cache: autocert.DirCache(cfg.CacheDir)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("directory", cfg.DirectoryURL, "challenge", "dns-01")
	s.transport = http.DefaultTransport.(*http.Transport).Clone()
	s.transport.Proxy = http.ProxyFromEnvironment
	if cfg.DirectoryRoots != nil {
		s.transport.TLSClientConfig = &tls.Config{RootCAs: cfg.DirectoryRoots, MinVersion: tls.VersionTLS12}
	}
	s.u = &upkeep{names: names, retry: cfg.Retry, retryMax: cfg.RetryMax, check: cfg.Check,
		before: cfg.RenewBefore, log: s.log, obtain: s.obtain}
	s.u.defaults()
	return s, nil
}

// GetCertificate returns the certificate of the client's server name: the
// name's own, else a wildcard's covering it (one label deep), else the
// first domain's. Only certificates Run has obtained are served.
func (s *DNS01) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name, c := s.u.choose(hello.ServerName)
	if c == nil {
		return nil, fmt.Errorf("certs: acme: no certificate for %q yet", name)
	}
	return c, nil
}

// Domains returns the configured domains, normalised.
func (s *DNS01) Domains() []string { return s.u.Domains() }

// Leaves returns the certificates held as of the last check, in the order
// of the domains.
func (s *DNS01) Leaves() []*x509.Certificate { return s.u.Leaves() }

// Want is the number of domains.
func (s *DNS01) Want() int { return s.u.Want() }

// Challenges returns how many DNS-01 challenges have been answered (the
// record set and seen, and the CA told to look).
func (s *DNS01) Challenges() uint64 { return s.challenges.Load() }

// Run obtains a certificate for every domain now — from the cache when it
// holds a valid one — and keeps them, as ACME.Run does; it also wakes at
// each certificate's renewal point and renews it. An issuance in progress
// when ctx ends is abandoned (its TXT record removed).
func (s *DNS01) Run(ctx context.Context) {
	defer s.transport.CloseIdleConnections()
	s.u.Run(ctx)
}

// obtain returns name's certificate: the one held unless it is due for
// renewal, else the cached one if valid and not due, else a new one.
func (s *DNS01) obtain(ctx context.Context, name string) (*tls.Certificate, error) {
	now := time.Now()
	s.u.mu.Lock()
	held := s.u.held[name]
	s.u.mu.Unlock()
	if held != nil && !s.u.due(held.Leaf, now) {
		return held, nil
	}
	if c, err := s.load(ctx, name, now); err == nil && !s.u.due(c.Leaf, now) {
		return c, nil
	} else if err != nil && !errors.Is(err, autocert.ErrCacheMiss) {
		s.log.Warn("acme: cached certificate unusable: obtaining a new one", "domain", name, "err", err)
	}
	if held != nil {
		s.log.Info("acme: renewing certificate", "domain", name, "not_after", held.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return s.issue(ctx, name)
}

// cacheKey is name's entry in the cache: autocert's ECDSA key, the name.
func cacheKey(name string) string { return name }

// load reads name's certificate from the cache, in autocert's format:
// the private key and the chain, PEM, in one entry.
func (s *DNS01) load(ctx context.Context, name string, now time.Time) (*tls.Certificate, error) {
	data, err := s.cache.Get(ctx, cacheKey(name))
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil, fmt.Errorf("certs: acme: cache entry %q: %w", cacheKey(name), err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	switch {
	case now.After(c.Leaf.NotAfter):
		return nil, fmt.Errorf("certs: acme: cached certificate for %q expired %s", name, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case !namesExactly(c.Leaf, name):
		return nil, fmt.Errorf("certs: acme: cached certificate is for %q, not %q", c.Leaf.DNSNames, name)
	}
	return &c, nil
}

// namesExactly reports whether leaf names name exactly (a wildcard as itself).
func namesExactly(leaf *x509.Certificate, name string) bool {
	for _, n := range leaf.DNSNames {
		if strings.EqualFold(strings.TrimSuffix(n, "."), name) {
			return true
		}
	}
	return false
}

// store writes c to the cache in autocert's format.
func (s *DNS01) store(ctx context.Context, name string, c *tls.Certificate) error {
	var buf bytes.Buffer
	if err := encodeECKey(&buf, c.PrivateKey.(*ecdsa.PrivateKey)); err != nil {
		return err
	}
	for _, b := range c.Certificate {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: b}); err != nil {
			return err
		}
	}
	return s.cache.Put(ctx, cacheKey(name), buf.Bytes())
}

func encodeECKey(w *bytes.Buffer, key *ecdsa.PrivateKey) error {
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return pem.Encode(w, &pem.Block{Type: "EC PRIVATE KEY", Bytes: b})
}

// acmeClient returns the registered client, registering the account (the
// cached key, or a new one cached) the first time.
func (s *DNS01) acmeClient(ctx context.Context) (*acme.Client, error) {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	key, err := s.accountKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("certs: acme: account key: %w", err)
	}
	c := &acme.Client{
		Key:          key,
		DirectoryURL: s.cfg.DirectoryURL,
		UserAgent:    "smqgw",
		HTTPClient:   &http.Client{Transport: &logTransport{base: s.transport, log: s.log}},
	}
	var contact []string
	if s.cfg.Email != "" {
		contact = []string{"mailto:" + s.cfg.Email}
	}
	_, err = c.Register(ctx, &acme.Account{Contact: contact, ExternalAccountBinding: s.cfg.EAB}, acme.AcceptTOS)
	var ae *acme.Error
	if err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) && !(errors.As(err, &ae) && ae.StatusCode == http.StatusConflict) {
		return nil, fmt.Errorf("certs: acme: registering the account: %w", err)
	}
	s.client = c
	return c, nil
}

// accountKey reads the account key from the cache (autocert's entry and
// format), or makes one and stores it.
func (s *DNS01) accountKey(ctx context.Context) (crypto.Signer, error) {
	data, err := s.cache.Get(ctx, accountKeyName)
	if errors.Is(err, autocert.ErrCacheMiss) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := encodeECKey(&buf, key); err != nil {
			return nil, err
		}
		return key, s.cache.Put(ctx, accountKeyName, buf.Bytes())
	}
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || !strings.Contains(b.Type, "PRIVATE") {
		return nil, fmt.Errorf("cache entry %q holds no PEM private key", accountKeyName)
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cache entry %q: %w", accountKeyName, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("cache entry %q: unsupported key type %T", accountKeyName, k)
	}
	return signer, nil
}

// issue orders a certificate for name, answers its authorizations, and
// stores and returns it. Each failure says which step failed.
func (s *DNS01) issue(ctx context.Context, name string) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, issueTimeout+s.propagationBound())
	defer cancel()
	client, err := s.acmeClient(ctx)
	if err != nil {
		return nil, err
	}
	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		return nil, fmt.Errorf("certs: acme: creating the order: %w", err)
	}
	s.log.Info("acme: order created", "domain", name, "order", order.URI)
	for _, zurl := range order.AuthzURLs {
		if err := s.authorize(ctx, client, name, zurl); err != nil {
			return nil, err
		}
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("certs: acme: waiting for the order to be ready: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, key)
	if err != nil {
		return nil, err
	}
	der, _, err := client.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		return nil, fmt.Errorf("certs: acme: finalizing the order: %w", err)
	}
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		return nil, fmt.Errorf("certs: acme: the CA's certificate: %w", err)
	}
	if !namesExactly(leaf, name) {
		return nil, fmt.Errorf("certs: acme: the CA's certificate is for %q, not %q", leaf.DNSNames, name)
	}
	c := &tls.Certificate{Certificate: der, PrivateKey: key, Leaf: leaf}
	if err := s.store(ctx, name, c); err != nil {
		// Served anyway; the next restart asks the CA again.
		s.log.Error("acme: cannot store certificate in cache", "domain", name, "err", err)
	} else {
		s.log.Info("acme: certificate stored", "domain", name, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
			"issuer", leaf.Issuer.CommonName, "serial", leaf.SerialNumber.Text(16))
	}
	return c, nil
}

// propagationBound is an upper bound of one propagation wait, for the
// issuance's deadline.
func (s *DNS01) propagationBound() time.Duration {
	if p, ok := s.cfg.Propagation.(interface{ Bound() time.Duration }); ok {
		return p.Bound()
	}
	return 10 * time.Minute
}

// authorize answers the authorization at zurl by DNS-01 unless it is valid
// already.
func (s *DNS01) authorize(ctx context.Context, client *acme.Client, name, zurl string) error {
	z, err := client.GetAuthorization(ctx, zurl)
	if err != nil {
		return fmt.Errorf("certs: acme: fetching the authorization: %w", err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == "dns-01" {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("certs: acme: the CA offers no dns-01 challenge for %q", z.Identifier.Value)
	}
	value, err := client.DNS01ChallengeRecord(chal.Token)
	if err != nil {
		return err
	}
	// A wildcard's identifier is its base name.
	fqdn := "_acme-challenge." + strings.TrimPrefix(z.Identifier.Value, "*.") + "."
	log := s.log.With("domain", name, "record", fqdn)
	if err := s.cfg.Solver.Present(ctx, fqdn, value); err != nil {
		log.Error("acme: step failed: setting the TXT record", "err", err)
		return fmt.Errorf("certs: acme: setting the TXT record: %w", err)
	}
	log.Info("acme: TXT record set")
	defer func() {
		// Always, also when ctx has ended: a record left behind is
		// harmless but untidy.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := s.cfg.Solver.CleanUp(cctx, fqdn, value); err != nil {
			log.Warn("acme: cannot remove the TXT record", "err", err)
			return
		}
		log.Info("acme: TXT record removed")
	}()
	if p := s.cfg.Propagation; p != nil {
		start := time.Now()
		servers, err := p.Wait(ctx, fqdn, value)
		if err != nil {
			log.Error("acme: step failed: waiting for the TXT record to be visible", "err", err)
			return fmt.Errorf("certs: acme: waiting for the TXT record: %w", err)
		}
		log.Info("acme: TXT record visible", "servers", len(servers), "after", time.Since(start).Round(time.Millisecond).String())
	}
	if _, err := client.Accept(ctx, chal); err != nil {
		log.Error("acme: step failed: accepting the challenge", "err", err)
		return fmt.Errorf("certs: acme: accepting the challenge: %w", err)
	}
	s.challenges.Add(1)
	log.Info("acme: challenge accepted")
	if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
		log.Error("acme: step failed: CA validation", "err", err)
		return fmt.Errorf("certs: acme: CA validation of %s: %w", fqdn, err)
	}
	log.Info("acme: challenge validated")
	return nil
}
