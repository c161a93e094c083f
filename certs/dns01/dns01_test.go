package dns01

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// server is a tiny authoritative server for one zone taking TSIG-signed
// updates of TXT records, for the unit tests; the end-to-end tests use
// BIND.
type server struct {
	addr   string
	zone   string
	key    string // TSIG key name, fully qualified
	secret string

	mu  sync.Mutex
	txt map[string][]string // name → values
}

func startServer(t *testing.T, zone string) *server {
	t.Helper()
	s := &server{zone: dns.Fqdn(zone), key: "gw-key.", secret: base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")),
		txt: map[string][]string{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		l.Close()
		t.Skipf("no UDP on the TCP port: %v", err)
	}
	s.addr = l.Addr().String()
	secrets := map[string]string{s.key: s.secret}
	started := make(chan struct{}, 2)
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept } // updates too
	tcp := &dns.Server{Listener: l, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept, NotifyStartedFunc: func() { started <- struct{}{} }}
	udp := &dns.Server{PacketConn: pc, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept, NotifyStartedFunc: func() { started <- struct{}{} }}
	go tcp.ActivateAndServe()
	go udp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() { tcp.Shutdown(); udp.Shutdown() })
	return s
}

func (s *server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	defer func() { _ = w.WriteMsg(m) }()
	if t := r.IsTsig(); t != nil {
		switch {
		case t.Hdr.Name != s.key:
			m.Rcode = dns.RcodeNotAuth
			m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
			m.Extra[len(m.Extra)-1].(*dns.TSIG).Error = dns.RcodeBadKey
			return
		case w.TsigStatus() != nil:
			m.Rcode = dns.RcodeNotAuth
			m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
			m.Extra[len(m.Extra)-1].(*dns.TSIG).Error = dns.RcodeBadSig
			return
		}
		m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Opcode == dns.OpcodeUpdate {
		switch {
		case r.IsTsig() == nil:
			m.Rcode = dns.RcodeRefused
		case len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, s.zone):
			m.Rcode = dns.RcodeNotAuth
		default:
			for _, rr := range r.Ns {
				txt, ok := rr.(*dns.TXT)
				if !ok {
					continue
				}
				name := strings.ToLower(txt.Hdr.Name)
				v := strings.Join(txt.Txt, "")
				if txt.Hdr.Class == dns.ClassNONE { // delete this RR
					var kept []string
					for _, x := range s.txt[name] {
						if x != v {
							kept = append(kept, x)
						}
					}
					s.txt[name] = kept
				} else {
					s.txt[name] = append(s.txt[name], v)
				}
			}
		}
		return
	}
	q := r.Question[0]
	if !dns.IsSubDomain(s.zone, strings.ToLower(q.Name)) {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return
	}
	for _, v := range s.txt[strings.ToLower(q.Name)] {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{v}})
	}
	if len(m.Answer) == 0 {
		m.Rcode = dns.RcodeNameError
	}
}

func (s *server) values(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.txt[dns.Fqdn(name)]...)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestRFC2136: a record added and removed, and each refusal named for
// what it is, the secret in none.
func TestRFC2136(t *testing.T) {
	t.Parallel()
	s := startServer(t, "example.test")
	const fqdn = "_acme-challenge.gw.example.test."
	u := &RFC2136{Server: s.addr, Zone: "example.test", KeyName: "gw-key", Secret: s.secret}
	if err := u.Present(ctx(t), fqdn, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := u.Present(ctx(t), fqdn, "v2"); err != nil {
		t.Fatal(err)
	}
	if got := s.values(fqdn); strings.Join(got, ",") != "v1,v2" {
		t.Fatalf("records %q after two adds", got)
	}
	p := &Propagation{Servers: []string{s.addr}, Timeout: 5 * time.Second, Interval: 10 * time.Millisecond}
	if servers, err := p.Wait(ctx(t), fqdn, "v2"); err != nil || len(servers) != 1 {
		t.Errorf("Wait: %v %v", servers, err)
	}
	if err := u.CleanUp(ctx(t), fqdn, "v1"); err != nil {
		t.Fatal(err)
	}
	if got := s.values(fqdn); strings.Join(got, ",") != "v2" {
		t.Fatalf("records %q after deleting v1, want v2 alone", got)
	}

	wrong := base64.StdEncoding.EncodeToString([]byte("not the secret, not the secret!!"))
	for _, tc := range []struct {
		name string
		u    RFC2136
		want string
		key  bool
	}{
		{"wrong secret", RFC2136{Server: s.addr, Zone: "example.test", KeyName: "gw-key", Secret: wrong},
			"refused: TSIG key rejected (NOTAUTH/BADSIG)", true},
		{"unknown key", RFC2136{Server: s.addr, Zone: "example.test", KeyName: "other-key", Secret: s.secret},
			"refused: TSIG key rejected (NOTAUTH/BADKEY)", true},
		{"unknown zone", RFC2136{Server: s.addr, Zone: "gw.example.test", KeyName: "gw-key", Secret: s.secret},
			`refused: server is not authoritative for zone "gw.example.test." (NOTAUTH)`, false},
		{"bad algorithm", RFC2136{Server: s.addr, Zone: "example.test", KeyName: "gw-key", Secret: s.secret, Algorithm: "md5"},
			`unknown TSIG algorithm "md5"`, false},
		{"outside zone", RFC2136{Server: s.addr, Zone: "example.org", KeyName: "gw-key", Secret: s.secret},
			`not in zone "example.org."`, false},
	} {
		err := tc.u.Present(ctx(t), fqdn, "v3")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		var ue *UpdateError
		if errors.As(err, &ue) && ue.KeyRejected() != tc.key {
			t.Errorf("%s: KeyRejected() = %v", tc.name, ue.KeyRejected())
		}
		if strings.Contains(err.Error(), tc.u.Secret) {
			t.Errorf("%s: the secret is in the error: %v", tc.name, err)
		}
	}

	// Nothing listening: a network error, as a *net.OpError.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	err := (&RFC2136{Server: dead, Zone: "example.test", KeyName: "gw-key", Secret: s.secret}).Present(ctx(t), fqdn, "v")
	var oe *net.OpError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "update add of "+fqdn+" at "+dead) {
		t.Errorf("dead server: %v (%T), want a *net.OpError naming the update", err, err)
	}
}

// TestPropagationNotVisible: a record never set times out with what each
// server said.
func TestPropagationNotVisible(t *testing.T) {
	t.Parallel()
	s := startServer(t, "example.test")
	p := &Propagation{Servers: []string{s.addr}, Timeout: 300 * time.Millisecond, Interval: 50 * time.Millisecond}
	start := time.Now()
	_, err := p.Wait(ctx(t), "_acme-challenge.gw.example.test", "v")
	var nv *NotVisibleError
	if !errors.As(err, &nv) || !strings.Contains(err.Error(), "not visible after") || !strings.Contains(err.Error(), s.addr+" (NXDOMAIN)") {
		t.Fatalf("Wait: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait took %v with a 300ms timeout", d)
	}
	// Found by the fallback when the zone has no NS records anywhere.
	p = &Propagation{Zone: "invalid.", Fallback: s.addr, Timeout: 100 * time.Millisecond, Interval: 50 * time.Millisecond}
	if _, err := p.Wait(ctx(t), "_acme-challenge.gw.invalid", "v"); !errors.As(err, &nv) || nv.Servers[0] != s.addr {
		t.Errorf("Wait with the fallback: %v", err)
	}
}

// TestHook: the program gets present/cleanup, the name with its dot and
// the value; a failure quotes its standard error, bounded; a hang is
// killed after the timeout.
func TestHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := &Hook{Path: script("ok", `echo "$@" >> `+log)}
	if err := ok.Present(ctx(t), "_acme-challenge.gw.example.test", "abc"); err != nil {
		t.Fatal(err)
	}
	if err := ok.CleanUp(ctx(t), "_acme-challenge.gw.example.test.", "abc"); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(log)
	if want := "present _acme-challenge.gw.example.test. abc\ncleanup _acme-challenge.gw.example.test. abc\n"; string(calls) != want {
		t.Errorf("calls:\n%s\nwant:\n%s", calls, want)
	}

	fail := &Hook{Path: script("fail", `echo "provider says: zone locked" >&2; exit 3`)}
	err := fail.Present(ctx(t), "_acme-challenge.gw.example.test.", "abc")
	if err == nil || !strings.Contains(err.Error(), "hook "+fail.Path+" present _acme-challenge.gw.example.test.: exit status 3: provider says: zone locked") {
		t.Errorf("failing hook: %v", err)
	}
	chatty := &Hook{Path: script("chatty", `i=0; while [ $i -lt 2000 ]; do echo "line $i of noise" >&2; i=$((i+1)); done; exit 1`)}
	err = chatty.Present(ctx(t), "x.example.test.", "abc")
	if err == nil || len(err.Error()) > hookOutput+200 || !strings.Contains(err.Error(), "line 1999 of noise") {
		t.Errorf("chatty hook: %d bytes: %.300v", len(err.Error()), err)
	}
	hang := &Hook{Path: script("hang", `exec sleep 60`), Timeout: 200 * time.Millisecond}
	start := time.Now()
	err = hang.Present(ctx(t), "x.example.test.", "abc")
	if err == nil || !strings.Contains(err.Error(), "did not finish within 200ms, killed") || time.Since(start) > 10*time.Second {
		t.Errorf("hanging hook: %v after %v", err, time.Since(start))
	}
	missing := &Hook{Path: filepath.Join(dir, "none")}
	if err := missing.Present(ctx(t), "x.example.test.", "abc"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing hook: %v", err)
	}
}

func TestSecret(t *testing.T) {
	t.Parallel()
	const b64 = "x6S3cJ+g7jK1QmYvH0c8rQ2c9t0iYbP3yT8a0Tn0kS8="
	for _, tc := range []struct{ in, want, err string }{
		{b64 + "\n", b64, ""},
		{"key \"gw\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + b64 + "\";\n};\n", b64, ""},
		{"key \"gw\" { algorithm hmac-sha256; };", "", "no secret"},
		{"hunter2!", "", "not valid base64 (at byte 7 of 8)"},
		{"", "", "empty secret"},
	} {
		got, err := ParseSecret([]byte(tc.in))
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseSecret(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && tc.in != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.in)) {
			t.Errorf("ParseSecret(%q): the input is in the error", tc.in)
		}
	}
	for in, want := range map[string]string{"": dns.HmacSHA256, "HMAC-SHA512.": dns.HmacSHA512, "sha1": dns.HmacSHA1} {
		if got, ok := Algorithm(in); !ok || got != want {
			t.Errorf("Algorithm(%q) = %q, %v", in, got, ok)
		}
	}
	if _, ok := Algorithm("hmac-md5"); ok {
		t.Error("hmac-md5 accepted")
	}
}
