// Package app is smqgw's composition root: it turns a validated
// configuration into live parts — certificate sources, client-certificate
// policies, upstream dialers, the embedded broker, the gateway's listeners
// and routes — and keeps the parts built from files current (reload on
// SIGHUP, polling for changed files, ACME renewals). Package gateway takes
// those parts ready-made and never sees the configuration.
package app

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/certs/dns01"
	"github.com/smqgw/smqgw/cluster"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// Built is a gateway configuration turned into live parts.
type Built struct {
	Config gateway.Config
	// Broker is the embedded broker, nil when no route uses it.
	Broker *broker.Broker
	// DevCAFile is the dev CA certificate clients must trust, "" when no
	// dev certificates are served.
	DevCAFile string
	// Metrics are the gateway's metrics, shared by every rebuild.
	Metrics *gateway.Metrics
	// kept is an earlier build's embedded broker when this one uses none:
	// its sessions go on, and a later rebuild that wants one reuses it.
	kept *broker.Broker
	// node is the embedded broker's cluster node ([cluster]), nil when it
	// has none. It lives as long as the broker: every rebuild keeps it.
	node *cluster.Node
	// nodeCert is the node's route certificate: each build points it at
	// its own source of the same [certs] block, so that the files stay
	// watched and reloaded after a reload. Nil without route TLS.
	nodeCert *routeCert

	log     *slog.Logger
	every   time.Duration // file polling
	mu      sync.Mutex    // serialises reloads: SIGHUP and the file watch
	reloads []*reloadable
	runs    []func(context.Context) // ACME sources
}

// reloadable is something built from files that can be read again.
type reloadable struct {
	what  string // for logs: `certs "web"`, `listener "edge" route "/smq" client CAs`
	files []string
	watch *certs.Watcher
	load  func() error // replaces the live value, or leaves it and says why
}

// Build turns a validated configuration into a gateway Config: it loads
// certificates (creating the dev PKI where asked, preparing ACME where
// configured), client CA bundles and CRLs, and makes the upstream dialers
// and the embedded broker. Every problem is reported. Run keeps the
// certificates current once the gateway has started.
func Build(cfg *config.Config, log *slog.Logger) (*Built, error) {
	return build(cfg, log, nil, nil, nil, nil)
}

// Rebuild builds cfg as Build does, for Gateway.Apply on a reload: the
// new parts share b's metrics and embedded broker, so sessions on the
// broker and the counts go on. b is left as it was; stop its Run and Run
// the new one.
func (b *Built) Rebuild(cfg *config.Config) (*Built, error) {
	nb, err := build(cfg, b.log, b.Metrics, b.broker(), b.node, b.nodeCert)
	if nb != nil && nb.Broker == nil {
		nb.kept = b.broker() // for a later configuration that uses it again
	}
	return nb, err
}

// ClusterNode returns the embedded broker's cluster node, nil when it has
// none. Close it after the broker's Shutdown.
func (b *Built) ClusterNode() *cluster.Node { return b.node }

// EmbeddedBroker returns the embedded broker in use, or kept from an
// earlier build for its sessions; nil if no build had one. Shut it down
// after the gateway.
func (b *Built) EmbeddedBroker() *broker.Broker { return b.broker() }

func (b *Built) broker() *broker.Broker {
	if b.Broker != nil {
		return b.Broker
	}
	return b.kept
}

// build makes the parts of cfg; br, node and nodeCert are the embedded
// broker, its cluster node and the node's route certificate an earlier
// build made, kept (nil at the start).
func build(cfg *config.Config, log *slog.Logger, m *gateway.Metrics, br *broker.Broker, node *cluster.Node, nodeCert *routeCert) (*Built, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = gateway.NewMetrics()
	}
	b := &Built{log: log, every: cfg.WatchInterval, Metrics: m, node: node, nodeCert: nodeCert, Config: gateway.Config{Logger: log, Metrics: m, Limits: cfg.Limits}}
	var errs []error
	var started *cluster.Node // by this build: closed if it fails
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("gateway: "+format, args...)) }
	if f := cfg.SessionTicketKeyFile; f != "" {
		keys, err := certs.LoadTicketKeys(f)
		if err != nil {
			errs = append(errs, err)
		}
		b.Config.SessionTicketKeys = keys
	}

	ups := map[string]upstream.Upstream{}
	for name, u := range cfg.Upstreams {
		dialer, err := proxyclient.Parse(u.Proxy, proxyclient.Options{
			Forward: &net.Dialer{KeepAlive: upstream.DefaultKeepAlive}})
		if err != nil {
			fail("upstream %q: %v", name, err)
			continue
		}
		tc, err := b.upstreamTLS(u)
		if err != nil {
			fail("upstream %q: %v", name, err)
			continue
		}
		d, err := upstream.New(upstream.Config{Name: name, URLs: u.URLs, DialTimeout: u.DialTimeout,
			Backoff: u.Backoff, Logger: log, TLS: tc, Dialer: dialer,
			OnAttempt: m.UpstreamAttempt(name)})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ups[name] = d
	}
	sources := map[string]certs.Source{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Certs)) {
		src, err := b.source(cfg, cfg.Certs[name])
		if err != nil {
			fail("certs %q: %v", name, err)
			continue
		}
		sources[name] = src
		b.Config.Certs = append(b.Config.Certs, gateway.CertSet{Name: "certs " + name, Certs: src})
	}
	policies := map[string]*access.Policy{}
	for name, rules := range cfg.Permissions {
		p, err := access.Compile(rules)
		if err != nil {
			fail("permissions %q: %v", name, err)
			continue
		}
		policies[name] = p
	}
	for _, l := range cfg.Listeners {
		gl := gateway.Listener{Name: l.Name, Addr: l.Address, ProxyProtocolFrom: l.ProxyProtocolFrom}
		if l.TLS != "" {
			gl.Certs = sources[l.TLS]
		}
		for _, r := range l.Routes {
			route := &gateway.Route{Path: r.Path, AllowedOrigins: r.AllowedOrigins, Console: r.Console,
				RefuseTemporary: r.TemporaryFailures == config.TemporaryRefuse,
				Access:          policies[r.Permissions], AccessName: r.Permissions}
			if r.Upstream == config.Embedded {
				if b.Broker == nil && br != nil {
					b.Broker = br
				}
				if b.Broker == nil {
					// The gateway logs each session; the broker's own line
					// for it is only for debugging.
					var blog *slog.Logger
					if cfg.Log.Level <= slog.LevelDebug {
						blog = log.With("component", "broker")
					}
					bc := brokerConfig(cfg.Broker, blog)
					if cfg.Cluster != nil {
						node, err := b.startNode(cfg.Cluster, sources)
						if err != nil {
							return nil, errors.Join(append(errs, err)...)
						}
						b.node, started = node, node
						bc.Cluster = clusterConfig(cfg.Cluster, node)
					}
					b.Broker = broker.New(bc)
				}
				registerBroker(m, b.Broker, b.node)
				route.Upstream = &upstream.Embedded{Broker: b.Broker}
			} else {
				route.Upstream = ups[r.Upstream]
			}
			if err := b.policy(l.Name, r, route); err != nil {
				fail("listener %q route %q: %v", l.Name, r.Path, err)
			}
			gl.Routes = append(gl.Routes, route)
		}
		b.Config.Listeners = append(b.Config.Listeners, gl)
	}
	// ACME HTTP-01 listeners, redirecting the rest to the first TLS
	// listener serving the block.
	for _, name := range slices.Sorted(maps.Keys(cfg.Certs)) {
		c := cfg.Certs[name]
		a, ok := sources[name].(certs.ACMESource)
		if !ok || c.ACMEHTTPAddress == "" {
			continue
		}
		port := ""
		for _, l := range cfg.Listeners {
			if l.TLS == name {
				_, p, _ := net.SplitHostPort(l.Address)
				if n, err := net.LookupPort("tcp", p); err == nil { // ":https" too
					port = strconv.Itoa(n)
				}
				break
			}
		}
		b.Config.Listeners = append(b.Config.Listeners, gateway.Listener{Name: "acme-http/" + name,
			Addr: c.ACMEHTTPAddress, Handler: a.HTTPHandler(redirectHTTPS(port))})
	}
	if err := errors.Join(errs...); err != nil {
		if started != nil {
			_ = started.Close()
		}
		return nil, err
	}
	if b.nodeCert != nil && started == nil {
		if src, ok := sources[b.nodeCert.block]; ok {
			b.nodeCert.set(src) // this build's, whose files this build watches
		}
	}
	return b, nil
}

// routeCert is a cluster node's route certificate, from the source of
// the [certs] block of its start; rebuilds swap in their own.
type routeCert struct {
	block string
	src   atomic.Pointer[certs.Source]
}

func (c *routeCert) set(src certs.Source) { c.src.Store(&src) }

func (c *routeCert) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return (*c.src.Load()).GetCertificate(hello)
}

// startNode starts the embedded broker's cluster node and logs it.
func (b *Built) startNode(cl *config.Cluster, sources map[string]certs.Source) (*cluster.Node, error) {
	cc := cluster.Config{Name: cl.Name, Logger: b.log.With("component", "cluster"), Listen: cl.Listen,
		Routes: cl.Routes, ClusterName: cl.SubjectPrefix, Insecure: cl.Insecure, NATS: cl.NATS, Creds: cl.NATSCreds}
	if cl.TLS != "" {
		src, ok := sources[cl.TLS]
		if !ok {
			return nil, fmt.Errorf("gateway: cluster: no certificate from [certs.%s]", cl.TLS)
		}
		var err error
		if cc.CAs, _, err = certs.LoadCAs(cl.CA); err != nil {
			return nil, fmt.Errorf("gateway: cluster: %w", err)
		}
		b.nodeCert = &routeCert{block: cl.TLS}
		b.nodeCert.set(src)
		cc.Certificate = b.nodeCert
	}
	if cl.NATSCA != "" || cl.NATSCert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		var err error
		if cl.NATSCA != "" {
			if tc.RootCAs, _, err = certs.LoadCAs(cl.NATSCA); err != nil {
				return nil, fmt.Errorf("gateway: cluster: %w", err)
			}
		}
		if cl.NATSCert != "" {
			c, err := tls.LoadX509KeyPair(cl.NATSCert, cl.NATSKey)
			if err != nil {
				return nil, fmt.Errorf("gateway: cluster: NATS client certificate %q: %w", cl.NATSCert, err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		cc.NATSTLS = tc
	}
	node, err := cluster.Start(cc)
	if err != nil {
		return nil, err
	}
	if node.Embedded() {
		listen := cl.Listen
		if a := node.RouteAddr(); a != nil {
			listen = a.String()
		}
		b.log.Info("cluster node started", "node", cl.Name, "mode", "embedded", "listen", listen,
			"routes", cl.Routes, "tls", cl.TLS != "", "subject_prefix", cl.SubjectPrefix)
	} else {
		urls := make([]string, len(cl.NATS))
		for i, u := range cl.NATS {
			urls[i] = cluster.RedactURL(u)
		}
		b.log.Info("cluster node started", "node", cl.Name, "mode", "external", "nats", urls,
			"subject_prefix", cl.SubjectPrefix)
	}
	return node, nil
}

// clusterConfig is the embedded broker's cluster configuration.
func clusterConfig(cl *config.Cluster, node *cluster.Node) *broker.Cluster {
	return &broker.Cluster{Conn: node.Conn(), Node: cl.Name, Prefix: cl.SubjectPrefix, Heartbeat: cl.Heartbeat,
		PeerTimeout: cl.PeerTimeout, RequestTimeout: cl.RequestTimeout}
}

// brokerConfig is the embedded broker's configuration: the [broker]
// limits, and its log.
func brokerConfig(l limits.Broker, log *slog.Logger) broker.Config {
	return broker.Config{Logger: log, MaxTopicName: l.MaxTopicName, MaxTopicsPerSession: l.MaxTopicsPerSession,
		QueueBytes: l.QueueBytes, QueueMessages: l.QueueMessages, MaxQueuedBytes: l.MaxQueuedBytes}
}

// source is a certificate source that accounts for what it serves.
type source interface {
	certs.Source
	certs.Inventory
}

// source makes the certificate source of a [certs] block.
func (b *Built) source(cfg *config.Config, c *config.Certs) (source, error) {
	switch {
	case c.Dev:
		dev, err := certs.EnsureDev(filepath.Join(cfg.StateDir, "dev"), c.Hosts)
		if err != nil {
			return nil, err
		}
		b.DevCAFile = dev.CAFile
		return (*certs.Static)(&dev.Server), nil
	case c.DNS01():
		return b.dns01(cfg, c)
	case c.ACME():
		return b.acme(cfg, c)
	}
	pairs := []certs.Pair{{CertFile: c.CertFile, KeyFile: c.KeyFile}}
	for _, p := range c.Pairs {
		pairs = append(pairs, certs.Pair{CertFile: p.CertFile, KeyFile: p.KeyFile})
	}
	f, err := certs.NewFiles(pairs...)
	if err != nil {
		return nil, err
	}
	for i, leaf := range f.Leaves() {
		if time.Now().After(leaf.NotAfter) {
			b.log.Warn("serving an expired certificate: replace it (the new files are picked up without a restart)",
				"certs", c.Name, "file", pairs[i].CertFile, "expired", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	b.reloadable(fmt.Sprintf("certs %q", c.Name), f.Paths(), f.Reload)
	return f, nil
}

// upstreamTLS is the TLS client configuration of an upstream, nil when
// none of its URLs uses TLS: its roots, server name, and the gateway's
// client certificate, reloaded like the server certificates.
func (b *Built) upstreamTLS(u *config.Upstream) (*tls.Config, error) {
	if !u.TLS() {
		return nil, nil
	}
	tc := &tls.Config{ServerName: u.ServerName, MinVersion: tls.VersionTLS12}
	if u.CAFile != "" {
		var err error
		if tc.RootCAs, _, err = certs.LoadCAs(u.CAFile); err != nil {
			return nil, err
		}
	}
	if u.CertFile != "" {
		c, err := certs.NewReloading(certs.Pair{CertFile: u.CertFile, KeyFile: u.KeyFile})
		if err != nil {
			return nil, err
		}
		b.Config.Certs = append(b.Config.Certs, gateway.CertSet{Name: fmt.Sprintf("upstream %s client certificate", u.Name), Certs: c})
		tc.GetClientCertificate = c.GetClientCertificate
		b.reloadable(fmt.Sprintf("upstream %q client certificate", u.Name), c.Paths(), c.Reload)
	}
	return tc, nil
}

// acme makes the ACME source of a [certs] block. Its cache is
// StateDir/acme/HOST-HASH, HASH from the whole directory URL: certificates
// from one CA are never served as another's (staging and production, or
// two provisioners of one private CA).
func (b *Built) acme(cfg *config.Config, c *config.Certs) (*certs.ACME, error) {
	ac, err := b.acmeConfig(cfg, c)
	if err != nil {
		return nil, err
	}
	a, err := certs.NewACME(ac)
	if err != nil {
		return nil, err
	}
	b.runs = append(b.runs, a.Run)
	return a, nil
}

// acmeConfig is the ACME configuration of a [certs] block, whichever its
// challenge.
func (b *Built) acmeConfig(cfg *config.Config, c *config.Certs) (certs.ACMEConfig, error) {
	var err error
	ac := certs.ACMEConfig{
		Domains:      c.ACMEDomains,
		Email:        c.ACMEEmail,
		DirectoryURL: c.ACMEDirectory,
		CacheDir:     filepath.Join(cfg.StateDir, "acme", ACMECacheName(c.ACMEDirectory)),
		RenewBefore:  c.ACMERenewBefore,
		Logger:       b.log.With("certs", c.Name),
	}
	if c.ACMEDirectoryCA != "" {
		if ac.DirectoryRoots, _, err = certs.LoadCAs(c.ACMEDirectoryCA); err != nil {
			return ac, err
		}
	}
	if c.ACMEEABKeyID != "" {
		ac.EAB = &acme.ExternalAccountBinding{KID: c.ACMEEABKeyID, Key: c.ACMEEABKey}
	}
	return ac, nil
}

// dns01 makes the DNS-01 ACME source of a [certs] block: the ACME
// account and cache as acme's, the TXT records set by RFC 2136 (the TSIG
// secret read from its file now, never logged) or by the hook.
func (b *Built) dns01(cfg *config.Config, c *config.Certs) (*certs.DNS01, error) {
	ac, err := b.acmeConfig(cfg, c)
	if err != nil {
		return nil, err
	}
	dc := certs.DNS01Config{ACMEConfig: ac}
	prop := &dns01.Propagation{Zone: c.DNSZone, Servers: c.DNSResolvers, Timeout: c.DNSPropagationTimeout}
	if c.DNSHook != "" {
		dc.Solver = &dns01.Hook{Path: c.DNSHook}
	} else {
		secret := c.DNSTSIGSecret
		if c.DNSTSIGSecretFile != "" {
			if secret, err = dns01.ReadSecret(c.DNSTSIGSecretFile); err != nil {
				return nil, fmt.Errorf("certs %q: dns_tsig_secret_file: %w", c.Name, err)
			}
		}
		u := &dns01.RFC2136{Server: c.DNSServer, Zone: c.DNSZone, KeyName: c.DNSTSIGName, Algorithm: c.DNSTSIGAlgorithm, Secret: secret}
		dc.Solver = u
		prop.Fallback = u.Addr()
	}
	dc.Propagation = prop
	s, err := certs.NewDNS01(dc)
	if err != nil {
		return nil, err
	}
	b.runs = append(b.runs, s.Run)
	return s, nil
}

// ACMECacheName is the directory under StateDir/acme that keeps the
// account and certificates of one ACME directory URL: its host (":" made
// "_") and the first 8 hex digits of the URL's SHA-256.
func ACMECacheName(directory string) string {
	host := directory
	if u, err := url.Parse(directory); err == nil && u.Host != "" {
		host = u.Host
	}
	sum := sha256.Sum256([]byte(directory))
	return strings.ReplaceAll(host, ":", "_") + "-" + hex.EncodeToString(sum[:4])
}

// policy builds a route's client-certificate policy and arranges for it
// to be rebuilt when its CA or CRL files change.
func (b *Built) policy(listener string, r config.Route, route *gateway.Route) error {
	load := func() (*tlsterm.Policy, error) {
		p, warnings, err := buildPolicy(r, time.Now())
		for _, w := range warnings {
			b.log.Warn("client CRL: "+w, "listener", listener, "route", r.Path)
		}
		return p, err
	}
	p, err := load()
	if err != nil {
		return err
	}
	route.Policy = p
	if files := append(slices.Clone(r.ClientCA), r.ClientCRL...); len(files) > 0 {
		b.reloadable(fmt.Sprintf("listener %q route %q client CAs and CRLs", listener, r.Path), files, func() error {
			p, err := load()
			if err != nil {
				return err
			}
			route.SetPolicy(p)
			return nil
		})
	}
	return nil
}

func (b *Built) reloadable(what string, files []string, load func() error) {
	b.reloads = append(b.reloads, &reloadable{what: what, files: files, watch: certs.NewWatcher(files...), load: load})
}

// Reload reads every certificate, key, client CA and CRL file again now,
// as on SIGHUP. Each part that loads replaces the live one for new
// handshakes and sessions; a part that fails keeps serving what it had,
// and is logged and returned (all failures joined).
func (b *Built) Reload() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, r := range b.reloads {
		if err := b.reload(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *Built) reload(r *reloadable) error {
	r.watch.Changed() // what is loaded now is the new baseline
	if err := r.load(); err != nil {
		b.log.Error("reload failed: keeping the current one in service", "what", r.what, "err", err)
		return fmt.Errorf("gateway: reloading %s: %w", r.what, err)
	}
	b.log.Info("reloaded", "what", r.what)
	return nil
}

// Run keeps certificates current until ctx ends: ACME sources obtain their
// certificates at once and watch them, and certificate, key, CA and CRL
// files are reloaded when they change (polled every watch_interval). Call
// it once the gateway has started: TLS-ALPN-01 is answered on its
// listeners.
func (b *Built) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, run := range b.runs {
		wg.Go(func() { run(ctx) })
	}
	defer wg.Wait()
	if len(b.reloads) == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		for _, r := range b.reloads {
			if r.watch.Changed() {
				_ = b.reload(r)
			}
		}
		b.mu.Unlock()
	}
}

// redirectHTTPS sends GET and HEAD requests to the same URL over https (on
// port, unless it is 443 or unknown) and refuses others.
func redirectHTTPS(port string) http.Handler {
	if port == "443" || port == "0" {
		port = ""
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "smqgw: use HTTPS", http.StatusBadRequest)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		switch {
		case port != "":
			host = net.JoinHostPort(host, port)
		case strings.Contains(host, ":"):
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// buildPolicy makes a route's client-certificate policy (nil when off)
// from its files, with warnings about stale CRLs.
func buildPolicy(r config.Route, now time.Time) (*tlsterm.Policy, []string, error) {
	if r.ClientAuth == tlsterm.Off {
		return nil, nil, nil
	}
	var err error
	pc := tlsterm.PolicyConfig{Mode: r.ClientAuth, AllowCN: r.AllowCN, AllowOU: r.AllowOU,
		AllowDNS: r.AllowDNS, AllowURI: r.AllowURI, Pins: r.Pins}
	if len(r.ClientCA) > 0 {
		if pc.ClientCAs, _, err = certs.LoadCAs(r.ClientCA...); err != nil {
			return nil, nil, err
		}
	}
	var warnings []string
	if len(r.ClientCRL) > 0 {
		if pc.CRLs, err = certs.LoadCRLs(r.ClientCRL...); err != nil {
			return nil, nil, err
		}
		warnings = certs.CRLWarnings(pc.CRLs, now)
	}
	p, err := tlsterm.NewPolicy(pc)
	return p, warnings, err
}
