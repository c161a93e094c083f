package certs

import (
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
)

// Reloading is one certificate chain and key loaded from files and
// replaced by Reload: the gateway's own client certificate toward a TLS
// upstream. Safe for concurrent use.
type Reloading struct {
	pair Pair
	cur  atomic.Pointer[tls.Certificate]
}

// NewReloading loads pair.
func NewReloading(pair Pair) (*Reloading, error) {
	r := &Reloading{pair: pair}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again; on an error the certificate in use stays.
func (r *Reloading) Reload() error {
	c, err := LoadPair(r.pair)
	if err != nil {
		return err
	}
	r.cur.Store(c)
	return nil
}

// Paths returns the certificate and key file names.
func (r *Reloading) Paths() []string { return []string{r.pair.CertFile, r.pair.KeyFile} }

// GetClientCertificate returns the certificate in use, for
// tls.Config.GetClientCertificate.
func (r *Reloading) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Leaves returns the leaf of the certificate in use.
func (r *Reloading) Leaves() []*x509.Certificate { return leafOf(r.cur.Load()) }

// Want is 1.
func (r *Reloading) Want() int { return 1 }
