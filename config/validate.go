package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/certs/dns01"
	"github.com/smqgw/smqgw/cluster"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
)

// validate judges a decoded, defaulted Config: required keys, references
// between blocks, value forms the types do not check, cross-key rules and
// the files named.
func (d *decoder) validate(c *Config) {
	if len(c.Listeners) == 0 && !d.bad["listener"] {
		d.add("", "no [[listener]] defined: at least one is required")
	}
	if f := c.Log.Format; f != "text" && f != "json" {
		d.keyf("log.format", "invalid value %q (want %s)", f, orList("text", "json"))
	}
	if c.Admin.Address != "" {
		d.address("admin.address", c.Admin.Address)
	}
	if f := c.SessionTicketKeyFile; f != "" && d.noFiles {
		d.readable("session_ticket_key_file", f)
	} else if f != "" {
		if _, err := os.Stat(f); err != nil {
			d.readable("session_ticket_key_file", f)
		} else if _, err := certs.LoadTicketKeys(f); err != nil {
			d.keyf("session_ticket_key_file", "%s", strings.TrimPrefix(err.Error(), "certs: session ticket keys: "))
		}
	}

	names := map[string]string{} // listener name → key of its first use
	for i := range c.Listeners {
		l := &c.Listeners[i]
		key := "listener." + strconv.Itoa(i)
		if d.required(key, "name", l.Name) {
			if first, ok := names[l.Name]; ok {
				d.keyf(key+".name", "duplicate listener name %q%s", l.Name, d.also(first))
			} else {
				names[l.Name] = key + ".name"
			}
		}
		if d.required(key, "address", l.Address) {
			d.address(key+".address", l.Address)
		}
		if l.TLS != "" {
			if _, ok := c.Certs[l.TLS]; !ok {
				d.keyf(key+".tls", "no [certs.%s] block%s", l.TLS, suggest(l.TLS, sortedKeys(c.Certs)))
			}
		}
		if len(l.Routes) == 0 && !d.bad[key+".route"] {
			d.add(key, "missing [[listener.route]] in [[listener]]: a listener needs at least one route")
		}
		paths := map[string]string{}
		for j := range l.Routes {
			rkey := key + ".route." + strconv.Itoa(j)
			d.route(c, l, &l.Routes[j], rkey, paths)
		}
	}

	for _, name := range sortedKeys(c.Upstreams) {
		d.upstream(c.Upstreams[name], "upstream."+name)
	}
	needState := ""
	for _, name := range sortedKeys(c.Certs) {
		d.certs(c.Certs[name], "certs."+name)
		switch {
		case c.Certs[name].Dev:
			needState = "dev certificates are kept there"
		case c.Certs[name].ACME() && needState == "":
			needState = "ACME certificates and the account key are kept there"
		}
	}
	for _, name := range sortedKeys(c.Permissions) {
		d.permissions(name, c.Permissions[name])
	}
	if c.Cluster != nil && !d.bad["cluster"] {
		d.cluster(c)
	}
	d.addresses(c)
	d.broker(&c.Broker)
	if needState != "" && c.StateDir == "" {
		d.add("state_dir", "state_dir: not set, and no default: set state_dir, $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME ("+needState+")")
	}
}

// limits checks the [limits] values as decoded, before defaults fill the
// zero ones and cap max_message_size. (The decoder took only values
// greater than 0.)
func (d *decoder) limits(l *limits.Limits) {
	if l.MaxMessageSize > smq.MaxRawMessage {
		d.keyf("limits.max_message_size", "%d is larger than %d, the largest SMQ message (smq.MaxRawMessage)", l.MaxMessageSize, smq.MaxRawMessage)
	}
}

// broker checks the [broker] values, defaults applied. (The decoder took
// only values greater than 0.)
func (d *decoder) broker(b *limits.Broker) {
	if b.MaxTopicName > smq.MaxName {
		d.keyf("broker.max_topic_name", "%d is larger than %d, the longest name whose Suback fits an SMQ frame", b.MaxTopicName, smq.MaxName)
	}
	if b.QueueBytes < smq.MaxRawFrame {
		d.keyf("broker.queue_bytes", "%d is smaller than %d, the largest SMQ message: every message would overflow it", b.QueueBytes, smq.MaxRawFrame)
	}
	if b.MaxQueuedBytes < b.QueueBytes && !d.bad["broker.queue_bytes"] && !d.bad["broker.max_queued_bytes"] {
		key := "broker.max_queued_bytes"
		if _, ok := d.pos[key]; !ok {
			key = "broker.queue_bytes" // the one written
		}
		d.keyf(key, "max_queued_bytes (%d) is smaller than queue_bytes (%d): one client's queue must fit the broker's budget", b.MaxQueuedBytes, b.QueueBytes)
	}
}

func (d *decoder) route(c *Config, l *Listener, r *Route, key string, paths map[string]string) {
	if d.required(key, "path", r.Path) {
		if !validPath(r.Path) {
			d.keyf(key+".path", `invalid path %q (want an absolute path like "/smq" or "/", without query or wildcards)`, r.Path)
		} else if first, ok := paths[r.Path]; ok {
			d.keyf(key+".path", "duplicate path %q in this listener%s", r.Path, d.also(first))
		} else {
			paths[r.Path] = key + ".path"
		}
	}
	if d.required(key, "upstream", r.Upstream) && r.Upstream != Embedded {
		if _, ok := c.Upstreams[r.Upstream]; !ok {
			d.keyf(key+".upstream", "no [upstream.%s] block, and not %q%s", r.Upstream, Embedded,
				suggest(r.Upstream, append(sortedKeys(c.Upstreams), Embedded)))
		}
	}

	if r.Permissions != "" {
		if _, ok := c.Permissions[r.Permissions]; !ok && !d.bad["permissions."+r.Permissions] {
			d.keyf(key+".permissions", "no [[permissions.%s]] rules%s", r.Permissions, suggest(r.Permissions, sortedKeys(c.Permissions)))
		}
	}
	if f := r.TemporaryFailures; f != TemporaryClose && f != TemporaryRefuse {
		d.keyf(key+".temporary_failures", "invalid value %q (want %s)", f, orList(TemporaryClose, TemporaryRefuse))
	}

	switch {
	case d.bad[key+".client_auth"]:
		// which keys apply depends on it
	case r.ClientAuth == tlsterm.Off:
		for _, x := range []struct {
			key  string
			list []string
		}{
			{"client_ca", r.ClientCA}, {"client_crl", r.ClientCRL}, {"allow_cn", r.AllowCN}, {"allow_ou", r.AllowOU},
			{"allow_dns", r.AllowDNS}, {"allow_uri", r.AllowURI}, {"pins", r.Pins},
		} {
			if len(x.list) > 0 {
				d.keyf(key+"."+x.key, `has no effect with client_auth "off" (set client_auth to "optional" or "require", or remove %s)`, x.key)
			}
		}
	default:
		if l.TLS == "" {
			d.keyf(key+".client_auth", "%q needs a TLS listener: this [[listener]] has no tls (set tls, or use %q)", r.ClientAuth, tlsterm.Off)
		}
		if len(r.ClientCA) == 0 && len(r.Pins) == 0 && !d.bad[key+".client_ca"] && !d.bad[key+".pins"] {
			d.keyf(key+".client_ca", "required with client_auth %q (or set pins)", r.ClientAuth)
		}
	}

	for i, f := range r.ClientCA {
		d.readable(key+".client_ca."+strconv.Itoa(i), f)
	}
	if len(r.ClientCRL) > 0 && len(r.ClientCA) == 0 && r.ClientAuth != tlsterm.Off {
		d.keyf(key+".client_crl", "needs client_ca: a revocation list applies to certificates checked against a CA")
	}
	for i, f := range r.ClientCRL {
		d.readable(key+".client_crl."+strconv.Itoa(i), f)
	}
	for _, x := range []struct {
		key  string
		list []string
	}{
		{"allow_cn", r.AllowCN}, {"allow_ou", r.AllowOU}, {"allow_dns", r.AllowDNS}, {"allow_uri", r.AllowURI},
	} {
		for i, g := range x.list {
			if g == "" {
				d.keyf(key+"."+x.key+"."+strconv.Itoa(i), "empty pattern (a glob where '*' matches any run of characters)")
			}
		}
	}
	for i, p := range r.Pins {
		if !validPin(p) {
			d.keyf(key+".pins."+strconv.Itoa(i), `invalid pin %q (want "sha256:" and the base64 of a 32-byte SPKI hash)`, p)
		}
	}
	for i, o := range r.AllowedOrigins {
		if !validOrigin(o) {
			d.keyf(key+".allowed_origins."+strconv.Itoa(i), `invalid origin %q (want scheme://host[:port] like "https://app.example.com", or "*")`, o)
		}
	}
}

// permissions checks the rules of [[permissions.NAME]]: each problem at
// its rule's key, patterns by their index.
func (d *decoder) permissions(name string, rules []access.Rule) {
	_, err := access.Compile(rules)
	if err == nil {
		return
	}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ae *access.Error
		if !errors.As(e, &ae) {
			d.add("permissions."+name, e.Error())
			continue
		}
		rule := "permissions." + name + "." + strconv.Itoa(ae.Rule)
		key := rule + "." + ae.Key
		if ae.Index >= 0 {
			key += "." + strconv.Itoa(ae.Index)
		}
		if _, written := d.pos[key]; !written {
			// Said of the rule as a whole (it is for no one).
			d.add(rule, fmt.Sprintf("rule #%d of [[permissions.%s]]: %v", ae.Rule+1, name, ae.Err))
			continue
		}
		d.keyf(key, "%v", ae.Err)
	}
}

func (d *decoder) upstream(u *Upstream, key string) {
	if u.Name == Embedded {
		d.add(key, fmt.Sprintf("[upstream.%s]: the name %q is reserved for the in-process broker", Embedded, Embedded))
	}
	if len(u.URLs) == 0 {
		if d.pos[key+".urls"] == (pos{}) {
			d.add(key+".urls", fmt.Sprintf("missing required key %q in %s", "urls", tableName(key)))
		} else {
			d.keyf(key+".urls", "must not be empty")
		}
	}
	for i, s := range u.URLs {
		ukey := key + ".urls." + strconv.Itoa(i)
		p, err := url.Parse(s)
		s = proxyclient.Redact(s) // quoted below: never a password
		switch {
		case err != nil:
			d.keyf(ukey, "invalid URL %q: %v", s, errors.Unwrap(err))
		case !slices.Contains([]string{"http", "ws", "https", "wss"}, p.Scheme):
			d.keyf(ukey, "unsupported scheme %q in %q (want %s)", p.Scheme, s, orList("http", "ws", "https", "wss"))
		case p.Host == "" || p.Hostname() == "":
			d.keyf(ukey, "no host in %q", s)
		case p.Port() != "" && !validPort(p.Port()):
			d.keyf(ukey, "invalid port %q in %q", p.Port(), s)
		case p.User != nil:
			d.keyf(ukey, "user info (user:password@) is not supported in %q: the broker authenticates by the client's Connect and headers", s)
		}
	}
	tlsKeys := []struct{ key, v string }{{"ca_file", u.CAFile}, {"cert_file", u.CertFile}, {"key_file", u.KeyFile}, {"server_name", u.ServerName}}
	if !u.TLS() && len(u.URLs) > 0 {
		for _, x := range tlsKeys {
			if x.v != "" {
				d.keyf(key+"."+x.key, "has no effect: no URL of this upstream uses TLS (https:// or wss://)")
			}
		}
	}
	switch {
	case u.CertFile != "" && u.KeyFile == "":
		d.add(key+".key_file", fmt.Sprintf(`missing required key "key_file" in %s: cert_file needs it`, tableName(key)))
	case u.CertFile == "" && u.KeyFile != "":
		d.add(key+".cert_file", fmt.Sprintf(`missing required key "cert_file" in %s: key_file needs it`, tableName(key)))
	}
	for _, x := range tlsKeys[:3] {
		if x.v != "" {
			d.readable(key+"."+x.key, x.v)
		}
	}
	if u.ServerName != "" && !validHost(u.ServerName) {
		d.keyf(key+".server_name", "invalid name %q (want a DNS name or an IP address)", u.ServerName)
	}
	if u.Proxy != "" && u.Proxy != "env" {
		p, err := url.Parse(u.Proxy)
		proxy := proxyclient.Redact(u.Proxy) // quoted below: never a password
		switch {
		case err != nil:
			d.keyf(key+".proxy", "invalid URL %q: %v", proxy, errors.Unwrap(err))
		case !slices.Contains([]string{"http", "https", "socks5", "socks5h"}, p.Scheme):
			d.keyf(key+".proxy", `unsupported proxy %q (want "", "env", or a URL with scheme %s)`, proxy, orList("http", "https", "socks5", "socks5h"))
		case p.Hostname() == "":
			d.keyf(key+".proxy", "no host in %q", proxy)
		case p.Port() != "" && !validPort(p.Port()):
			d.keyf(key+".proxy", "invalid port %q in %q", p.Port(), proxy)
		case p.Path != "" && p.Path != "/" || p.RawQuery != "" || p.Fragment != "":
			d.keyf(key+".proxy", "proxy URL %q must not have a path, query or fragment", proxy)
		}
	}
}

func (d *decoder) certs(c *Certs, key string) {
	if d.bad[key+".dev"] {
		return // which keys apply depends on dev
	}
	files := c.CertFile != "" || c.KeyFile != "" || len(c.Pairs) > 0
	acmeKeys := []struct{ key, v string }{
		{"acme_email", c.ACMEEmail}, {"acme_directory", c.ACMEDirectory}, {"acme_directory_ca", c.ACMEDirectoryCA},
		{"acme_eab_kid", c.ACMEEABKeyID}, {"acme_eab_key", string(c.ACMEEABKey)}, {"acme_http_address", c.ACMEHTTPAddress},
		{"acme_challenge", c.ACMEChallenge},
	}
	acmeKeys = append(acmeKeys, c.dnsKeys()...)
	if c.ACMERenewBefore != 0 {
		acmeKeys = append(acmeKeys, struct{ key, v string }{"acme_renew_before", c.ACMERenewBefore.String()})
	}
	switch {
	case c.Dev:
		for _, x := range []struct{ key, v string }{{"cert_file", c.CertFile}, {"key_file", c.KeyFile}} {
			if x.v != "" {
				d.keyf(key+"."+x.key, "not allowed with dev = true (use one or the other)")
			}
		}
		if len(c.Pairs) > 0 {
			d.keyf(key+".pair", "not allowed with dev = true (use one or the other)")
		}
		if c.ACME() {
			d.keyf(key+".acme_domains", "not allowed with dev = true (a [certs] block is files, ACME or dev)")
		}
		if len(c.Hosts) == 0 {
			d.keyf(key+".hosts", "must not be empty with dev = true")
		}
		for i, h := range c.Hosts {
			if !validHost(h) {
				d.keyf(key+".hosts."+strconv.Itoa(i), "invalid host %q (want a DNS name or an IP address)", h)
			}
		}
		return
	case c.ACME():
		if files {
			d.keyf(key+".acme_domains", "not allowed with cert_file, key_file or [[pair]] (a [certs] block is files, ACME or dev)")
		}
		d.acme(c, key)
	default:
		if !d.bad[key+".acme_domains"] {
			for _, x := range acmeKeys {
				if x.v != "" {
					d.keyf(key+"."+x.key, "only used with acme_domains")
				}
			}
		}
	}
	if len(c.Hosts) > 0 {
		d.keyf(key+".hosts", "only used with dev = true")
	}
	if c.ACME() {
		return
	}
	switch {
	case c.CertFile == "" && c.KeyFile == "":
		d.add(key+".cert_file", fmt.Sprintf(`missing required keys "cert_file" and "key_file" in %s (or set acme_domains, or dev = true)`, tableName(key)))
	case c.CertFile == "":
		d.add(key+".cert_file", fmt.Sprintf(`missing required key "cert_file" in %s: key_file needs it`, tableName(key)))
	case c.KeyFile == "":
		d.add(key+".key_file", fmt.Sprintf(`missing required key "key_file" in %s: cert_file needs it`, tableName(key)))
	}
	if c.CertFile != "" {
		d.readable(key+".cert_file", c.CertFile)
	}
	if c.KeyFile != "" {
		d.readable(key+".key_file", c.KeyFile)
	}
	for i, p := range c.Pairs {
		pkey := key + ".pair." + strconv.Itoa(i)
		if d.required(pkey, "cert_file", p.CertFile) {
			d.readable(pkey+".cert_file", p.CertFile)
		}
		if d.required(pkey, "key_file", p.KeyFile) {
			d.readable(pkey+".key_file", p.KeyFile)
		}
	}
}

// acme checks the acme_* keys of a [certs] block with acme_domains.
func (d *decoder) acme(c *Certs, key string) {
	switch c.ACMEChallenge {
	case "", ChallengeTLSALPN, ChallengeHTTP, ChallengeDNS:
	default:
		d.keyf(key+".acme_challenge", "invalid value %q (want %s)%s", c.ACMEChallenge, orList(ChallengeTLSALPN, ChallengeHTTP, ChallengeDNS),
			suggest(c.ACMEChallenge, []string{ChallengeTLSALPN, ChallengeHTTP, ChallengeDNS}))
		return // which keys apply depends on it
	}
	dns := c.ACMEChallenge == ChallengeDNS
	for i, h := range c.ACMEDomains {
		k := key + ".acme_domains." + strconv.Itoa(i)
		_, ipErr := netip.ParseAddr(h)
		base, wild := strings.CutPrefix(h, "*.")
		switch {
		case wild && !dns:
			ch := c.ACMEChallenge
			if ch == "" {
				ch = ChallengeTLSALPN + " (the default)"
			}
			d.keyf(k, "wildcard %q needs the DNS-01 challenge, not %s: set acme_challenge = %q and a dns_server or dns_hook (or list each name)", h, ch, ChallengeDNS)
		case wild && (!validHost(base) || strings.Contains(base, "*") || !strings.Contains(strings.Trim(base, "."), ".")):
			d.decodeErr(k, "invalid wildcard %q (want \"*.\" and a fully qualified DNS name, like \"*.example.com\")", h)
		case wild:
		case ipErr == nil:
			d.keyf(k, "%q is an IP address: ACME certificates here are for DNS names", h)
		case !validHost(h) || !strings.Contains(strings.Trim(h, "."), "."):
			d.keyf(k, "invalid domain %q (want a fully qualified DNS name like \"gw.example.com\")", h)
		}
	}
	if c.ACMEEmail != "" && (!strings.Contains(c.ACMEEmail, "@") || strings.ContainsAny(c.ACMEEmail, " \t<>")) {
		d.keyf(key+".acme_email", "invalid address %q (want name@example.com)", c.ACMEEmail)
	}
	if u, err := url.Parse(c.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
		d.keyf(key+".acme_directory", "invalid directory URL %q (want https://..., like %q)", c.ACMEDirectory, DefaultACMEDirectory)
	}
	if c.ACMEDirectoryCA != "" {
		d.readable(key+".acme_directory_ca", c.ACMEDirectoryCA)
	}
	switch {
	case c.ACMEEABKeyID != "" && len(c.ACMEEABKey) == 0 && !d.bad[key+".acme_eab_key"]:
		d.keyf(key+".acme_eab_kid", "acme_eab_key is missing: External Account Binding needs both")
	case c.ACMEEABKeyID == "" && len(c.ACMEEABKey) > 0:
		d.keyf(key+".acme_eab_key", "acme_eab_kid is missing: External Account Binding needs both")
	}
	if c.ACMEHTTPAddress != "" {
		d.address(key+".acme_http_address", c.ACMEHTTPAddress)
	}
	if c.ACMERenewBefore > 30*24*time.Hour {
		d.keyf(key+".acme_renew_before", "%s is more than 720h: autocert renews at most 30 days before expiry", c.ACMERenewBefore)
	}
	switch {
	case c.ACMEChallenge == ChallengeHTTP && c.ACMEHTTPAddress == "":
		d.keyf(key+".acme_challenge", "%q needs acme_http_address, the plain listener the CA connects to (usually \":80\")", ChallengeHTTP)
	case dns && c.ACMEHTTPAddress != "":
		d.keyf(key+".acme_http_address", "not used with acme_challenge = %q (HTTP-01 only)", ChallengeDNS)
	}
	if dns {
		d.dns01(c, key)
		return
	}
	for _, x := range c.dnsKeys() {
		if x.v != "" {
			d.keyf(key+"."+x.key, "only used with acme_challenge = %q", ChallengeDNS)
		}
	}
}

// dnsKeys are the dns_* keys of a [certs] block, with their values ("" if
// not set).
func (c *Certs) dnsKeys() []struct{ key, v string } {
	keys := []struct{ key, v string }{
		{"dns_server", c.DNSServer}, {"dns_zone", c.DNSZone}, {"dns_tsig_name", c.DNSTSIGName},
		{"dns_tsig_algorithm", c.DNSTSIGAlgorithm}, {"dns_tsig_secret", c.DNSTSIGSecret},
		{"dns_tsig_secret_file", c.DNSTSIGSecretFile}, {"dns_hook", c.DNSHook},
		{"dns_resolvers", strings.Join(c.DNSResolvers, ",")},
	}
	if c.DNSPropagationTimeout != 0 {
		keys = append(keys, struct{ key, v string }{"dns_propagation_timeout", c.DNSPropagationTimeout.String()})
	}
	return keys
}

// dns01 checks the dns_* keys of a [certs] block with acme_challenge =
// "dns-01": RFC 2136 (dns_server, dns_zone, the TSIG key) or a hook.
// A secret is never quoted.
func (d *decoder) dns01(c *Certs, key string) {
	rfc := []struct{ key, v string }{
		{"dns_server", c.DNSServer}, {"dns_tsig_name", c.DNSTSIGName}, {"dns_tsig_algorithm", c.DNSTSIGAlgorithm},
		{"dns_tsig_secret", c.DNSTSIGSecret}, {"dns_tsig_secret_file", c.DNSTSIGSecretFile},
	}
	isSet := func(k string) bool { _, ok := d.pos[key+"."+k]; return ok }
	switch {
	case c.DNSHook != "" && c.DNSServer != "":
		d.keyf(key+".dns_hook", "not with dns_server: the TXT record is set either by RFC 2136 (dns_server and a TSIG key) or by the hook, not both")
		return
	case c.DNSHook != "":
		for _, x := range rfc {
			if x.v != "" && isSet(x.key) {
				d.keyf(key+"."+x.key, "not used with dns_hook (it is for RFC 2136 with dns_server)")
			}
		}
		d.executable(key+".dns_hook", c.DNSHook)
	case c.DNSServer == "":
		d.add(key+".acme_challenge", fmt.Sprintf(`acme_challenge = %q in %s needs a way to set the TXT record: dns_server, dns_zone and a TSIG key (RFC 2136), or dns_hook`, ChallengeDNS, tableName(key)))
	default:
		d.rfc2136(c, key)
	}
	if c.DNSZone != "" {
		zone := strings.ToLower(strings.TrimSuffix(c.DNSZone, "."))
		if _, err := netip.ParseAddr(zone); err == nil || !validHost(zone) || strings.Contains(zone, "*") {
			d.keyf(key+".dns_zone", "invalid zone %q (want a DNS name, like \"example.com\")", c.DNSZone)
		} else {
			for i, h := range c.ACMEDomains {
				name := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "*."), "."))
				if name != zone && !strings.HasSuffix(name, "."+zone) {
					d.keyf(key+".acme_domains."+strconv.Itoa(i), "%q is not in dns_zone %q: its _acme-challenge record cannot be set there", h, c.DNSZone)
				}
			}
		}
	}
	for i, r := range c.DNSResolvers {
		if !validServer(r) {
			d.keyf(key+".dns_resolvers."+strconv.Itoa(i), "invalid server %q (want host or host:port, like \"192.0.2.53\" or \"ns1.example.com:53\")", r)
		}
	}
}

// rfc2136 checks the RFC 2136 keys of a dns-01 [certs] block.
func (d *decoder) rfc2136(c *Certs, key string) {
	if !validServer(c.DNSServer) {
		d.keyf(key+".dns_server", "invalid server %q (want host or host:port, like \"192.0.2.53\" or \"ns1.example.com:53\")", c.DNSServer)
	}
	d.required(key, "dns_zone", c.DNSZone)
	d.required(key, "dns_tsig_name", c.DNSTSIGName)
	if _, ok := dns01.Algorithm(c.DNSTSIGAlgorithm); !ok {
		d.keyf(key+".dns_tsig_algorithm", "unknown algorithm %q (want %s)", c.DNSTSIGAlgorithm, orList(dns01.Algorithms...))
	}
	switch {
	case c.DNSTSIGSecret != "" && c.DNSTSIGSecretFile != "":
		d.keyf(key+".dns_tsig_secret", "not with dns_tsig_secret_file: give the secret once")
	case c.DNSTSIGSecret != "":
		if err := dns01.CheckSecret(c.DNSTSIGSecret); err != nil {
			d.keyf(key+".dns_tsig_secret", "%v", err) // never the secret itself
		}
	case c.DNSTSIGSecretFile != "":
		d.readable(key+".dns_tsig_secret_file", c.DNSTSIGSecretFile)
		if !d.noFiles && !d.bad[key+".dns_tsig_secret_file"] {
			if _, err := os.Stat(c.DNSTSIGSecretFile); err == nil {
				if _, err := dns01.ReadSecret(c.DNSTSIGSecretFile); err != nil {
					d.keyf(key+".dns_tsig_secret_file", "%v", err)
				}
			}
		}
	default:
		d.add(key+".dns_tsig_secret", fmt.Sprintf(`missing required key "dns_tsig_secret_file" (or "dns_tsig_secret") in %s: the TSIG key's secret`, tableName(key)))
	}
}

// validServer accepts host or host:port, the host a DNS name or an IP
// address.
func validServer(s string) bool {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if !validPort(port) {
			return false
		}
		host = h
	}
	return host != "" && validHost(strings.Trim(host, "[]")) && !strings.HasPrefix(host, "*")
}

// executable reports a program that cannot be run: missing, a directory,
// or without execute permission. Skipped without files.
func (d *decoder) executable(key, name string) {
	if d.noFiles {
		return
	}
	st, err := os.Stat(name)
	switch {
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		d.keyf(key, "cannot run %q: %v", name, err)
	case st.IsDir():
		d.keyf(key, "%q is a directory, not a program", name)
	case st.Mode().Perm()&0o111 == 0:
		d.keyf(key, "%q is not executable (chmod +x it)", name)
	}
}

// addresses reports two sockets that would listen on the same port:
// listeners, the admin endpoint and ACME HTTP-01 listeners. A host of ""
// "0.0.0.0" or "::" takes the port on every address.
func (d *decoder) addresses(c *Config) {
	type use struct{ key, host string }
	byPort := map[int][]use{}
	add := func(key, addr string) {
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			return // reported by address()
		}
		port, err := net.LookupPort("tcp", p)
		if err != nil || port == 0 {
			return
		}
		for _, u := range byPort[port] {
			if u.host == host || isWildcard(u.host) || isWildcard(host) {
				d.keyf(key, "address %q: port %d is already used by %s%s", addr, port, subject(u.key), d.also(u.key))
				return
			}
		}
		byPort[port] = append(byPort[port], use{key, host})
	}
	for i, l := range c.Listeners {
		add("listener."+strconv.Itoa(i)+".address", l.Address)
	}
	if c.Admin.Address != "" {
		add("admin.address", c.Admin.Address)
	}
	if c.Cluster != nil && c.Cluster.Listen != "" {
		add("cluster.listen", c.Cluster.Listen)
	}
	for _, name := range sortedKeys(c.Certs) {
		if a := c.Certs[name].ACMEHTTPAddress; a != "" {
			add("certs."+name+".acme_http_address", a)
		}
	}
}

// cluster checks the [cluster] block: one mode, the keys of that mode,
// route TLS or loopback (or insecure), and an embedded broker to join.
func (d *decoder) cluster(c *Config) {
	cl := c.Cluster
	const key = "cluster"
	if !validToken(cl.Name) {
		d.keyf(key+".name", "invalid node name %q: name must be letters, digits, '-' or '_'", cl.Name)
	}
	if !validPrefix(cl.SubjectPrefix) {
		d.keyf(key+".subject_prefix", "invalid prefix %q (want tokens of letters, digits, '-' or '_', separated by '.', like \"smqgw\" or \"site1.smqgw\")", cl.SubjectPrefix)
	}
	if cl.PeerTimeout <= cl.Heartbeat && !d.bad[key+".peer_timeout"] && !d.bad[key+".heartbeat"] {
		k := key + ".peer_timeout"
		if _, ok := d.pos[k]; !ok {
			k = key + ".heartbeat"
		}
		d.keyf(k, "peer_timeout (%s) must be longer than heartbeat (%s): live peers would be declared lost", cl.PeerTimeout, cl.Heartbeat)
	}
	embedded := false
	for _, l := range c.Listeners {
		for _, r := range l.Routes {
			embedded = embedded || r.Upstream == Embedded
		}
	}
	if !embedded && len(c.Listeners) > 0 {
		d.add(key, fmt.Sprintf("[cluster] joins the embedded broker, but no route uses upstream = %q", Embedded))
	}

	embeddedKeys := []struct{ key, v string }{{"listen", cl.Listen}, {"tls", cl.TLS}, {"ca", cl.CA}}
	if len(cl.Routes) > 0 {
		embeddedKeys = append(embeddedKeys, struct{ key, v string }{"routes", "set"})
	}
	if cl.Insecure {
		embeddedKeys = append(embeddedKeys, struct{ key, v string }{"insecure", "set"})
	}
	if cl.External() {
		for _, x := range embeddedKeys {
			if x.v != "" {
				d.keyf(key+"."+x.key, "not allowed with nats: [cluster] joins an existing NATS (nats) or runs its own (listen, routes), not both")
			}
		}
		d.clusterNATS(cl, key)
		return
	}
	for _, x := range []struct{ key, v string }{{"nats_ca", cl.NATSCA}, {"nats_cert", cl.NATSCert}, {"nats_key", cl.NATSKey}, {"nats_creds", cl.NATSCreds}} {
		if x.v != "" {
			d.keyf(key+"."+x.key, "only used with nats (an existing NATS)")
		}
	}
	if d.pos[key+".nats"] != (pos{}) {
		d.keyf(key+".nats", "must not be empty (or leave it out to run the embedded NATS)")
	}
	switch {
	case cl.Listen == "" && len(cl.Routes) > 0:
		d.add(key+".routes", "[cluster] has routes but no listen address: the other nodes could not route to this one")
	case cl.Listen == "":
		d.add(key, "[cluster] needs listen (the address the other nodes route to) or nats (the URLs of an existing NATS)")
	default:
		d.address(key+".listen", cl.Listen)
	}
	loopback := cl.Listen == "" || isLoopbackAddr(cl.Listen)
	for i, r := range cl.Routes {
		u, err := cluster.ParseRoute(r)
		if err != nil {
			d.keyf(key+".routes."+strconv.Itoa(i), "%s", strings.TrimPrefix(err.Error(), "cluster: "))
			continue
		}
		loopback = loopback && cluster.IsLoopback(u.Hostname())
	}
	switch {
	case cl.TLS != "" && cl.CA == "":
		d.add(key+".ca", `missing required key "ca" in [cluster]: tls needs it, to verify the other nodes' certificates`)
	case cl.TLS == "" && cl.CA != "":
		d.add(key+".tls", `missing required key "tls" in [cluster]: ca needs it (the [certs.NAME] block of this node's certificate)`)
	case cl.TLS != "" && cl.Insecure:
		d.keyf(key+".insecure", "has no effect with tls (routes use TLS)")
	case cl.TLS == "" && !cl.Insecure && !loopback:
		d.add(key, "[cluster] routes without TLS off loopback: anyone reaching them reads and publishes every message (set tls and ca, or insecure = true)")
	}
	if cl.TLS != "" {
		switch ct, ok := c.Certs[cl.TLS]; {
		case !ok:
			d.keyf(key+".tls", "no [certs.%s] block%s", cl.TLS, suggest(cl.TLS, sortedKeys(c.Certs)))
		case ct.ACME():
			d.keyf(key+".tls", "[certs.%s] is ACME: a node's route certificate comes from files (cert_file, key_file)", cl.TLS)
		case ct.Dev:
			d.keyf(key+".tls", "[certs.%s] is dev: a node's route certificate comes from files (cert_file, key_file); a dev certificate is for servers only, from a CA of this node's own", cl.TLS)
		}
	}
	if cl.CA != "" {
		d.readable(key+".ca", cl.CA)
	}
}

// clusterNATS checks the keys of [cluster] with nats: the URLs, TLS and
// credentials.
func (d *decoder) clusterNATS(cl *Cluster, key string) {
	for i, s := range cl.NATS {
		ukey := key + ".nats." + strconv.Itoa(i)
		p, err := url.Parse(s)
		s = cluster.RedactURL(s) // quoted below: never a password or token
		switch {
		case err != nil:
			d.keyf(ukey, "invalid URL %q", s)
		case p.Scheme != "nats" && p.Scheme != "tls":
			d.keyf(ukey, "unsupported scheme %q in %q (want %s)", p.Scheme, s, orList("nats", "tls"))
		case p.Hostname() == "":
			d.keyf(ukey, "no host in %q", s)
		case p.Port() != "" && !validPort(p.Port()):
			d.keyf(ukey, "invalid port %q in %q", p.Port(), s)
		case p.Path != "" && p.Path != "/" || p.RawQuery != "" || p.Fragment != "":
			d.keyf(ukey, "URL %q must not have a path, query or fragment", s)
		}
	}
	switch {
	case cl.NATSCert != "" && cl.NATSKey == "":
		d.add(key+".nats_key", `missing required key "nats_key" in [cluster]: nats_cert needs it`)
	case cl.NATSCert == "" && cl.NATSKey != "":
		d.add(key+".nats_cert", `missing required key "nats_cert" in [cluster]: nats_key needs it`)
	}
	for _, x := range []struct{ key, v string }{{"nats_ca", cl.NATSCA}, {"nats_cert", cl.NATSCert}, {"nats_key", cl.NATSKey}, {"nats_creds", cl.NATSCreds}} {
		if x.v != "" {
			d.readable(key+"."+x.key, x.v)
		}
	}
}

// isLoopbackAddr reports whether addr is on loopback; an invalid one,
// reported by address(), counts as loopback.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err != nil || cluster.IsLoopback(host)
}

// validToken accepts a NATS subject token of letters, digits, '-' and '_'.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !isTokenRune(r) {
			return false
		}
	}
	return true
}

func isTokenRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// validPrefix accepts tokens separated by '.'.
func validPrefix(s string) bool {
	for _, t := range strings.Split(s, ".") {
		if !validToken(t) {
			return false
		}
	}
	return true
}

func isWildcard(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }

// required reports a missing or empty string key of table and says
// whether it is set.
func (d *decoder) required(table, name, v string) bool {
	if v != "" {
		return true
	}
	key := table + "." + name
	if _, ok := d.pos[key]; ok {
		d.keyf(key, "must not be empty")
	} else {
		d.add(key, fmt.Sprintf("missing required key %q in %s", name, tableName(table)))
	}
	return false
}

// also says where the first of two duplicates is, when known.
func (d *decoder) also(first string) string {
	if p, ok := d.pos[first]; ok {
		return fmt.Sprintf(" (first at line %d)", p.line)
	}
	return ""
}

// readable reports a file that cannot be opened for reading.
func (d *decoder) readable(key, name string) {
	if name == "" {
		d.keyf(key, "empty file name")
		return
	}
	if d.noFiles {
		return
	}
	f, err := os.Open(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		d.keyf(key, "cannot read %q: %v", name, err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		d.keyf(key, "%q is a directory, not a file", name)
	}
}

// address reports an address net.Listen would refuse.
func (d *decoder) address(key, addr string) {
	_, port, err := net.SplitHostPort(addr)
	var ae *net.AddrError
	switch {
	case errors.As(err, &ae):
		d.keyf(key, "invalid address %q: %s (want host:port, like \":8443\" or \"127.0.0.1:9000\")", addr, ae.Err)
	case err != nil:
		d.keyf(key, "invalid address %q: %v", addr, err)
	case !validPort(port):
		d.keyf(key, "invalid port %q in address %q", port, addr)
	}
}

// validPort accepts a port number 0-65535 or a service name.
func validPort(port string) bool {
	if port == "" {
		return false
	}
	_, err := net.LookupPort("tcp", port)
	return err == nil
}

func validPath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.ContainsAny(p, " \t\r\n?#{}")
}

func validPin(p string) bool {
	b64, ok := strings.CutPrefix(p, "sha256:")
	if !ok {
		return false
	}
	h, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && len(h) == 32
}

func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "" &&
		u.User == nil && u.Path == "" && u.RawQuery == "" && u.Fragment == "" &&
		(u.Port() == "" || validPort(u.Port()))
}

// validHost accepts an IP address or a DNS name, possibly with a leading
// "*." wildcard label.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
