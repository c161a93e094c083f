package dns01

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults of Propagation.
const (
	DefaultPropagationTimeout = 2 * time.Minute
	DefaultPollInterval       = time.Second
	// lookupTimeout bounds finding the zone's servers.
	lookupTimeout = 10 * time.Second
	// queryTimeout bounds one query to one server.
	queryTimeout = 3 * time.Second
)

// Propagation waits until a TXT record is answered by every authoritative
// server of its zone, before the CA is told to look. The servers are
// Servers when set; otherwise the zone's NS records (Zone's, or of the
// closest enclosing name that has them), looked up with the system
// resolver, each asked directly; else Fallback.
type Propagation struct {
	// Zone is the zone holding the records, "" to find it by looking up
	// NS records from the record's name upwards.
	Zone string
	// Servers are the servers to ask (host:port, port 53 when left out),
	// instead of the zone's NS records. Default none.
	Servers []string
	// Fallback is asked when the zone's servers cannot be found: the
	// primary an RFC2136 updates. Default "".
	Fallback string
	// Timeout is how long to wait for the record. Default
	// DefaultPropagationTimeout.
	Timeout time.Duration
	// Interval is the time between rounds of queries. Default
	// DefaultPollInterval.
	Interval time.Duration
	// Resolver finds the NS records and their addresses. Nil:
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// NotVisibleError is a record not answered by every server in time.
type NotVisibleError struct {
	FQDN    string
	After   time.Duration
	Servers []string          // asked
	Last    map[string]string // server → what it answered last, for the servers missing it
}

func (e *NotVisibleError) Error() string {
	var missing []string
	for _, s := range e.Servers {
		if why, ok := e.Last[s]; ok {
			missing = append(missing, s+" ("+why+")")
		}
	}
	return fmt.Sprintf("dns01: TXT record %s not visible after %v at %d of %d authoritative servers: %s",
		e.FQDN, e.After.Round(time.Second), len(missing), len(e.Servers), strings.Join(missing, ", "))
}

// Wait asks the servers for the TXT records of fqdn every Interval until
// each answers one holding value, and returns the servers asked; or it
// returns a *NotVisibleError after Timeout, or ctx's error.
func (p *Propagation) Wait(ctx context.Context, fqdn, value string) ([]string, error) {
	fqdn = dns.Fqdn(strings.ToLower(fqdn))
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultPropagationTimeout
	}
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	start := time.Now()
	servers, err := p.servers(ctx, fqdn)
	if err != nil {
		return nil, err
	}
	deadline := start.Add(timeout)
	seen := map[string]bool{}
	missing := map[string]string{} // server → what it answered last
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return servers, ctx.Err()
		case <-t.C:
		}
		for _, s := range servers {
			if seen[s] {
				continue
			}
			if why := query(ctx, s, fqdn, value); why != "" {
				missing[s] = why
			} else {
				seen[s] = true
				delete(missing, s)
			}
		}
		if len(seen) == len(servers) {
			return servers, nil
		}
		if ctx.Err() != nil {
			return servers, ctx.Err()
		}
		if !time.Now().Before(deadline) {
			return servers, &NotVisibleError{FQDN: fqdn, After: time.Since(start), Servers: servers, Last: missing}
		}
		t.Reset(min(interval, time.Until(deadline)+time.Millisecond))
	}
}

// query asks server for the TXT records of fqdn, without recursion, and
// returns "" when one holds value, else what it answered.
func query(ctx context.Context, server, fqdn, value string) string {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeTXT)
	m.RecursionDesired = false
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: queryTimeout}
	r, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "no answer"
		}
		return err.Error()
	}
	if r.Rcode != dns.RcodeSuccess {
		return dns.RcodeToString[r.Rcode]
	}
	n := 0
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			n++
			if strings.Join(txt.Txt, "") == value {
				return ""
			}
		}
	}
	if !r.Authoritative {
		return "not authoritative for the name"
	}
	return fmt.Sprintf("%d other TXT records", n)
}

// servers returns the servers to ask about fqdn, with ports.
func (p *Propagation) servers(ctx context.Context, fqdn string) ([]string, error) {
	if len(p.Servers) > 0 {
		out := make([]string, len(p.Servers))
		for i, s := range p.Servers {
			out[i] = withPort(s)
		}
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	r := p.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	zone, ns, err := findNS(ctx, r, p.Zone, fqdn)
	var addrs []string
	for _, n := range ns {
		ips, lerr := r.LookupHost(ctx, n.Host)
		if lerr != nil {
			err = errors.Join(err, lerr)
			continue
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, "53"))
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	if len(addrs) > 0 {
		return addrs, nil
	}
	if p.Fallback != "" {
		return []string{withPort(p.Fallback)}, nil
	}
	if zone == "" {
		zone = "the zone of " + fqdn
	}
	return nil, fmt.Errorf("dns01: cannot find the authoritative servers of %s (%v): set dns_resolvers", zone, err)
}

// findNS looks up the NS records of zone, or, when zone is "", of fqdn's
// parent and its parents until one has them.
func findNS(ctx context.Context, r *net.Resolver, zone, fqdn string) (string, []*net.NS, error) {
	if zone != "" {
		ns, err := r.LookupNS(ctx, dns.Fqdn(zone))
		return zone, ns, err
	}
	var err error
	labels := dns.SplitDomainName(fqdn)
	for i := 1; i < len(labels)-1; i++ { // not the record itself, not a TLD
		name := dns.Fqdn(strings.Join(labels[i:], "."))
		var ns []*net.NS
		if ns, err = r.LookupNS(ctx, name); err == nil && len(ns) > 0 {
			return name, ns, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return "", nil, err
}

// Bound is the longest Wait can take: the lookup of the servers and the
// timeout.
func (p *Propagation) Bound() time.Duration {
	t := p.Timeout
	if t <= 0 {
		t = DefaultPropagationTimeout
	}
	return lookupTimeout + t + queryTimeout
}
