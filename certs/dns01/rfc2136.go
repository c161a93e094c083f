// Package dns01 sets and checks the TXT records of ACME DNS-01 challenges:
// by RFC 2136 dynamic update signed with TSIG (BIND, Knot, PowerDNS and
// many hosted services), or through an exec hook for any other DNS
// provider; and Propagation waits until the zone's authoritative servers
// answer a record. Package certs takes a solver and a Propagation through
// its DNSSolver and DNSPropagation interfaces.
package dns01

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults of RFC2136.
const (
	// DefaultTTL is the TTL of the TXT records set: short, as the record
	// lives for one validation.
	DefaultTTL = 60
	// DefaultUpdateTimeout bounds one update exchange.
	DefaultUpdateTimeout = 10 * time.Second
	// DefaultAlgorithm is the TSIG algorithm when none is named.
	DefaultAlgorithm = "hmac-sha256"
)

// algorithms maps the TSIG algorithm names accepted (as BIND's named.conf
// and tsig-keygen write them, with or without "hmac-") to miekg/dns's.
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// Algorithms are the TSIG algorithm names RFC2136 accepts, in their usual
// spelling.
var Algorithms = []string{"hmac-sha256", "hmac-sha1", "hmac-sha224", "hmac-sha384", "hmac-sha512"}

// Algorithm returns the TSIG algorithm named s ("hmac-sha256",
// "HMAC-SHA256.", "sha256"; "" is DefaultAlgorithm) as it goes on the
// wire, and whether it is known.
func Algorithm(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" {
		s = DefaultAlgorithm
	}
	if !strings.HasPrefix(s, "hmac-") {
		s = "hmac-" + s
	}
	a, ok := algorithms[s]
	return a, ok
}

// RFC2136 sets TXT records by RFC 2136 dynamic update, signed with a TSIG
// key, sent over TCP to the zone's primary server.
type RFC2136 struct {
	// Server is the primary server's host:port; the port is 53 when left
	// out. Required.
	Server string
	// Zone is the zone updated ("example.com"). Required: the records set
	// must be in it.
	Zone string
	// KeyName is the TSIG key's name as the server knows it. Required.
	KeyName string
	// Algorithm is the TSIG algorithm (see Algorithm). Default
	// DefaultAlgorithm.
	Algorithm string
	// Secret is the TSIG key, base64 as tsig-keygen prints it. Required.
	// It appears in no error.
	Secret string
	// TTL is the TTL of the records set. Default DefaultTTL.
	TTL uint32
	// Timeout bounds each update. Default DefaultUpdateTimeout.
	Timeout time.Duration
}

// UpdateError is an update the server answered with an error code.
type UpdateError struct {
	Op     string // "add" or "delete"
	FQDN   string
	Server string
	Zone   string
	Rcode  int    // the answer's code (dns.RcodeNotAuth, ...)
	TSIG   uint16 // the TSIG error of the answer (dns.RcodeBadSig, ...), 0 if none
}

// KeyRejected reports whether the server refused the TSIG key: unknown
// (BADKEY), wrong secret or algorithm (BADSIG), or clocks too far apart
// (BADTIME).
func (e *UpdateError) KeyRejected() bool { return e.TSIG != 0 }

func (e *UpdateError) Error() string {
	prefix := fmt.Sprintf("dns01: update %s of %s at %s refused: ", e.Op, e.FQDN, e.Server)
	code := dns.RcodeToString[e.Rcode]
	switch {
	case e.TSIG == dns.RcodeBadTime:
		return prefix + fmt.Sprintf("TSIG key rejected (%s/BADTIME): the clocks of this host and the server differ by more than 5 minutes", code)
	case e.TSIG != 0:
		return prefix + fmt.Sprintf("TSIG key rejected (%s/%s): check dns_tsig_name, dns_tsig_algorithm and the secret against the server's key", code, tsigCode(e.TSIG))
	case e.Rcode == dns.RcodeNotAuth || e.Rcode == dns.RcodeNotZone:
		return prefix + fmt.Sprintf("server is not authoritative for zone %q (%s): check dns_zone and dns_server", e.Zone, code)
	case e.Rcode == dns.RcodeRefused:
		return prefix + fmt.Sprintf("server refused the update for zone %q (REFUSED): its update-policy (or allow-update) does not let this key change %s, or it does not serve the zone", e.Zone, e.FQDN)
	case e.Rcode == dns.RcodeServerFailure:
		return prefix + "server failure (SERVFAIL): see the DNS server's log"
	}
	return prefix + "answer " + code
}

func tsigCode(c uint16) string {
	switch c {
	case dns.RcodeBadSig:
		return "BADSIG"
	case dns.RcodeBadKey:
		return "BADKEY"
	case dns.RcodeBadTime:
		return "BADTIME"
	}
	if s, ok := dns.RcodeToString[int(c)]; ok {
		return s
	}
	return fmt.Sprint(c)
}

// Present adds the TXT record fqdn with value.
func (u *RFC2136) Present(ctx context.Context, fqdn, value string) error {
	return u.update(ctx, "add", fqdn, value)
}

// CleanUp deletes the TXT record fqdn with value (only that one).
func (u *RFC2136) CleanUp(ctx context.Context, fqdn, value string) error {
	return u.update(ctx, "delete", fqdn, value)
}

// Addr returns Server with the port, 53 when it has none.
func (u *RFC2136) Addr() string { return withPort(u.Server) }

func (u *RFC2136) update(ctx context.Context, op, fqdn, value string) error {
	alg, ok := Algorithm(u.Algorithm)
	if !ok {
		return fmt.Errorf("dns01: unknown TSIG algorithm %q (want %s)", u.Algorithm, strings.Join(Algorithms, ", "))
	}
	zone := dns.Fqdn(strings.ToLower(u.Zone))
	fqdn = dns.Fqdn(fqdn)
	if !dns.IsSubDomain(zone, strings.ToLower(fqdn)) {
		return fmt.Errorf("dns01: %s is not in zone %q (dns_zone)", fqdn, zone)
	}
	ttl := u.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	timeout := u.Timeout
	if timeout <= 0 {
		timeout = DefaultUpdateTimeout
	}
	key := dns.Fqdn(strings.ToLower(u.KeyName))
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}, Txt: []string{value}}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	if op == "add" {
		m.Insert([]dns.RR{rr})
	} else {
		m.Remove([]dns.RR{rr})
	}
	m.SetTsig(key, alg, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: timeout, TsigSecret: map[string]string{key: u.Secret}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := u.Addr()
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if r != nil && r.Rcode != dns.RcodeSuccess || r != nil && r.IsTsig() != nil && r.IsTsig().Error != 0 {
		ue := &UpdateError{Op: op, FQDN: fqdn, Server: addr, Zone: zone, Rcode: r.Rcode}
		if t := r.IsTsig(); t != nil {
			ue.TSIG = t.Error
		}
		return ue
	}
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrAuth), errors.Is(err, dns.ErrTime):
			return fmt.Errorf("dns01: update %s of %s at %s: the server's answer failed TSIG verification (%v): check the secret", op, fqdn, addr, err)
		case errors.As(err, &ne) && ne.Timeout():
			return fmt.Errorf("dns01: update %s of %s at %s: no answer within %v: %w", op, fqdn, addr, timeout, err)
		}
		return fmt.Errorf("dns01: update %s of %s at %s: %w", op, fqdn, addr, err)
	}
	return nil
}

// withPort adds port 53 to a host without one.
func withPort(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "53")
}
