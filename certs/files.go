package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pair names a PEM certificate chain (leaf first) and its private key.
type Pair struct {
	CertFile string
	KeyFile  string
}

// Files is a Source that serves certificates from PEM files: one or more
// pairs, chosen by the name the client asks for (SNI). Reload reads them
// again and swaps the new set in atomically; a set that fails to load is
// rejected whole and the old one stays in service.
//
// A handshake gets the first pair whose leaf covers its SNI name exactly,
// else the first covering it with a wildcard ("*.example.com" covers
// "a.example.com", one label deep), else — without SNI, as when a client
// connects by IP address — the first pair with the local IP address among
// its IP SANs, else the first pair. Among pairs for the same name, the
// first whose key the client supports wins (an ECDSA and an RSA pair for
// one name serve both kinds of client).
type Files struct {
	pairs []Pair

	mu  sync.Mutex // serialises Reload
	cur atomic.Pointer[fileSet]
}

// fileSet is one loaded, immutable generation of certificates.
type fileSet struct {
	certs    []*tls.Certificate // in Pair order; Leaf set
	exact    map[string][]*tls.Certificate
	wildcard map[string][]*tls.Certificate // by the name after "*."
	ips      map[netip.Addr][]*tls.Certificate
}

// NewFiles loads pairs, which must not be empty.
func NewFiles(pairs ...Pair) (*Files, error) {
	if len(pairs) == 0 {
		return nil, errors.New("certs: no certificate files")
	}
	f := &Files{pairs: append([]Pair(nil), pairs...)}
	set, err := loadSet(f.pairs)
	if err != nil {
		return nil, err
	}
	f.cur.Store(set)
	return f, nil
}

// Paths returns every file f reads.
func (f *Files) Paths() []string {
	var p []string
	for _, pr := range f.pairs {
		p = append(p, pr.CertFile, pr.KeyFile)
	}
	return p
}

// Reload reads every pair again. If all load, and none of the new leaves
// has expired, they replace the current set for new handshakes (open
// connections keep what they negotiated); otherwise the current set stays
// and the error says which file is wrong and why.
func (f *Files) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	set, err := loadSet(f.pairs)
	if err != nil {
		return err
	}
	now := time.Now()
	for i, c := range set.certs {
		if now.After(c.Leaf.NotAfter) {
			return fmt.Errorf("certs: %s: certificate expired %s: keeping the certificate in service",
				f.pairs[i].CertFile, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	f.cur.Store(set)
	return nil
}

// Leaves returns the leaf certificates currently served, in pair order.
func (f *Files) Leaves() []*x509.Certificate {
	set := f.cur.Load()
	leaves := make([]*x509.Certificate, len(set.certs))
	for i, c := range set.certs {
		leaves[i] = c.Leaf
	}
	return leaves
}

// Want is the number of pairs.
func (f *Files) Want() int { return len(f.pairs) }

// GetCertificate chooses a certificate for hello, as described on Files.
func (f *Files) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := f.cur.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name != "" {
		if c := pick(hello, set.exact[name]); c != nil {
			return c, nil
		}
		if _, parent, ok := strings.Cut(name, "."); ok {
			if c := pick(hello, set.wildcard[parent]); c != nil {
				return c, nil
			}
		}
	} else if hello.Conn != nil {
		if ap, err := netip.ParseAddrPort(hello.Conn.LocalAddr().String()); err == nil {
			if c := pick(hello, set.ips[ap.Addr().Unmap()]); c != nil {
				return c, nil
			}
		}
	}
	if c := pick(hello, set.certs); c != nil {
		return c, nil
	}
	return set.certs[0], nil
}

// pick returns the first of cs that hello supports, else the first, else nil.
func pick(hello *tls.ClientHelloInfo, cs []*tls.Certificate) *tls.Certificate {
	if len(cs) == 0 {
		return nil
	}
	if len(cs) > 1 {
		for _, c := range cs {
			if hello.SupportsCertificate(c) == nil {
				return c
			}
		}
	}
	return cs[0]
}

func loadSet(pairs []Pair) (*fileSet, error) {
	set := &fileSet{
		exact:    map[string][]*tls.Certificate{},
		wildcard: map[string][]*tls.Certificate{},
		ips:      map[netip.Addr][]*tls.Certificate{},
	}
	var errs []error
	for _, p := range pairs {
		c, err := LoadPair(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		set.certs = append(set.certs, c)
		for _, n := range c.Leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			if parent, ok := strings.CutPrefix(n, "*."); ok {
				set.wildcard[parent] = append(set.wildcard[parent], c)
			} else {
				set.exact[n] = append(set.exact[n], c)
			}
		}
		for _, ip := range c.Leaf.IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok {
				set.ips[a.Unmap()] = append(set.ips[a.Unmap()], c)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return set, nil
}

// LoadPair loads a PEM certificate chain and its key, checking that they
// belong together, with errors that name the file at fault.
func LoadPair(p Pair) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %s and %s: %w", p.CertFile, p.KeyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", p.CertFile, err)
		}
	}
	return &c, nil
}
