//go:build unix

// Package bindtest runs BIND 9's named, Debian's package bind9, for tests: an
// authoritative primary on loopback for one or more test zones that accepts
// RFC 2136 dynamic updates signed with a TSIG key made up for each start. It
// answers on 127.0.0.1 only, over UDP and TCP on one free port, runs as the
// test's own child in the foreground, and stops with the test.
//
// What BIND 9.18 answers, which the tests of this package pin down:
//   - an update signed with the key for a name in a zone: NOERROR;
//   - an update signed with a wrong secret: NOTAUTH, with TSIG error BADSIG
//     in an unsigned TSIG record (nsupdate says "update failed:
//     NOTAUTH(BADSIG)"); with a key name named does not know: NOTAUTH,
//     with TSIG error BADKEY likewise;
//   - an update for a zone the server does not serve, signed with the key:
//     NOTAUTH (named logs "not authoritative for update zone");
//   - a query for a name outside its zones: REFUSED (recursion is off).
//
// github.com/miekg/dns returns every NOTAUTH answer with the error ErrAuth,
// without verifying its TSIG; the answer's TSIG error (r.IsTsig().Error)
// tells a wrong key (BADSIG, BADKEY) from a zone named does not
// serve (NOERROR).
//
// The port is reserved and then released for named to bind, so another
// program may take it meanwhile. If that one holds the UDP port, named exits
// with "unable to listen on any configured interfaces"; if it holds the TCP
// port, named logs "creating TCP socket: address in use" and keeps running
// on UDP alone. Start tells both from other failures and tries another port.
package bindtest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/smqgw/smqgw/internal/childproc"
)

const (
	// startTimeout bounds one start of named, until it answers.
	startTimeout = 30 * time.Second
	// pollEvery is the readiness polling interval.
	pollEvery = 25 * time.Millisecond
	// queryTimeout bounds one DNS exchange with the server.
	queryTimeout = 5 * time.Second
	// outputTail is how much of named's output a failed test logs.
	outputTail = 16 << 10
	// startAttempts bounds Start's tries when the port is taken.
	startAttempts = 3
)

// DefaultZone is the zone served when Options.Zones is empty.
const DefaultZone = "example.test."

// keyName is the name of the TSIG key.
const keyName = "bindtest-key"

// algorithms maps the TSIG algorithms Options.Algorithm accepts, spelled as
// named.conf spells them, to the length of the secret Start makes (the
// HMAC's output size, as RFC 8945 section 6 recommends).
var algorithms = map[string]int{
	"hmac-sha1":   20,
	"hmac-sha224": 28,
	"hmac-sha256": 32,
	"hmac-sha384": 48,
	"hmac-sha512": 64,
}

// Options configures Start. The zero value serves DefaultZone with an
// hmac-sha256 key.
type Options struct {
	// Zones are the zones served, fully qualified ("example.test."), each
	// with an SOA, an NS record ns.ZONE and ns.ZONE's A record 127.0.0.1,
	// and each open to updates of any name in it signed with the key. Empty
	// means DefaultZone alone.
	Zones []string

	// Algorithm is the TSIG key's algorithm: hmac-sha1, hmac-sha224,
	// hmac-sha256, hmac-sha384 or hmac-sha512. Empty means hmac-sha256.
	Algorithm string
}

// Server is a running named, started by Start.
type Server struct {
	// Addr is where named answers, "127.0.0.1:PORT", over UDP and TCP.
	Addr string

	// Zone is the first of Zones; Zones are the zones named serves, fully
	// qualified and lower case.
	Zone  string
	Zones []string

	// KeyName, KeyAlgorithm and KeySecret are the TSIG key named accepts
	// updates with: KeyName as named.conf spells it, not fully qualified
	// (github.com/miekg/dns wants dns.Fqdn(KeyName)); KeyAlgorithm likewise
	// ("hmac-sha256"; dns.Fqdn of it is miekg/dns's constant); KeySecret in
	// standard base64, random for each start. nsupdate takes them as
	// -y KeyAlgorithm:KeyName:KeySecret.
	KeyName      string
	KeyAlgorithm string
	KeySecret    string

	// Dir is named's working directory: named.conf, the zone files and
	// their journals.
	Dir string

	proc        *childproc.Process
	startFailed bool // launch said why named did not start
}

// Start runs named for opts on a free loopback port and returns once it
// answers SOA queries for every zone over UDP and TCP, failing t after 30
// seconds. Stop is registered with t.Cleanup; if t fails, the tail of
// named's output is logged.
//
// When named is not installed, Start skips t, or fails it if the
// environment variable CI is "true".
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	named := LookPath(t, "named")
	var zones []string
	for _, z := range opts.Zones {
		if _, ok := dns.IsDomainName(z); !ok || !dns.IsFqdn(z) || z == "." {
			t.Fatalf("bindtest: invalid zone %q: want a fully qualified name such as %q", z, DefaultZone)
		}
		zones = append(zones, strings.ToLower(z))
	}
	if len(zones) == 0 {
		zones = []string{DefaultZone}
	}
	alg := opts.Algorithm
	if alg == "" {
		alg = "hmac-sha256"
	}
	size, ok := algorithms[alg]
	if !ok {
		t.Fatalf("bindtest: unknown TSIG algorithm %q", alg)
	}
	secret := make([]byte, size)
	rand.Read(secret)

	for attempt := 1; ; attempt++ {
		s := &Server{
			Zone:         zones[0],
			Zones:        zones,
			KeyName:      keyName,
			KeyAlgorithm: alg,
			KeySecret:    base64.StdEncoding.EncodeToString(secret),
			Dir:          t.TempDir(),
		}
		err := s.launch(t, named)
		if err == nil {
			return s
		}
		if attempt == startAttempts || !errors.Is(err, errPortTaken) {
			t.Fatalf("bindtest: %v", err)
		}
		t.Logf("bindtest: %v; trying another port", err)
	}
}

// portReleased, when set (by a test), is called with the port named will
// listen on, after it is found free and before named starts.
var portReleased func(port int)

// errPortTaken marks a start that failed because the port was taken
// between its reservation and named's bind.
var errPortTaken = errors.New("the port was taken before named bound it")

// launch writes the configuration, starts named and waits until it answers.
// On failure it stops named and says why, with the tail of its output.
func (s *Server) launch(t testing.TB, named string) error {
	t.Helper()
	var ports childproc.Ports
	port := ports.TCPAndUDP(t)
	ports.Release()
	if portReleased != nil {
		portReleased(port)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := s.writeConfig(t, port)

	cmd := exec.Command(named, "-g", "-4", "-n", "2", "-c", conf)
	cmd.Dir = s.Dir
	proc, err := childproc.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting %s: %w", named, err)
	}
	s.proc = proc
	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(func() {
		s.Stop()
		if s.proc.Crashed() && !s.startFailed && !t.Failed() {
			t.Errorf("bindtest: named exited before Stop: %v", s.proc.Err())
		}
		if t.Failed() {
			t.Logf("bindtest: output of named (tail):\n%s", s.proc.Out.Last(outputTail))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.await(ctx); err != nil {
		s.Stop()
		tail := s.proc.Out.Last(outputTail)
		err = fmt.Errorf("%w\noutput of named (tail):\n%s", err, tail)
		if strings.Contains(tail, "permission denied") {
			// Debian's AppArmor profile for /usr/sbin/named allows files
			// under /etc/bind, /var/lib/bind and /var/cache/bind only.
			err = fmt.Errorf("%w\nhint: if AppArmor confines named, let it read %s: aa-complain /usr/sbin/named", err, s.Dir)
		}
		if strings.Contains(tail, "address in use") || strings.Contains(tail, "unable to listen on any configured interfaces") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		// The error says named exited; the cleanup registered above must
		// not say it again (nor fail t when Start tries another port).
		s.startFailed = true
		return err
	}
	return nil
}

// await polls until named answers an SOA query for every zone over UDP and
// TCP, or says why not when named exits, fails to bind, or ctx ends.
func (s *Server) await(ctx context.Context) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		last = s.ready(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-s.proc.Done():
			return fmt.Errorf("named exited while starting: %v", s.proc.Err())
		default:
		}
		if s.proc.Out.Contains("address in use") {
			return errors.New("named could not bind its TCP port")
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("named not ready after %v: %w", startTimeout, last)
		}
	}
}

// ready asks for each zone's SOA over UDP and TCP.
func (s *Server) ready(ctx context.Context) error {
	for _, network := range []string{"udp", "tcp"} {
		for _, z := range s.Zones {
			q := new(dns.Msg).SetQuestion(z, dns.TypeSOA)
			c := &dns.Client{Net: network, Timeout: time.Second}
			r, _, err := c.ExchangeContext(ctx, q, s.Addr)
			if err != nil {
				return fmt.Errorf("SOA %s over %s: %w", z, network, err)
			}
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) == 0 {
				return fmt.Errorf("SOA %s over %s: %s, authoritative %v, %d answers",
					z, network, dns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
			}
		}
	}
	return nil
}

// Stop ends named and waits for it: SIGTERM, then SIGKILL after 3 seconds.
// It may be called more than once; Start registers it with t.Cleanup.
func (s *Server) Stop() { s.proc.Stop() }

// TXT returns the TXT records of name (made fully qualified) as named
// answers them over TCP, each record's strings joined, as an ACME server
// reads them; none if the name or its TXT records do not exist.
func (s *Server) TXT(t testing.TB, name string) []string {
	t.Helper()
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	c := &dns.Client{Net: "tcp", Timeout: queryTimeout}
	r, _, err := c.Exchange(q, s.Addr)
	if err != nil {
		t.Fatalf("bindtest: TXT %s: %v", name, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		t.Fatalf("bindtest: TXT %s: %s", name, dns.RcodeToString[r.Rcode])
	}
	var txts []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			txts = append(txts, strings.Join(txt.Txt, ""))
		}
	}
	return txts
}

// Update adds the TXT record name (made fully qualified) with value, TTL
// 60, by an update signed with the key, failing t unless named answers
// NOERROR. value is one string of at most 255 bytes.
func (s *Server) Update(t testing.TB, name, value string) {
	t.Helper()
	s.mustUpdate(t, true, name, value)
}

// Delete removes the TXT record name with value, as Update adds it.
func (s *Server) Delete(t testing.TB, name, value string) {
	t.Helper()
	s.mustUpdate(t, false, name, value)
}

func (s *Server) mustUpdate(t testing.TB, add bool, name, value string) {
	t.Helper()
	name = dns.Fqdn(name)
	zone := s.zoneOf(name)
	if zone == "" {
		t.Fatalf("bindtest: %q is in none of the zones %q", name, s.Zones)
	}
	r, err := s.update(zone, "", s.KeySecret, add, name, value)
	if r != nil && r.Rcode != dns.RcodeSuccess {
		rcode := dns.RcodeToString[r.Rcode]
		if tsig := r.IsTsig(); tsig != nil && tsig.Error != dns.RcodeSuccess {
			rcode += "(" + dns.RcodeToString[int(tsig.Error)] + ")"
		}
		t.Fatalf("bindtest: update of %s TXT %q: %s", name, value, rcode)
	}
	if err != nil {
		t.Fatalf("bindtest: update of %s TXT %q: %v", name, value, err)
	}
}

// zoneOf returns the longest of s.Zones that holds name, or "".
func (s *Server) zoneOf(name string) string {
	best := ""
	for _, z := range s.Zones {
		if dns.IsSubDomain(z, strings.ToLower(name)) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// update sends an RFC 2136 update for zone over TCP, signed with the key
// keyName (s.KeyName if empty) and secret, adding (or, when add is false,
// deleting) the TXT record name with value. A NOTAUTH answer comes with
// miekg/dns's ErrAuth.
func (s *Server) update(zone, keyName, secret string, add bool, name, value string) (*dns.Msg, error) {
	m := new(dns.Msg).SetUpdate(zone)
	rr := []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{value},
	}}
	if add {
		m.Insert(rr)
	} else {
		m.Remove(rr)
	}
	key := dns.Fqdn(cmp.Or(keyName, s.KeyName))
	m.SetTsig(key, dns.Fqdn(s.KeyAlgorithm), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: queryTimeout, TsigSecret: map[string]string{key: secret}}
	r, _, err := c.Exchange(m, s.Addr)
	return r, err
}

// writeConfig writes named.conf and a zone file per zone into s.Dir and
// returns the configuration's path.
func (s *Server) writeConfig(t testing.TB, port int) string {
	t.Helper()
	var b strings.Builder
	// Everything named writes goes to s.Dir. No rndc channel (controls {}),
	// no NOTIFY (it would go to port 53), no recursion, no DNSSEC
	// validation (no trust anchors to maintain), no built-in empty zones.
	fmt.Fprintf(&b, `options {
	directory %[1]q;
	pid-file %[2]q;
	session-keyfile %[3]q;
	managed-keys-directory %[1]q;
	listen-on port %[4]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	empty-zones-enable no;
	geoip-directory none;
};
controls { };
key %[5]q {
	algorithm %[6]s;
	secret %[7]q;
};
`, s.Dir, filepath.Join(s.Dir, "named.pid"), filepath.Join(s.Dir, "session.key"), port, s.KeyName, s.KeyAlgorithm, s.KeySecret)
	for i, z := range s.Zones {
		file := fmt.Sprintf("zone%d.db", i)
		fmt.Fprintf(&b, `zone %q {
	type primary;
	file %q;
	update-policy { grant %q zonesub ANY; };
};
`, z, file, s.KeyName)
		zoneFile := fmt.Sprintf(`$ORIGIN %[1]s
$TTL 60
@	IN SOA	ns.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@	IN NS	ns.%[1]s
ns	IN A	127.0.0.1
`, z)
		// named writes the zone file and its journal (ZONE.jnl) here.
		if err := os.WriteFile(filepath.Join(s.Dir, file), []byte(zoneFile), 0o600); err != nil {
			t.Fatalf("bindtest: %v", err)
		}
	}
	conf := filepath.Join(s.Dir, "named.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("bindtest: %v", err)
	}
	return conf
}

// LookPath finds a program of BIND's packages (named in bind9, nsupdate in
// bind9-dnsutils), also in the sbin directories a non-root PATH may lack.
// Without it, it skips t, or fails it if the environment variable CI is
// "true".
func LookPath(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("bindtest: %s not found; install it: apt-get install bind9 bind9-dnsutils", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (or set CI=true to fail instead of skipping)")
	return ""
}
