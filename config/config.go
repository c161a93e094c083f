// Package config is the smqgw TOML configuration: its schema, its defaults
// and its validation. It decodes a file, applies every default, checks every
// value (and that the files it names exist and are readable), and reports
// all problems at once with file:line:col. It builds no live objects: the
// gateway, tlsterm and upstream packages turn a Config into listeners,
// certificate sources and dialers.
package config

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/certs/dns01"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// The defaults of the keys Load leaves unset are defined by the packages
// that apply them: limits.Default* ([limits] and [broker]),
// upstream.DefaultDialTimeout and upstream.DefaultBackoff
// ([upstream.NAME]), certs.DefaultWatchInterval (watch_interval),
// broker.DefaultClusterPrefix, DefaultHeartbeat, DefaultPeerTimeout and
// DefaultClusterRequestTimeout ([cluster]).

// DefaultACMEDirectory is Let's Encrypt's production directory, where
// certificates come from when a [certs] block names no acme_directory.
const DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// DefaultDNSPropagationTimeout is how long a DNS-01 record may take to
// reach every authoritative server (dns_propagation_timeout).
const DefaultDNSPropagationTimeout = 2 * time.Minute

// Embedded is the upstream name of the in-process broker. No [upstream]
// block may take it.
const Embedded = "embedded"

// DefaultDevHosts are the names a dev certificate is issued for when its
// [certs] block has dev = true and no hosts.
var DefaultDevHosts = []string{"localhost", "127.0.0.1", "::1"}

// Config is a decoded, defaulted and validated configuration. Load and
// Default return one with every default applied; fields documented with a
// default hold that default when the file leaves the key out.
//
// Each key of the file is one field here, named by its toml tag; fields
// tagged config:"path" are file paths, made absolute against the directory
// of the configuration file.
type Config struct {
	// StateDir (state_dir) is where smqgw keeps state: the dev CA and
	// certificates (under StateDir/dev), ACME accounts and certificates
	// (under StateDir/acme). Default: $STATE_DIRECTORY (its
	// first entry), else $XDG_STATE_HOME/smqgw, else ~/.local/state/smqgw.
	// A relative path is resolved against the config file's directory. It
	// is "" only when no default could be found and nothing needs it.
	StateDir string `toml:"state_dir" config:"path"`

	// WatchInterval (watch_interval) is how often certificate, key, client
	// CA and CRL files are checked for changes; a change reloads them for
	// new handshakes (SIGHUP reloads them at once). Default 5s.
	WatchInterval time.Duration `toml:"watch_interval"`

	// SessionTicketKeyFile (session_ticket_key_file) holds the keys that
	// seal the TLS session tickets of every TLS listener (see
	// certs.LoadTicketKeys): gateways behind one load balancer share it so
	// that a client resumes its session on any of them. Read at start and
	// on SIGHUP. Default "": random keys of the process's own, a new one
	// every day, kept across reloads. Path absolute after Load.
	SessionTicketKeyFile string `toml:"session_ticket_key_file" config:"path"`

	Log    Log           `toml:"log"`
	Limits limits.Limits `toml:"limits"`
	Admin  Admin         `toml:"admin"`

	// Broker ([broker]) bounds what clients can make the embedded broker
	// hold: topic names, topics per session, queued bytes. Its defaults
	// are limits.Default*; it has no effect without an "embedded" route.
	Broker limits.Broker `toml:"broker"`

	// Listeners ([[listener]]), in file order. At least one.
	Listeners []Listener `toml:"listener"`

	// Upstreams ([upstream.NAME]) by name. Unused ones are allowed. The
	// name "embedded" is reserved for the in-process broker.
	Upstreams map[string]*Upstream `toml:"upstream"`

	// Certs ([certs.NAME]) by name: the certificate sources listeners
	// refer to with tls = "NAME". Unused ones are allowed.
	Certs map[string]*Certs `toml:"certs"`

	// Cluster ([cluster]) makes the embedded broker one node of a
	// cluster over NATS: clients of every node see one broker. Nil (no
	// [cluster] block): a broker on its own. Needs an "embedded" route.
	Cluster *Cluster `toml:"cluster"`

	// Permissions ([[permissions.NAME]]) are topic permissions by name,
	// each a list of rules (see package access for the rules and the topic
	// pattern language) that routes refer to with permissions = "NAME".
	// Unused ones are allowed.
	Permissions map[string][]access.Rule `toml:"permissions"`
}

// Log configures logging ([log]).
type Log struct {
	// Level (level) is the least severe level logged: "debug", "info",
	// "warn" or "error". Default "info" (the zero value).
	Level slog.Level `toml:"level"`
	// Format (format) is "text" (slog's key=value lines) or "json".
	// Default "text".
	Format string `toml:"format"`
}

// Admin is the admin endpoint ([admin]): /metrics (Prometheus), /healthz
// and /readyz over plain HTTP.
type Admin struct {
	// Address (address) is the host:port of the admin endpoint. Keep it on
	// loopback (or behind a firewall): it has no authentication. Default ""
	// (off); the zero-configuration demo uses 127.0.0.1:9090.
	Address string `toml:"address"`
}

// Listener is one listening socket ([[listener]]).
type Listener struct {
	// Name (name) identifies the listener in logs and metrics. Required,
	// unique.
	Name string `toml:"name"`
	// Address (address) is the host:port to listen on (":8443" is every
	// interface; port 0 picks a free port). Required.
	Address string `toml:"address"`
	// TLS (tls) names the [certs.NAME] block whose certificate the
	// listener serves. Default "": a plain (LAN) listener without TLS.
	TLS string `toml:"tls"`
	// Routes ([[listener.route]]), in file order. At least one.
	Routes []Route `toml:"route"`
	// ProxyProtocolFrom (proxy_protocol_from) lists the addresses and CIDRs
	// of L4 load balancers that send a PROXY protocol header (v1 or v2):
	// when set, every connection from them must carry one, and its client
	// address is used; connections from anywhere else are refused. A bare
	// address in the file is a /32 or /128 prefix; prefixes are masked
	// ("10.1.2.3/8" is 10.0.0.0/8). Default empty: no PROXY protocol.
	ProxyProtocolFrom []netip.Prefix `toml:"proxy_protocol_from"`
}

// Route maps a request path of a listener to an upstream
// ([[listener.route]]), with the client-certificate policy and the
// WebSocket Origin check that apply on that path.
type Route struct {
	// Path (path) is the request path matched, with net/http ServeMux
	// semantics: "/" matches every path, a path ending in "/" matches its
	// subtree, any other path matches exactly. Required, unique per
	// listener, starts with "/".
	Path string `toml:"path"`
	// Upstream (upstream) is "embedded" (the in-process broker) or the
	// name of an [upstream.NAME] block. Required.
	Upstream string `toml:"upstream"`
	// ClientAuth (client_auth) is the client-certificate policy: "off",
	// "optional" or "require". Default "off" (tlsterm.Off, the zero
	// value). Must be "off" on a plain listener.
	ClientAuth tlsterm.Mode `toml:"client_auth"`
	// ClientCA (client_ca) lists PEM files of the CAs client certificates
	// must chain to (with the clientAuth extended key usage). Required,
	// unless Pins is set, when ClientAuth is not "off". Paths are absolute
	// after Load.
	ClientCA []string `toml:"client_ca" config:"path"`
	// ClientCRL (client_crl) lists certificate revocation lists (PEM or
	// DER) of the client CAs or their intermediates: a client certificate
	// they list is refused with 0x05 "certificate revoked". Only with
	// ClientCA. Reloaded with the CA files. Paths are absolute after Load.
	ClientCRL []string `toml:"client_crl" config:"path"`
	// AllowCN, AllowOU, AllowDNS and AllowURI (allow_cn, allow_ou,
	// allow_dns, allow_uri) restrict accepted certificates by subject CN,
	// subject OU, DNS SAN and URI SAN, with globs where '*' matches any run
	// of characters ("device-*", "spiffe://example.org/device/*"). Empty
	// lists do not restrict. Only with ClientAuth not "off".
	AllowCN  []string `toml:"allow_cn"`
	AllowOU  []string `toml:"allow_ou"`
	AllowDNS []string `toml:"allow_dns"`
	AllowURI []string `toml:"allow_uri"`
	// Pins (pins) accept certificates by public key: "sha256:" followed by
	// the standard base64 of the SHA-256 of the SubjectPublicKeyInfo. Only
	// with ClientAuth not "off".
	Pins []string `toml:"pins"`
	// AllowedOrigins (allowed_origins) is the WebSocket Origin allow-list
	// ("https://app.example.com"). Empty: only pages from the same host may
	// open a WebSocket. "*" allows every site, which lets any web page a
	// user visits use the user's client certificate and network position.
	AllowedOrigins []string `toml:"allowed_origins"`
	// Console (console) serves the smqgw console, a web page to connect,
	// subscribe, publish and watch messages, at the route's path (GET
	// without an SMQ bootstrap), same origin as its WebSocket. Default
	// false.
	Console bool `toml:"console"`
	// TemporaryFailures (temporary_failures) is how the route's clients
	// hear of a passing condition — the upstream unreachable or silent,
	// the gateway busy (max_sessions, the per-address limits), the
	// gateway shutting down: "close" ends the connection without an SMQ
	// refusal (a raw client sees the end of the stream, a WebSocket client
	// a close frame with code 1013 or 1001 and the reason), so that the
	// reference clients retry (smq.js and the C client give up for good on
	// any Connack refusal or Disconnect); "refuse" answers with Connack
	// 0x02 and the reason (Disconnect "shutdown" on a shutdown), for
	// clients that retry after them. Default "close".
	TemporaryFailures string `toml:"temporary_failures"`
	// Permissions (permissions) names the [[permissions.NAME]] rules every
	// session of the route is held to: what it may subscribe to, publish
	// to, observe, and whom it may send one-to-one messages to, by its
	// certificate's identity (a client without one is "anonymous").
	// Default "": everything is allowed.
	Permissions string `toml:"permissions"`
}

// The values of Route.TemporaryFailures.
const (
	TemporaryClose  = "close"
	TemporaryRefuse = "refuse"
)

// Upstream is a broker the gateway forwards sessions to ([upstream.NAME]).
type Upstream struct {
	// Name is the block's NAME.
	Name string `toml:"-"`
	// URLs (urls) are the broker's SMQ URLs, tried in order with failover:
	// http:// and ws:// (plain), https:// and wss:// (TLS). Required,
	// non-empty.
	URLs []string `toml:"urls"`
	// DialTimeout (dial_timeout) bounds connecting to one URL (TCP, proxy,
	// TLS and bootstrap). Default 5s.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// Backoff (backoff) is how long a URL that failed is skipped before it
	// is tried again. Default 5s.
	Backoff time.Duration `toml:"backoff"`
	// Proxy (proxy) is how to reach the broker: "" connects directly,
	// "env" uses HTTPS_PROXY / HTTP_PROXY / NO_PROXY (and their lowercase
	// forms), a URL with scheme http, https, socks5 or socks5h names the
	// proxy. Default "".
	Proxy string `toml:"proxy"`
	// CAFile (ca_file) is a PEM bundle of the CAs that verify the broker's
	// certificate on https:// and wss:// URLs. Default "": the system
	// roots. Path absolute after Load.
	CAFile string `toml:"ca_file" config:"path"`
	// CertFile and KeyFile (cert_file, key_file) are the gateway's own
	// client certificate chain and key, presented to brokers that ask for
	// one. Both or neither; reloaded when they change. Paths absolute after
	// Load.
	CertFile string `toml:"cert_file" config:"path"`
	KeyFile  string `toml:"key_file" config:"path"`
	// ServerName (server_name) is the name the broker's certificate must
	// carry, when it is not the URL's host (a broker reached by IP
	// address). Default "": the URL's host.
	ServerName string `toml:"server_name"`
}

// TLS reports whether any URL of the upstream uses TLS.
func (u *Upstream) TLS() bool {
	for _, s := range u.URLs {
		if strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "wss://") {
			return true
		}
	}
	return false
}

// Certs is a certificate source for TLS listeners ([certs.NAME]), one of
// three kinds: PEM files (cert_file and key_file, and more pairs chosen by
// SNI), ACME (acme_domains: certificates from Let's Encrypt or another
// ACME CA), or a generated dev CA and certificate (dev = true).
type Certs struct {
	// Name is the block's NAME.
	Name string `toml:"-"`
	// CertFile and KeyFile (cert_file, key_file) are the PEM certificate
	// chain (leaf first) and its private key: the default pair, served
	// when no pair of Pairs matches the name a client asks for. Paths are
	// absolute after Load. Files are watched and reloaded when they change.
	CertFile string `toml:"cert_file" config:"path"`
	KeyFile  string `toml:"key_file" config:"path"`
	// Pairs ([[certs.NAME.pair]], each with cert_file and key_file) are
	// more certificate chains and keys, chosen by the name the client asks
	// for (SNI). Only with CertFile and KeyFile.
	Pairs []CertPair `toml:"pair"`

	// ACMEDomains (acme_domains) are the names to obtain certificates for
	// from an ACME CA, by TLS-ALPN-01 on the listeners that serve this
	// block and, with ACMEHTTPAddress, HTTP-01. Certificates and the
	// account key are kept under StateDir/acme. Setting it accepts the
	// CA's terms of service.
	ACMEDomains []string `toml:"acme_domains"`
	// ACMEEmail (acme_email) is the account's contact address. Optional.
	ACMEEmail string `toml:"acme_email"`
	// ACMEDirectory (acme_directory) is the CA's directory URL. Default
	// Let's Encrypt production (DefaultACMEDirectory).
	ACMEDirectory string `toml:"acme_directory"`
	// ACMEDirectoryCA (acme_directory_ca) is a PEM file of the CA that
	// signed the directory's HTTPS certificate, for private ACME CAs.
	// Default: the system roots.
	ACMEDirectoryCA string `toml:"acme_directory_ca" config:"path"`
	// ACMEEABKeyID and ACMEEABKey (acme_eab_kid, acme_eab_key) are the
	// External Account Binding key ID and HMAC key some CAs hand out. The
	// file gives the key in base64url, with or without padding (standard
	// base64 is accepted too); ACMEEABKey holds it decoded. Both or
	// neither.
	ACMEEABKeyID string `toml:"acme_eab_kid"`
	ACMEEABKey   []byte `toml:"acme_eab_key"`
	// ACMEHTTPAddress (acme_http_address) is a plain HTTP listener, usually
	// ":80", that answers HTTP-01 challenges and redirects every other
	// request to https. Default "" (TLS-ALPN-01 only).
	ACMEHTTPAddress string `toml:"acme_http_address"`
	// ACMERenewBefore (acme_renew_before) is how long before expiry a
	// certificate is renewed. Default 0: 30 days, or a third of the
	// certificate's lifetime when that is shorter.
	ACMERenewBefore time.Duration `toml:"acme_renew_before"`
	// ACMEChallenge (acme_challenge) is how control of the names is
	// proven: "tls-alpn-01" (the default, ""), answered on the TLS
	// listeners serving the block, with HTTP-01 on ACMEHTTPAddress too if
	// set; "http-01", the same with ACMEHTTPAddress required (autocert
	// still tries TLS-ALPN-01 first); or "dns-01", a TXT record set with
	// the dns_* keys, for names the CA cannot reach and for wildcards.
	ACMEChallenge string `toml:"acme_challenge"`

	// DNSServer (dns_server) is the primary DNS server taking RFC 2136
	// updates, host or host:port (port 53 when left out). RFC 2136 mode
	// of DNS-01: with DNSZone, DNSTSIGName and a secret; not with DNSHook.
	DNSServer string `toml:"dns_server"`
	// DNSZone (dns_zone) is the zone updated ("example.com"): every
	// domain must be in it. Required with DNSServer; with DNSHook it
	// names the zone whose NS records are asked for the record.
	DNSZone string `toml:"dns_zone"`
	// DNSTSIGName (dns_tsig_name) is the TSIG key's name as the server
	// knows it. Required with DNSServer.
	DNSTSIGName string `toml:"dns_tsig_name"`
	// DNSTSIGAlgorithm (dns_tsig_algorithm) is the key's algorithm:
	// "hmac-sha256" (the default), "hmac-sha1", "hmac-sha224",
	// "hmac-sha384" or "hmac-sha512".
	DNSTSIGAlgorithm string `toml:"dns_tsig_algorithm"`
	// DNSTSIGSecret (dns_tsig_secret) is the key's secret, base64 as
	// tsig-keygen prints it. Never logged. Prefer DNSTSIGSecretFile.
	DNSTSIGSecret string `toml:"dns_tsig_secret"`
	// DNSTSIGSecretFile (dns_tsig_secret_file) is a file holding the
	// secret: the base64 alone, or a BIND key file as tsig-keygen writes
	// it (its secret "..." line). $CREDENTIALS_DIRECTORY allowed. Read
	// when the configuration is put in force. Not with DNSTSIGSecret.
	DNSTSIGSecretFile string `toml:"dns_tsig_secret_file" config:"path"`
	// DNSHook (dns_hook) is a program that sets and removes the TXT
	// record, run as "HOOK present FQDN VALUE" and "HOOK cleanup FQDN
	// VALUE" (lego's exec and acme.sh convention). Exec mode of DNS-01:
	// not with DNSServer.
	DNSHook string `toml:"dns_hook" config:"path"`
	// DNSPropagationTimeout (dns_propagation_timeout) is how long the
	// record may take to be answered by every authoritative server of the
	// zone before the attempt fails. Default DefaultDNSPropagationTimeout.
	DNSPropagationTimeout time.Duration `toml:"dns_propagation_timeout"`
	// DNSResolvers (dns_resolvers) are the servers asked whether the
	// record is visible (host or host:port), instead of the zone's NS
	// records. Default: the NS records of the zone, looked up with the
	// system resolver, else DNSServer.
	DNSResolvers []string `toml:"dns_resolvers"`

	// Dev (dev) generates a dev CA and a server certificate and stores
	// them under StateDir/dev: the zero-configuration demo. Not for
	// production. Default false.
	Dev bool `toml:"dev"`
	// Hosts (hosts) are the DNS names and IP addresses the dev certificate
	// is issued for. Default (with Dev) "localhost", "127.0.0.1", "::1".
	// Only with Dev.
	Hosts []string `toml:"hosts"`
}

// Cluster is the [cluster] block: how this node's embedded broker reaches
// the others. Embedded mode runs a NATS server in the process, with a
// route listener (Listen) and routes to the other nodes (Routes); external
// mode connects to an existing NATS cluster (NATS). One or the other.
type Cluster struct {
	// Name (name) names this node, unique in the cluster: letters, digits,
	// '-' and '_'. Default: the host name, other characters made '-'.
	Name string `toml:"name"`

	// Listen (listen) is the host:port where the other nodes connect
	// (their routes). Required in embedded mode.
	Listen string `toml:"listen"`
	// Routes (routes) are the other nodes' listen addresses, host:port or
	// nats-route://host:port (port 6222 when left out). Default empty: this
	// node waits for the others to route to it.
	Routes []string `toml:"routes"`
	// TLS (tls) names the [certs.NAME] block (files, not ACME or dev)
	// whose certificate this node presents to the other nodes, both when
	// they connect and when it connects to them: it needs the serverAuth
	// and clientAuth extended key usages (or none), and the names or
	// addresses the other nodes' routes use. With CA.
	TLS string `toml:"tls"`
	// CA (ca) is a PEM file of the CAs the other nodes' certificates must
	// chain to. With TLS. Path absolute after Load.
	CA string `toml:"ca" config:"path"`
	// Insecure (insecure) allows routes without TLS on addresses other
	// than loopback: whoever reaches the route port reads and publishes
	// every message. Default false: without tls, listen and every route
	// must be on loopback.
	Insecure bool `toml:"insecure"`

	// NATS (nats) are the URLs of an existing NATS cluster, nats:// or
	// tls://, credentials allowed in them (user:password@ or token@; never
	// logged). External mode.
	NATS []string `toml:"nats"`
	// NATSCA (nats_ca) is a PEM file of the CAs of the NATS servers'
	// certificates (TLS on). Default: the system roots.
	NATSCA string `toml:"nats_ca" config:"path"`
	// NATSCert and NATSKey (nats_cert, nats_key) are a client certificate
	// and key for NATS (TLS on). Both or neither.
	NATSCert string `toml:"nats_cert" config:"path"`
	NATSKey  string `toml:"nats_key" config:"path"`
	// NATSCreds (nats_creds) is a NATS credentials file (JWT and NKey
	// seed). Optional.
	NATSCreds string `toml:"nats_creds" config:"path"`

	// SubjectPrefix (subject_prefix) begins every NATS subject of the
	// cluster, and is the embedded NATS's cluster name: the same on every
	// node. Tokens of letters, digits, '-' and '_' separated by '.'.
	// Default broker.DefaultClusterPrefix ("smqgw").
	SubjectPrefix string `toml:"subject_prefix"`
	// Heartbeat (heartbeat) is how often this node tells the others it is
	// alive. Default broker.DefaultHeartbeat (1s).
	Heartbeat time.Duration `toml:"heartbeat"`
	// PeerTimeout (peer_timeout) is how long a silent node is still
	// believed alive; after it, its clients count as gone. Longer than
	// heartbeat. Default broker.DefaultPeerTimeout (5s).
	PeerTimeout time.Duration `toml:"peer_timeout"`
	// RequestTimeout (request_timeout) bounds each question this node asks
	// the others. Default broker.DefaultClusterRequestTimeout (2s).
	RequestTimeout time.Duration `toml:"request_timeout"`
}

// External reports whether the node joins an existing NATS (nats set)
// rather than running its own.
func (c *Cluster) External() bool { return len(c.NATS) > 0 }

// CertPair is one more certificate and key of a files [certs] block
// ([[certs.NAME.pair]]).
type CertPair struct {
	CertFile string `toml:"cert_file" config:"path"`
	KeyFile  string `toml:"key_file" config:"path"`
}

// ACME reports whether the block obtains its certificates by ACME.
func (c *Certs) ACME() bool { return len(c.ACMEDomains) > 0 }

// The values of acme_challenge.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
	ChallengeDNS     = "dns-01"
)

// DNS01 reports whether the block obtains its certificates by ACME with
// the DNS-01 challenge.
func (c *Certs) DNS01() bool { return c.ACME() && c.ACMEChallenge == ChallengeDNS }

// Default returns the zero-configuration demo: listener "tls" with TLS on
// 127.0.0.1:8443 and listener "lan" without TLS on 127.0.0.1:9000, each
// with one route "/" to the embedded broker and client_auth off; the TLS
// listener serves the certs "dev" block, a generated dev certificate for
// localhost, 127.0.0.1 and ::1. configs/demo.toml is the same in TOML.
func Default() *Config {
	c := &Config{
		Admin: Admin{Address: "127.0.0.1:9090"},
		Listeners: []Listener{
			{Name: "tls", Address: "127.0.0.1:8443", TLS: "dev",
				Routes: []Route{{Path: "/", Upstream: Embedded, Console: true}}},
			{Name: "lan", Address: "127.0.0.1:9000",
				Routes: []Route{{Path: "/", Upstream: Embedded}}},
		},
		Certs: map[string]*Certs{
			"dev": {Name: "dev", Dev: true},
		},
	}
	c.setDefaults()
	return c
}

// setDefaults fills every zero field that has a default.
func (c *Config) setDefaults() {
	if c.StateDir == "" {
		c.StateDir = defaultStateDir()
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	setDuration(&c.WatchInterval, certs.DefaultWatchInterval)
	c.Limits = c.Limits.WithDefaults()
	c.Broker = c.Broker.WithDefaults()
	for i := range c.Listeners {
		for j := range c.Listeners[i].Routes {
			if r := &c.Listeners[i].Routes[j]; r.TemporaryFailures == "" {
				r.TemporaryFailures = TemporaryClose
			}
		}
	}
	if c.Upstreams == nil {
		c.Upstreams = map[string]*Upstream{}
	}
	for _, u := range c.Upstreams {
		setDuration(&u.DialTimeout, upstream.DefaultDialTimeout)
		setDuration(&u.Backoff, upstream.DefaultBackoff)
	}
	if cl := c.Cluster; cl != nil {
		if cl.Name == "" {
			cl.Name = defaultNodeName()
		}
		if cl.SubjectPrefix == "" {
			cl.SubjectPrefix = broker.DefaultClusterPrefix
		}
		setDuration(&cl.Heartbeat, broker.DefaultHeartbeat)
		setDuration(&cl.PeerTimeout, broker.DefaultPeerTimeout)
		setDuration(&cl.RequestTimeout, broker.DefaultClusterRequestTimeout)
	}
	if c.Certs == nil {
		c.Certs = map[string]*Certs{}
	}
	for _, ct := range c.Certs {
		if ct.Dev && ct.Hosts == nil {
			ct.Hosts = append([]string(nil), DefaultDevHosts...)
		}
		if ct.ACME() && ct.ACMEDirectory == "" {
			ct.ACMEDirectory = DefaultACMEDirectory
		}
		if ct.DNS01() {
			setDuration(&ct.DNSPropagationTimeout, DefaultDNSPropagationTimeout)
			if ct.DNSServer != "" && ct.DNSTSIGAlgorithm == "" {
				ct.DNSTSIGAlgorithm = dns01.DefaultAlgorithm
			}
		}
	}
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// defaultNodeName is the host name made a node name: each character
// other than a letter, digit, '-' or '_' becomes '-'; "smqgw" when there
// is no host name.
func defaultNodeName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "smqgw"
	}
	return strings.Map(func(r rune) rune {
		if isTokenRune(r) {
			return r
		}
		return '-'
	}, h)
}

// defaultStateDir returns $STATE_DIRECTORY (its first entry: systemd may
// list several, separated by ':'), else $XDG_STATE_HOME/smqgw, else
// ~/.local/state/smqgw, or "" when there is no home directory either.
func defaultStateDir() string {
	if d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); filepath.IsAbs(d) {
		return filepath.Clean(d)
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "smqgw")
	}
	if h, err := os.UserHomeDir(); err == nil && filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "smqgw")
	}
	return ""
}
