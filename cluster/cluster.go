// Package cluster starts what one smqgw node needs to join a cluster over
// NATS and hands back the connection the embedded broker uses
// (broker.Cluster.Conn): either an in-process nats-server that routes to
// the other nodes (embedded mode: no NATS to run; its client port is on
// loopback behind a random token), or a
// connection to an existing NATS cluster (external mode).
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/internal/redact"
)

// Defaults of Config's zero fields.
const (
	DefaultClusterName    = "smqgw"
	DefaultConnectTimeout = 10 * time.Second
	// DefaultRoutePort is the port of a route address written without one.
	DefaultRoutePort = 6222
)

// Config configures a Node: embedded mode (Listen, Routes) or external
// mode (NATS), not both.
type Config struct {
	// Name names the node, unique in the cluster: the embedded server's
	// name and the NATS connection's. Required.
	Name string

	// Logger receives the node's lines: the embedded server's at debug
	// (its warnings and errors at warn), the connection's losses and
	// recoveries. Nil discards.
	Logger *slog.Logger

	// Listen is the host:port of the embedded server's route listener,
	// where the other nodes connect (port 0 picks a free port, see
	// Node.RouteAddr). Empty in external mode.
	Listen string

	// Routes are the other nodes' route addresses, host:port or
	// nats-route://host:port. A node routes to each and keeps retrying;
	// listing this node's own address is harmless.
	Routes []string

	// ClusterName is the NATS cluster name, the same on every node. Zero
	// means DefaultClusterName.
	ClusterName string

	// Certificate, with CAs, turns on route TLS with mutual verification:
	// it is presented both to the nodes that connect here and to those
	// this node connects to (so it needs the serverAuth and clientAuth
	// extended key usages, or none), and the peers' certificates must
	// chain to CAs. A node dialing a route checks the peer's certificate
	// against the route's host.
	Certificate certs.Source
	CAs         *x509.CertPool

	// Insecure allows routes without TLS on addresses other than
	// loopback: anyone who reaches the route port can then read and
	// publish every message. Without it, plain routes are refused unless
	// Listen and every route are on loopback.
	Insecure bool

	// NATS are the URLs of an existing NATS cluster (nats://, tls://),
	// credentials in them allowed (user:password@ or token@); they never
	// appear in logs or errors. External mode.
	NATS []string
	// NATSTLS, if set, makes the connection use TLS with it (roots, client
	// certificate). Nil: TLS only for tls:// URLs, with the system roots.
	NATSTLS *tls.Config
	// Creds is a NATS credentials file (JWT and NKey seed). Optional.
	Creds string

	// ConnectTimeout bounds the start: the embedded server getting ready,
	// or the first connection to NATS. Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
}

// Node is a started cluster node: its NATS connection and, in embedded
// mode, its server.
type Node struct {
	name   string
	log    *slog.Logger
	ns     *server.Server // nil in external mode
	nc     *nats.Conn
	closed chan struct{} // closed by the connection's ClosedHandler
	token  string        // the embedded server's client token
}

// Start starts a node: the embedded server and its connection to it, or
// the connection to an external NATS, which must succeed within
// ConnectTimeout (later losses are retried for ever).
func Start(cfg Config) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: no node name")
	}
	if len(cfg.NATS) > 0 && (cfg.Listen != "" || len(cfg.Routes) > 0) {
		return nil, errors.New("cluster: both an external NATS and an embedded server's routes: choose one")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	n := &Node{name: cfg.Name, log: log, closed: make(chan struct{})}
	opts := []nats.Option{
		nats.Name("smqgw " + cfg.Name),
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.Timeout(timeout),
		nats.DrainTimeout(5 * time.Second),
		nats.ClosedHandler(func(*nats.Conn) { close(n.closed) }),
	}
	if len(cfg.NATS) > 0 {
		if err := n.connect(cfg, opts); err != nil {
			return nil, err
		}
		return n, nil
	}
	if err := n.serve(cfg, timeout); err != nil {
		return nil, err
	}
	nc, err := nats.Connect("", append(opts, nats.InProcessServer(n.ns), nats.Token(n.token))...)
	if err != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
		return nil, fmt.Errorf("cluster: connecting to the embedded NATS server: %w", err)
	}
	n.nc = nc
	return n, nil
}

// serve starts the embedded server and waits until it listens for routes.
func (n *Node) serve(cfg Config, timeout time.Duration) error {
	if cfg.Listen == "" && len(cfg.Routes) > 0 {
		return errors.New("cluster: routes but no listen address: the other nodes could not route back")
	}
	// The broker's connection is in-process. The server still listens for
	// clients, on a random loopback port behind a random token: with
	// DontListen, nats-server v2.15.3 never starts its routes (StartRouting
	// waits for a client listener that never comes).
	token, err := randomToken()
	if err != nil {
		return err
	}
	opts := &server.Options{
		ServerName:    cfg.Name,
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Authorization: token,
		NoSigs:        true,
	}
	n.token = token
	opts.Cluster.Name = cfg.ClusterName
	if opts.Cluster.Name == "" {
		opts.Cluster.Name = DefaultClusterName
	}
	opts.Cluster.PoolSize = -1 // one route per peer: Routes counts peers
	if cfg.Listen != "" {
		host, port, err := splitAddr(cfg.Listen)
		if err != nil {
			return fmt.Errorf("cluster: listen address %q: %w", cfg.Listen, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Cluster.Host, opts.Cluster.Port = host, port
	}
	if opts.Routes, err = RouteURLs(cfg.Routes); err != nil {
		return err
	}
	if cfg.Certificate != nil {
		if cfg.CAs == nil {
			return errors.New("cluster: route TLS needs the CAs that verify the peers")
		}
		opts.Cluster.TLSConfig = RouteTLS(cfg.Certificate, cfg.CAs)
		opts.Cluster.TLSTimeout = 5
	} else if !cfg.Insecure && !loopbackOnly(cfg.Listen, opts.Routes) {
		return errors.New("cluster: routes without TLS off loopback: set a certificate and CAs, or allow it explicitly (insecure)")
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("cluster: embedded NATS server: %w", err)
	}
	l := &logger{log: n.log.With("from", "nats-server"), fatal: make(chan string, 1)}
	ns.SetLoggerV2(l, true, false, false)
	ns.Start()
	deadline := time.Now().Add(timeout)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-l.fatal:
			ns.Shutdown()
			ns.WaitForShutdown()
			return fmt.Errorf("cluster: embedded NATS server (route listener %q): %s", cfg.Listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			return fmt.Errorf("cluster: embedded NATS server not ready after %s", timeout)
		}
	}
	n.ns = ns
	return nil
}

// connect connects to an external NATS.
func (n *Node) connect(cfg Config, opts []nats.Option) error {
	var secrets []string
	redacted := make([]string, len(cfg.NATS))
	for i, s := range cfg.NATS {
		redacted[i] = RedactURL(s)
		if u, err := url.Parse(s); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok {
				secrets = append(secrets, p)
			} else if t := u.User.Username(); t != "" {
				secrets = append(secrets, t) // a token
			}
		}
	}
	hide := func(err error) error {
		if err == nil || len(secrets) == 0 {
			return err
		}
		return &redactedError{err: err, secrets: secrets}
	}
	opts = append(opts,
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() || nc.IsDraining() {
				return // Close
			}
			n.log.Warn("lost the connection to NATS: retrying", "err", hide(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			n.log.Info("reconnected to NATS", "url", RedactURL(nc.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.log.Warn("NATS error", "err", hide(err))
		}),
	)
	if cfg.NATSTLS != nil {
		opts = append(opts, nats.Secure(cfg.NATSTLS))
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	nc, err := nats.Connect(strings.Join(cfg.NATS, ","), opts...)
	if err != nil {
		return fmt.Errorf("cluster: connecting to NATS %s: %w", strings.Join(redacted, ", "), hide(err))
	}
	n.nc = nc
	return nil
}

// Conn returns the node's NATS connection, made with nats.NoEcho(), for
// broker.Cluster.Conn. It stays the Node's: Close closes it.
func (n *Node) Conn() *nats.Conn { return n.nc }

// Name returns the node's name.
func (n *Node) Name() string { return n.name }

// Embedded reports whether the node runs its own NATS server.
func (n *Node) Embedded() bool { return n.ns != nil }

// Routes returns the number of route connections of the embedded server:
// the peers it is connected to. Zero in external mode.
func (n *Node) Routes() int {
	if n.ns == nil {
		return 0
	}
	return n.ns.NumRoutes()
}

// RouteAddr returns the address the embedded server listens on for
// routes (the port picked when Listen's was 0), nil in external mode or
// without a listener.
func (n *Node) RouteAddr() net.Addr {
	if n.ns == nil {
		return nil
	}
	if a := n.ns.ClusterAddr(); a != nil {
		return a
	}
	return nil
}

// Connected reports whether the node's connection to NATS is up.
func (n *Node) Connected() bool { return n.nc != nil && n.nc.IsConnected() }

// Close drains and closes the connection (after the broker's Shutdown),
// then shuts the embedded server down.
func (n *Node) Close() error {
	var err error
	if n.nc != nil {
		if err = n.nc.Drain(); err == nil {
			select {
			case <-n.closed:
			case <-time.After(10 * time.Second):
			}
		}
		n.nc.Close()
		if errors.Is(err, nats.ErrConnectionClosed) {
			err = nil
		}
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	if err != nil {
		return fmt.Errorf("cluster: closing the NATS connection: %w", err)
	}
	return nil
}

// RouteTLS is the route TLS configuration: nats-server uses one
// tls.Config both to accept routes and to dial them, so the certificate
// is the server's and the client's, and peers are verified both ways
// against cas.
func RouteTLS(cert certs.Source, cas *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cert.GetCertificate,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert.GetCertificate(&tls.ClientHelloInfo{SignatureSchemes: cri.SignatureSchemes})
		},
		RootCAs:    cas,
		ClientCAs:  cas,
		ClientAuth: tls.RequireAndVerifyClientCert,
	}
}

// RouteURLs makes route addresses (host:port, or nats-route:// URLs)
// URLs for nats-server. A host without a port gets DefaultRoutePort.
func RouteURLs(routes []string) ([]*url.URL, error) {
	var urls []*url.URL
	for _, r := range routes {
		u, err := ParseRoute(r)
		if err != nil {
			return nil, err
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// ParseRoute parses one route address: host:port or
// nats-route://host:port, without user info, path or query.
func ParseRoute(r string) (*url.URL, error) {
	s := r
	if !strings.Contains(s, "://") {
		s = "nats-route://" + s
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("cluster: invalid route %q: %v", RedactURL(r), errors.Unwrap(err))
	case u.Scheme != "nats-route":
		return nil, fmt.Errorf("cluster: invalid route %q: scheme %q (want host:port or nats-route://host:port)", RedactURL(r), u.Scheme)
	case u.User != nil:
		return nil, fmt.Errorf("cluster: invalid route %q: user info is not supported (routes authenticate by TLS certificates)", RedactURL(r))
	case u.Hostname() == "":
		return nil, fmt.Errorf("cluster: invalid route %q: no host", r)
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("cluster: invalid route %q: a path, query or fragment", r)
	}
	if p := u.Port(); p == "" {
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(DefaultRoutePort))
	} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("cluster: invalid route %q: port %q", r, p)
	}
	u.Path = ""
	return u, nil
}

// RedactURL hides the secret of a URL's user info: the password of
// user:password@, or the token of token@.
func RedactURL(s string) string { return redact.Secret(s) }

// IsLoopback reports whether host is a loopback IP address or
// "localhost".
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// loopbackOnly reports whether the route listener and every route are on
// loopback.
func loopbackOnly(listen string, routes []*url.URL) bool {
	if listen != "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil || !IsLoopback(host) {
			return false
		}
	}
	for _, u := range routes {
		if !IsLoopback(u.Hostname()) {
			return false
		}
	}
	return true
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// randomToken is a secret for the embedded server's loopback client port.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// redactedError hides secrets in an error's text, keeping the error for
// errors.Is and errors.As.
type redactedError struct {
	err     error
	secrets []string
}

func (e *redactedError) Error() string {
	s := e.err.Error()
	for _, x := range e.secrets {
		s = strings.ReplaceAll(s, x, "xxxxx")
	}
	return s
}

func (e *redactedError) Unwrap() error { return e.err }

// logger routes the embedded server's log to slog: notices and debug
// lines at debug, warnings and errors at warn. A fatal error (the route
// port cannot be bound) is also handed to Start.
type logger struct {
	log   *slog.Logger
	fatal chan string
}

func (l *logger) Noticef(format string, v ...any) { l.debug(format, v) }
func (l *logger) Debugf(format string, v ...any)  { l.debug(format, v) }
func (l *logger) Tracef(format string, v ...any)  {}
func (l *logger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *logger) Errorf(format string, v ...any)  { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *logger) debug(format string, v []any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, v...))
	}
}

func (l *logger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Warn(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
