package app_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

// The example of README "Running several gateways": HAProxy's
// configuration and the nodes' one.
const (
	haproxyExample = "../../configs/haproxy/haproxy.cfg"
	nodeExample    = "../../configs/haproxy/smqgw.toml"
)

// failoverWithin bounds how long the clients of a drained node take to be
// back through the other, under -race on a loaded machine.
const failoverWithin = 20 * time.Second

// TestHAProxyTwoGateways runs the example of configs/haproxy as it ships,
// its addresses replaced: HAProxy in TCP mode with send-proxy-v2 and
// /readyz health checks in front of two smqgw nodes sharing a
// session_ticket_key_file, and a broker, all on loopback. Clients, raw and
// WebSocket, each from an address of its own (127.0.0.x), connect through
// HAProxy. It checks that the broker sees each client's own address (its
// Init IP and X-Forwarded-For) and a raw client reads it in Init, that
// both nodes pass the health check and take sessions, and that when one
// node drains its clients, raw and WebSocket, are back through the other
// within failoverWithin, on TLS sessions resumed with the other node's
// tickets, while the other node's clients stay; HAProxy then marks the
// drained node down. The shipped files also pass haproxy -c and
// smqgw -t -no-files as they are.
func TestHAProxyTwoGateways(t *testing.T) {
	t.Parallel()
	bin := haproxyPath(t)
	if out, err := exec.Command(bin, "-c", "-f", haproxyExample).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c -f %s: %v\n%s", haproxyExample, err, out)
	}
	if _, err := config.LoadNoFiles(nodeExample); err != nil { // smqgw -t -no-files
		t.Fatalf("%s: %v", nodeExample, err)
	}

	// The broker: it believes the nodes' X-Forwarded-For (they connect from
	// 127.0.0.1) and records, per UID, the address of each session.
	var mu sync.Mutex
	seen := map[string][]string{} // uid -> "IP XFF" per Connect
	bl := smqtest.Listen(t)
	apptest.Broker(t, broker.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Authenticate: func(req *broker.ConnectRequest) (smq.ConnackCode, string) {
			mu.Lock()
			defer mu.Unlock()
			xff := strings.Join(req.Peer.Header.Values("X-Forwarded-For"), ",")
			seen[req.Connect.UID] = append(seen[req.Connect.UID], req.Peer.IP+" "+xff)
			return smq.CodeAccepted, ""
		},
	}, bl)
	// The broker sees a client's UID bound to its identity: "anon:" + UID
	// for a client without a certificate (README "UIDs and identities").
	seenBy := func(uid string) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen["anon:"+uid]...)
	}

	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "127.0.0.1")
	keyFile := filepath.Join(t.TempDir(), "tickets.key")
	apptest.WriteFile(t, keyFile, []byte(strings.Repeat("5a", 32)+"\n"))
	node := substitute(t, nodeExample, [][2]string{
		{`"/etc/smqgw/tickets.key"`, fmt.Sprintf("%q", keyFile)},
		{`address = ":9100"`, `address = "127.0.0.1:0"`},
		{`address = ":8443"`, `address = "127.0.0.1:0"`},
		{`["10.0.0.2/32"]`, `["127.0.0.1/32"]`},
		{`"http://10.0.0.5/smq.lsp"`, fmt.Sprintf(`"http://%s/smq.lsp"`, bl.Addr())},
		{`"/etc/smqgw/gw.example.com.pem"`, fmt.Sprintf("%q", leaf.CertFile)},
		{`"/etc/smqgw/gw.example.com-key.pem"`, fmt.Sprintf("%q", leaf.KeyFile)},
	})
	gw1 := apptest.Start(t, t.TempDir(), node)
	gw2 := apptest.Start(t, t.TempDir(), node)

	// HAProxy serves a listener of the test's (fd@3): no port to race for,
	// and connections wait in its backlog until HAProxy accepts them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := ln.Addr().String()
	serverLine := func(gw *apptest.Running) string {
		return fmt.Sprintf("%s check port %d", gw.GW.Addr("edge"), gw.GW.AdminAddr().(*net.TCPAddr).Port)
	}
	cfg := substitute(t, haproxyExample, [][2]string{
		{"log /dev/log local0", "log stderr format raw local0 info"},
		{"maxconn 50000", "maxconn 1000"}, // within a test's descriptor limit
		{"bind :443", "bind fd@3"},
		{"10.0.0.11:8443 check port 9100", serverLine(gw1)},
		{"10.0.0.12:8443 check port 9100", serverLine(gw2)},
		{"inter 2s fall 2 rise 2", "inter 200ms fall 1 rise 1"},
		// Each check's change of outcome logged: the test waits for them.
		{"option httpchk GET /readyz", "option httpchk GET /readyz\n    option log-health-checks"},
	})
	haLog := startHAProxy(t, bin, cfg, ln)

	// Clients through HAProxy, each from its own source address,
	// reconnecting soon after a loss: raw, WebSocket, WebSocket, raw, ...
	// so that each node gets both kinds from leastconn, which alternates
	// between the nodes when they hold as many sessions.
	type peer struct {
		uid, ip  string
		ws       bool
		c        *client.Client
		connects atomic.Int32 // Connected events
		resumed  atomic.Bool  // the last TLS handshake resumed a session
	}
	peers := make([]*peer, 6)
	for i := range peers {
		p := &peer{uid: fmt.Sprintf("haproxy-client-%d", i), ip: fmt.Sprintf("127.0.0.%d", 10+i)}
		peers[i] = p
		scheme := "https"
		if i%4 == 1 || i%4 == 2 {
			scheme = "wss"
		}
		p.ws = scheme == "wss"
		tc := &tls.Config{
			ClientSessionCache: keepTickets{tls.NewLRUClientSessionCache(4)},
			VerifyConnection: func(cs tls.ConnectionState) error {
				p.resumed.Store(cs.DidResume)
				return nil
			},
		}
		c, err := client.Dial(smqtest.Context(t), scheme+"://"+front+"/smq", client.Options{
			UID:        p.uid,
			RootCAs:    ca.Pool,
			TLSConfig:  tc,
			Dialer:     &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(p.ip)}, Timeout: smqtest.WaitFor},
			Reconnect:  true,
			MinBackoff: 50 * time.Millisecond,
			MaxBackoff: 500 * time.Millisecond,
			OnState: func(sc client.StateChange) {
				if sc.State == client.Connected {
					p.connects.Add(1)
				}
			},
		})
		if err != nil {
			t.Fatalf("client %d (%s) through haproxy: %v", i, scheme, err)
		}
		p.c = c
		t.Cleanup(func() { c.Close() })
	}
	smqtest.WaitUntil(t, "every client connected once and on a node", func() bool {
		for _, p := range peers {
			if p.connects.Load() != 1 {
				return false
			}
		}
		return gw1.GW.Sessions()+gw2.GW.Sessions() == len(peers)
	})
	n1 := gw1.GW.Sessions()
	if n1 == 0 || n1 == len(peers) {
		t.Fatalf("sessions: %d on gw1, %d on gw2: want both nodes used", n1, gw2.GW.Sessions())
	}
	for _, p := range peers {
		want := p.ip + " " + p.ip
		if got := seenBy(p.uid); len(got) != 1 || got[0] != want {
			t.Errorf("%s from %s: the broker saw %q, want [%q] (Init IP, X-Forwarded-For)", p.uid, p.ip, got, want)
		}
	}
	apptest.PubSub(t, peers[0].c, peers[1].c)

	// What a raw client reads in Init: its own address.
	rc := initThrough(t, front, ca, "127.0.0.40")
	if rc.IP != "127.0.0.40" {
		t.Errorf("Init through haproxy carries IP %q, want 127.0.0.40", rc.IP)
	}

	// Both nodes pass HAProxy's health check: /readyz on the admin port.
	for _, name := range []string{"gw1", "gw2"} {
		smqtest.WaitUntil(t, "haproxy's check of "+name+" to pass", func() bool {
			return strings.Contains(haLog.String(), "Health check for server smqgw/"+name+" succeeded, reason: Layer7 check passed, code: 200")
		})
	}

	// gw1 drains; its clients come back through gw2.
	began := time.Now()
	gw1.Stop()
	smqtest.WaitUntilWithin(t, failoverWithin, "gw1's clients back on gw2", func() bool {
		again := 0
		for _, p := range peers {
			if p.connects.Load() == 2 {
				again++
			}
		}
		return again == n1 && gw2.GW.Sessions() == len(peers)
	})
	t.Logf("%d clients of the drained node back through the other in %v", n1, time.Since(began).Round(time.Millisecond))
	kinds := map[bool]int{} // WebSocket or not: clients that failed over
	for _, p := range peers {
		got := seenBy(p.uid)
		switch p.connects.Load() {
		case 1: // on gw2 all along
			if len(got) != 1 {
				t.Errorf("%s stayed connected, yet the broker saw %d Connects", p.uid, len(got))
			}
		case 2:
			kinds[p.ws]++
			if !p.resumed.Load() {
				t.Errorf("%s reconnected on gw2 with a full TLS handshake: gw1's ticket did not open there", p.uid)
			}
			if want := p.ip + " " + p.ip; len(got) != 2 || got[1] != want {
				t.Errorf("%s reconnected from %s: the broker saw %q, want %q last", p.uid, p.ip, got, want)
			}
		default:
			t.Errorf("%s connected %d times", p.uid, p.connects.Load())
		}
	}
	if kinds[false] == 0 || kinds[true] == 0 {
		t.Errorf("failed over: %d raw and %d WebSocket clients, want both kinds", kinds[false], kinds[true])
	}
	apptest.PubSub(t, peers[len(peers)-1].c, peers[0].c)
	apptest.PubSub(t, peers[0].c, peers[1].c)

	// The health checks found gw1 down, never gw2, which still takes new
	// sessions.
	smqtest.WaitUntil(t, "haproxy to mark gw1 down", func() bool {
		return strings.Contains(haLog.String(), "Server smqgw/gw1 is DOWN")
	})
	if in := initThrough(t, front, ca, "127.0.0.41"); in.IP != "127.0.0.41" {
		t.Errorf("Init through haproxy after the failover carries IP %q, want 127.0.0.41", in.IP)
	}
	if strings.Contains(haLog.String(), "Health check for server smqgw/gw2 failed") {
		t.Error("haproxy's check of gw2 failed")
	}
}

// haproxyPath finds Debian's haproxy (in /usr/sbin, which a user's PATH
// may lack); without it the test is skipped, or fails when CI=true.
func haproxyPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/haproxy"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/haproxy"
	}
	const msg = "haproxy not found; install it: apt-get install haproxy"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// substitute reads file and replaces each pair's first string, which must
// occur exactly once, by its second.
func substitute(t *testing.T, file string, pairs [][2]string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, p := range pairs {
		if n := strings.Count(s, p[0]); n != 1 {
			t.Fatalf("%s holds %q %d times, want once: the test replaces it", file, p[0], n)
		}
		s = strings.Replace(s, p[0], p[1], 1)
	}
	return s
}

// startHAProxy checks cfg (haproxy -c) and runs HAProxy in the foreground
// on it, ln passed as fd 3 (closed here), until the test ends (SIGTERM, then SIGKILL).
// It returns HAProxy's log (its standard error and output).
func startHAProxy(t *testing.T, bin, cfg string, ln net.Listener) *smqtest.SyncBuffer {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close() // the children's copy, f, stays open
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	check := exec.Command(bin, "-c", "-f", file)
	check.ExtraFiles = []*os.File{f} // it checks fd@3 too
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	logs := &smqtest.SyncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", file)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(smqtest.WaitFor):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy log:\n%s", logs.String())
		}
	})
	select {
	case <-exited:
		t.Fatalf("haproxy exited at start:\n%s", logs.String())
	default:
	}
	return logs
}

// initThrough bootstraps a raw SMQ session over TLS through the load
// balancer at front from the source address ip and returns the Init read.
func initThrough(t *testing.T, front string, ca *testpki.CA, ip string) smq.Init {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: smqtest.WaitFor}
	tc, err := tls.DialWithDialer(d, "tcp", front, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := smqtest.New(t, tc)
	c.WriteBytes(smqtest.RawRequest("GET /smq HTTP/1.1", "Host: "+front, "SimpleMQ: 1"))
	in := c.ReadInit()
	c.Close()
	return in
}

// keepTickets is a client session cache that keeps a ticket after a failed
// handshake. Go's client drops it then (RFC 5077 §3.2), and a reconnect
// may fail once during a failover: HAProxy sent it to the draining node,
// whose refusal it retries, and cut it when the health check marked that
// node down (on-marked-down shutdown-sessions). The next attempt would
// then make a full handshake whatever the nodes' keys. Kept, the ticket
// shows whether the node the client lands on opens the drained node's.
type keepTickets struct{ tls.ClientSessionCache }

func (c keepTickets) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.ClientSessionCache.Put(key, cs)
	}
}
