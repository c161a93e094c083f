package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// Built is a gateway configuration turned into live parts.
type Built struct {
	Config Config
	// Broker is the embedded broker, nil when no route uses it.
	Broker *broker.Broker
	// DevCAFile is the dev CA certificate clients must trust, "" when no
	// dev certificates are served.
	DevCAFile string
}

// Build turns a validated configuration into a gateway Config: it loads
// certificates (creating the dev PKI where asked), client CA bundles, and
// makes the upstream dialers and the embedded broker. Every problem is
// reported.
func Build(cfg *config.Config, log *slog.Logger) (*Built, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Built{Config: Config{Logger: log, Limits: Limits{
		HandshakeTimeout: cfg.Limits.HandshakeTimeout,
		RequestTimeout:   cfg.Limits.RequestTimeout,
		ConnectTimeout:   cfg.Limits.ConnectTimeout,
		IdleTimeout:      cfg.Limits.IdleTimeout,
		PingInterval:     cfg.Limits.WSPingInterval,
		MaxMessage:       cfg.Limits.MaxMessageSize,
		MaxSessions:      cfg.Limits.MaxSessions,
		WriteTimeout:     cfg.Limits.WriteTimeout,
	}}}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("gateway: "+format, args...)) }

	ups := map[string]upstream.Upstream{}
	for name, u := range cfg.Upstreams {
		if u.Proxy != "" {
			fail("upstream %q: proxy %q: proxies are not supported yet", name, u.Proxy)
			continue
		}
		d, err := upstream.New(upstream.Config{Name: name, URLs: u.URLs, DialTimeout: u.DialTimeout,
			Backoff: u.Backoff, Logger: log})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ups[name] = d
	}
	tlsConfigs := map[string]*tls.Config{}
	for name, c := range cfg.Certs {
		cert, caFile, err := loadCerts(cfg, c)
		if err != nil {
			fail("certs %q: %v", name, err)
			continue
		}
		if caFile != "" {
			b.DevCAFile = caFile
		}
		tlsConfigs[name] = tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert, nil
		})
	}
	for _, l := range cfg.Listeners {
		gl := Listener{Name: l.Name, Addr: l.Address}
		if l.TLS != "" {
			gl.TLS = tlsConfigs[l.TLS]
		}
		for _, r := range l.Routes {
			route := &Route{Path: r.Path, AllowedOrigins: r.AllowedOrigins}
			if r.Upstream == config.Embedded {
				if b.Broker == nil {
					// The gateway logs each session; the broker's own line
					// for it is only for debugging.
					var blog *slog.Logger
					if cfg.Log.Level <= slog.LevelDebug {
						blog = log.With("component", "broker")
					}
					b.Broker = broker.New(broker.Config{Logger: blog})
				}
				route.Upstream = &upstream.Embedded{Broker: b.Broker}
			} else {
				route.Upstream = ups[r.Upstream]
			}
			policy, err := buildPolicy(r)
			if err != nil {
				fail("listener %q route %q: %v", l.Name, r.Path, err)
			}
			route.Policy = policy
			gl.Routes = append(gl.Routes, route)
		}
		b.Config.Listeners = append(b.Config.Listeners, gl)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b, nil
}

// loadCerts returns the server certificate of a [certs] block, and the dev
// CA file when the block is a dev PKI.
func loadCerts(cfg *config.Config, c *config.Certs) (*tls.Certificate, string, error) {
	if c.Dev {
		dev, err := certs.EnsureDev(filepath.Join(cfg.StateDir, "dev"), c.Hosts)
		if err != nil {
			return nil, "", err
		}
		return &dev.Server, dev.CAFile, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, "", err
	}
	return &cert, "", nil
}

// buildPolicy makes a route's client-certificate policy; nil when off.
func buildPolicy(r config.Route) (*tlsterm.Policy, error) {
	mode, err := tlsterm.ParseMode(string(r.ClientAuth))
	if err != nil {
		return nil, err
	}
	if mode == tlsterm.Off {
		return nil, nil
	}
	var pool *x509.CertPool
	if len(r.ClientCA) > 0 {
		pool = x509.NewCertPool()
		for _, f := range r.ClientCA {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("client_ca %q: no PEM certificate in it", f)
			}
		}
	}
	return tlsterm.NewPolicy(tlsterm.PolicyConfig{Mode: mode, ClientCAs: pool, AllowCN: r.AllowCN,
		AllowOU: r.AllowOU, AllowDNS: r.AllowDNS, AllowURI: r.AllowURI, Pins: r.Pins})
}
