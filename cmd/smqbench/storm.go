package main

// Reconnect storms (issue 17 §3), side by side with nginx on the same
// certificates:
//
//   - TLS handshakes per second, full and resumed, ECDSA P-256 and
//     RSA-2048, served by smqgw and by nginx, with the servers' CPU time
//     per handshake;
//   - whether session tickets survive a reload (SIGHUP) and, with
//     session_ticket_key_file, a restart;
//   - 5,000 sessions, spread over source addresses, each subscribed to one
//     topic, through a restart of the front end (smqgw or nginx) and of
//     the broker behind it: the time until all are back, the reconnect
//     attempts and why they failed, the resumed TLS handshakes, and one
//     message published to them all afterwards (lost = sessions that did
//     not receive it).
//
// Everything listens on loopback. The load (handshake loop and storm
// clients) runs inside this process and shares the machine's CPUs with
// the servers it measures.
//
// For trying parts of it, the environment may hold:
// SMQBENCH_SKIP_HANDSHAKES=1 (storms only), SMQBENCH_STORM_SETUPS (a
// comma-separated list of substrings of the setups' names, e.g.
// "raised,nginx"), SMQBENCH_STORM_SESSIONS (the fleet's size),
// SMQBENCH_STORM_REPS (repetitions, of the handshakes too) and
// SMQBENCH_KEEP=1 (keep the directory with every server's log).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/smqdial"
)

// stormReport is everything the storms measured; every repetition is kept.
type stormReport struct {
	Quick      bool   `json:"quick"`
	CPUs       int    `json:"cpus"`
	TLSVersion string `json:"tls_version"`
	Curve      string `json:"key_exchange"`
	// Handshakes: every repetition of every (server, cert, mode).
	Handshakes []hsRun `json:"handshakes"`
	// Tickets: does a primed client resume after each event?
	Tickets []ticketCheck `json:"tickets"`
	// Connects: the fleet's first connect, per setup: a baseline of what
	// the machine does at a bounded pace (64 dials at a time).
	Connects []connectRun `json:"connects"`
	// Storms: one per (setup, event).
	Storms []stormRun `json:"storms"`
	Notes  []string   `json:"notes"`
}

// hsRun is one timed handshake loop.
type hsRun struct {
	Server     string        `json:"server"` // "smqgw", "nginx"
	Cert       string        `json:"cert"`   // "ecdsa-p256", "rsa-2048"
	Mode       string        `json:"mode"`   // "full", "resumed"
	Rep        int           `json:"rep"`
	Workers    int           `json:"workers"`
	Seconds    float64       `json:"seconds"`
	Handshakes int64         `json:"handshakes"`
	Errors     int64         `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	Misses     int64         `json:"misses"` // resumed mode: handshakes that did not resume
	Resumed    int64         `json:"resumed"`
	Rate       float64       `json:"handshakes_per_s"`
	ServerCPU  time.Duration `json:"server_cpu_ns"`
	CPUPerHS   float64       `json:"server_cpu_us_per_handshake"`
	ClientCPU  time.Duration `json:"client_cpu_ns"` // smqbench itself, the load
}

// ticketCheck: a client with a ticket from before the event, after it.
type ticketCheck struct {
	Server  string `json:"server"`
	Event   string `json:"event"`
	Expect  bool   `json:"expect_resume"`
	Resumed bool   `json:"resumed"`
	Err     string `json:"error,omitempty"`
}

// stormRun is one restart with the fleet connected.
type stormRun struct {
	Setup          string           `json:"setup"` // e.g. "smqgw default limits"
	Event          string           `json:"event"` // e.g. "gateway restart (SIGTERM)"
	Rep            int              `json:"rep"`
	Sessions       int              `json:"sessions"`
	Addresses      int              `json:"addresses"`
	AllBack        bool             `json:"all_back"`
	Back           int64            `json:"back"`
	FromSignal     time.Duration    `json:"all_back_from_signal_ns"`
	FromListening  time.Duration    `json:"all_back_from_listening_ns"`
	Down           time.Duration    `json:"down_ns"` // signal to listening again
	P50            time.Duration    `json:"back_p50_from_signal_ns"`
	P90            time.Duration    `json:"back_p90_from_signal_ns"`
	Attempts       int64            `json:"reconnect_attempts"`
	FailedAttempts map[string]int64 `json:"failed_attempts_by_kind"`
	Ended          map[string]int64 `json:"sessions_ended_by_kind"`
	TLSHandshakes  int64            `json:"tls_handshakes"`
	TLSResumed     int64            `json:"tls_resumed"`
	GaveUp         int64            `json:"clients_gave_up"`
	WouldStopJS    int64            `json:"would_stop_smqjs"` // a Connack refusal or a Disconnect reached a client
	Published      bool             `json:"published"`
	Received       int64            `json:"received"`
	Lost           int64            `json:"lost"`
	Err            string           `json:"error,omitempty"`
}

// connectRun is the fleet's first connect.
type connectRun struct {
	Setup          string           `json:"setup"`
	Sessions       int              `json:"sessions"`
	Connected      int              `json:"connected"`
	Seconds        float64          `json:"seconds"`
	FailedAttempts map[string]int64 `json:"failed_attempts_by_kind"`
	Err            string           `json:"error,omitempty"`
}

// stormSizes are the dimensions of a run.
type stormSizes struct {
	reps      int
	rest      time.Duration // before each storm
	dense     int           // sessions per address in the dense setup
	hsTime    time.Duration
	workers   int
	sessions  int
	perAddr   int
	waitBack  time.Duration
	waitDeliv time.Duration
}

func stormSizing(quick bool) stormSizes {
	if quick {
		return stormSizes{reps: 1, rest: 3 * time.Second, dense: 250, hsTime: time.Second, workers: 16, sessions: 1000, perAddr: 100,
			waitBack: 30 * time.Second, waitDeliv: 5 * time.Second}
	}
	return stormSizes{reps: 3, rest: 3 * time.Second, dense: 500, hsTime: 3 * time.Second, workers: 32, sessions: 5000, perAddr: 100,
		waitBack: 90 * time.Second, waitDeliv: 10 * time.Second}
}

// stormPKI is the run's CA and the two server certificates, as files.
type stormPKI struct {
	pool  *x509.CertPool
	files map[string][2]string // cert name → cert file, key file
}

var hsCerts = []string{"ecdsa-p256", "rsa-2048"}

// storms measures handshakes, tickets and reconnect storms. It starts
// and stops its own processes; e must have been built (or is built here).
func (e *env) storms(quick bool) (*stormReport, error) {
	if e.smqgw == "" {
		if err := e.build(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(e.dir, "storm-")
	if err != nil {
		return nil, err
	}
	s := &env{dir: dir, smq: e.smq, smqgw: e.smqgw, ca: e.ca, nginx: e.nginx, log: e.log}
	defer s.stopAll()
	pki, err := makeStormPKI(dir)
	if err != nil {
		return nil, err
	}
	sz := stormSizing(quick)
	if v, err := strconv.Atoi(os.Getenv("SMQBENCH_STORM_SESSIONS")); err == nil && v > 0 {
		sz.sessions = v
	}
	if v, err := strconv.Atoi(os.Getenv("SMQBENCH_STORM_REPS")); err == nil && v > 0 {
		sz.reps = v
	}
	only := os.Getenv("SMQBENCH_STORM_SETUPS") // comma-separated substrings of setup names
	r := &stormReport{Quick: quick, CPUs: runtime.NumCPU(), TLSVersion: "TLS 1.3", Curve: "X25519"}
	r.Notes = append(r.Notes,
		fmt.Sprintf("load generated inside smqbench (Go crypto/tls clients), sharing the %d CPUs with the servers", runtime.NumCPU()),
		"handshake clients: TLS 1.3 only, X25519 only (Go's default X25519MLKEM768 would be picked by smqgw but not by nginx/OpenSSL 3.0), certificate verified when priming, not in the timed loop",
		"storm clients: X25519 only, as the handshake clients (nginx with OpenSSL 3.0 has no X25519MLKEM768, which smqgw would pick: more CPU on both sides); package client with Reconnect (backoff 0.5 s doubling to 5 s, jitter [b/2, b]); they also retry after Connack 0x02 and Disconnect, which smq.js and the C client would not: such events are counted as would_stop_smqjs")
	nginx, _ := exec.LookPath("nginx")
	if nginx == "" {
		r.Notes = append(r.Notes, "nginx not found: its columns are left out")
	}

	if os.Getenv("SMQBENCH_SKIP_HANDSHAKES") != "1" {
		if err := s.handshakeBench(r, pki, nginx, sz); err != nil {
			return r, err
		}
	}
	s.stopAll()
	setups := []stormSetup{
		{name: "smqgw, default limits", front: "smqgw"},
		{name: "smqgw, limits raised", front: "smqgw", raised: true},
		{name: fmt.Sprintf("smqgw, default limits, %d per address", sz.dense), front: "smqgw", perAddr: sz.dense},
	}
	if nginx != "" {
		setups = append(setups, stormSetup{name: "nginx", front: "nginx", nginx: nginx})
	}
	for _, st := range setups {
		if only != "" && !slices.ContainsFunc(strings.Split(only, ","), func(p string) bool { return strings.Contains(st.name, p) }) {
			continue
		}
		runs, checks, conn, err := s.stormSetupRun(st, pki, sz)
		if conn != nil {
			r.Connects = append(r.Connects, *conn)
		}
		r.Storms = append(r.Storms, runs...)
		r.Tickets = append(r.Tickets, checks...)
		s.stopAll()
		if err != nil {
			return r, fmt.Errorf("storm %s: %w", st.name, err)
		}
	}
	return r, nil
}

// makeStormPKI writes a CA and ECDSA P-256 and RSA-2048 server
// certificates for 127.0.0.1.
func makeStormPKI(dir string) (*stormPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smqbench storm CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &stormPKI{pool: x509.NewCertPool(), files: map[string][2]string{}}
	p.pool.AddCert(ca)
	for i, name := range hsCerts {
		var key any
		if name == "rsa-2048" {
			key, err = rsa.GenerateKey(rand.Reader, 2048)
		} else {
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		}
		if err != nil {
			return nil, err
		}
		pub := key.(crypto.Signer).Public()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			return nil, err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			return nil, err
		}
		p.files[name] = [2]string{cf, kf}
	}
	return p, nil
}

// raisedLimits let any storm through: what is left is the machine.
const raisedLimits = `[limits]
max_sessions = 100000
max_sessions_per_ip = 100000
session_rate_per_ip = 100000
max_pending = 100000
max_pending_per_ip = 100000
max_connections_per_ip = 200000
message_rate = 100000000
message_rate_per_ip = 100000000
`

// proc is one server process, restartable with the same command line.
type proc struct {
	name string
	args []string
	log  string // stderr goes here (appended)
	cmd  *exec.Cmd
}

func (s *env) startProc(p *proc) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Stderr = f
	// Killed with smqbench: no server outlives an interrupted run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.spawn(cmd); err != nil {
		return err
	}
	p.cmd = cmd
	return nil
}

// startLogged starts p and waits (at most 60 s) until its log has one
// more line holding want than before.
func (s *env) startLogged(p *proc, want string) (time.Time, error) {
	count := func() int {
		b, _ := os.ReadFile(p.log)
		return strings.Count(string(b), want)
	}
	before := count()
	if err := s.startProc(p); err != nil {
		return time.Time{}, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if count() > before {
			return time.Now(), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%s: no %q in its log 60 s after its start", p.name, want)
}

// stopProc signals p and waits (at most 20 s, then kills) for it to end.
func stopProc(p *proc, sig syscall.Signal) {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// pids are p's process and its children (nginx's workers).
func (p *proc) pids() []int {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	return append([]int{pid}, children(pid)...)
}

// waitListen polls port every 5 ms for at most 30 s; it returns when it
// first accepted.
func waitListen(port int) (time.Time, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err == nil {
			c.Close()
			return time.Now(), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("nothing listens on port %d after 30s", port)
}

func freePorts(n int) ([]int, error) {
	var out []int
	for len(out) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// newNginx writes prefix/nginx.conf (with an 80-byte session ticket key
// file, kept across restarts) and returns its process, not started.
func newNginx(bin, prefix, servers string) (*proc, error) {
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return nil, err
	}
	key := make([]byte, 80)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(prefix, "ticket.key"), key, 0o600); err != nil {
		return nil, err
	}
	file := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(file, []byte(nginxConf(prefix, `  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets on;
  ssl_session_ticket_key `+prefix+`/ticket.key;
`, servers)), 0o644); err != nil {
		return nil, err
	}
	return &proc{name: "nginx", args: []string{bin, "-p", prefix, "-c", file, "-g", "daemon off;"},
		log: filepath.Join(prefix, "logs", "stderr.log")}, nil
}

// newSmqgw writes dir/name.toml and returns its process, not started.
func (s *env) newSmqgw(name, conf string) (*proc, error) {
	file := filepath.Join(s.dir, name+".toml")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return &proc{name: name, args: []string{s.smqgw, "-config", file}, log: filepath.Join(s.dir, name+".log")}, nil
}

func certsBlock(name string, f [2]string) string {
	return fmt.Sprintf("[certs.%s]\ncert_file = %q\nkey_file = %q\n", name, f[0], f[1])
}

// ---- handshakes ----

func (s *env) handshakeBench(r *stormReport, pki *stormPKI, nginxBin string, sz stormSizes) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	gwPorts := map[string]int{hsCerts[0]: ports[0], hsCerts[1]: ports[1]}
	ngPorts := map[string]int{hsCerts[0]: ports[2], hsCerts[1]: ports[3]}
	conf := fmt.Sprintf("state_dir = %q\n%s", s.dir, raisedLimits)
	for _, c := range hsCerts {
		conf += fmt.Sprintf("[[listener]]\nname = %q\naddress = \"127.0.0.1:%d\"\ntls = %q\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n",
			c, gwPorts[c], c)
	}
	for _, c := range hsCerts {
		conf += certsBlock(c, pki.files[c])
	}
	gw, err := s.newSmqgw("hs-smqgw", conf)
	if err != nil {
		return err
	}
	if err := s.startProc(gw); err != nil {
		return err
	}
	servers := map[string]*proc{"smqgw": gw}
	order := []string{"smqgw"}
	var ng *proc
	if nginxBin != "" {
		var blocks string
		for _, c := range hsCerts {
			blocks += fmt.Sprintf("  server {\n    listen 127.0.0.1:%d ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n    location / { return 204; }\n  }\n",
				ngPorts[c], pki.files[c][0], pki.files[c][1])
		}
		if ng, err = newNginx(nginxBin, filepath.Join(s.dir, "hs-nginx"), blocks); err != nil {
			return err
		}
		if err := s.startProc(ng); err != nil {
			return err
		}
		servers["nginx"] = ng
		order = append(order, "nginx")
	}
	for _, p := range ports {
		if _, err := waitListen(p); err != nil {
			return err
		}
	}
	port := func(server, cert string) int {
		if server == "nginx" {
			return ngPorts[cert]
		}
		return gwPorts[cert]
	}
	for rep := 1; rep <= sz.reps; rep++ {
		for _, cert := range hsCerts {
			for _, mode := range []string{"full", "resumed"} {
				// Interleaved: each server in turn, the order alternating
				// by repetition.
				o := slices.Clone(order)
				if rep%2 == 0 {
					slices.Reverse(o)
				}
				for _, server := range o {
					run := hsLoad(port(server, cert), pki.pool, sz.workers, sz.hsTime, mode == "resumed", servers[server].pids)
					run.Server, run.Cert, run.Mode, run.Rep = server, cert, mode, rep
					fmt.Fprintf(s.log, "storm: handshakes %s %s %s rep %d: %.0f/s, %.1f µs CPU each, %d errors, %d misses\n",
						server, cert, mode, rep, run.Rate, run.CPUPerHS, run.Errors, run.Misses)
					r.Handshakes = append(r.Handshakes, run)
				}
			}
		}
	}

	// Tickets across a reload: a ticket from before SIGHUP.
	ecdsaPort := gwPorts[hsCerts[0]]
	check := func(server, event string, expect bool, p int, do func() error) {
		tc := ticketCheck{Server: server, Event: event, Expect: expect}
		cache := tls.NewLRUClientSessionCache(4)
		if _, err := probeResume(p, pki.pool, cache); err != nil {
			tc.Err = err.Error()
		} else if err := do(); err != nil {
			tc.Err = err.Error()
		} else if ok, err := probeResume(p, pki.pool, cache); err != nil {
			tc.Err = err.Error()
		} else {
			tc.Resumed = ok
		}
		r.Tickets = append(r.Tickets, tc)
	}
	check("smqgw", "nothing (control)", true, ecdsaPort, func() error { return nil })
	check("smqgw", "reload (SIGHUP), random keys", true, ecdsaPort, func() error {
		return sighupAndWait(gw, "configuration reloaded")
	})
	check("smqgw", "restart, no session_ticket_key_file", false, ecdsaPort, func() error {
		stopProc(gw, syscall.SIGTERM)
		if err := s.startProc(gw); err != nil {
			return err
		}
		_, err := waitListen(ecdsaPort)
		return err
	})
	if ng != nil {
		np := ngPorts[hsCerts[0]]
		check("nginx", "reload (SIGHUP), ssl_session_ticket_key file", true, np, func() error {
			_ = ng.cmd.Process.Signal(syscall.SIGHUP)
			time.Sleep(time.Second) // nginx starts new workers; no signal of readiness
			return nil
		})
		check("nginx", "restart, ssl_session_ticket_key file", true, np, func() error {
			stopProc(ng, syscall.SIGTERM)
			if err := s.startProc(ng); err != nil {
				return err
			}
			_, err := waitListen(np)
			return err
		})
	}
	return nil
}

// sighupAndWait sends SIGHUP to an smqgw process and waits (at most 10 s)
// until its log says want.
func sighupAndWait(p *proc, want string) error {
	before, _ := os.ReadFile(p.log)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.log)
		if len(b) > len(before) && strings.Contains(string(b[len(before):]), want) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: no %q in its log 10 s after SIGHUP", p.name, want)
}

// probeResume makes one verified connection with cache, sends a request
// (so that the client reads the server's session tickets) and reports
// whether it resumed.
func probeResume(port int, pool *x509.CertPool, cache tls.ClientSessionCache) (bool, error) {
	cfg := hsConfig(pool, cache)
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), cfg)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /nothing HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, c) // both servers close after answering HTTP/1.0
	return c.ConnectionState().DidResume, nil
}

func hsConfig(pool *x509.CertPool, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519}, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}}
}

// hsLoad runs workers handshake loops against port for d: connect,
// handshake, close. resumed: each worker's cache is primed first and
// every handshake should resume (those that do not are misses).
func hsLoad(port int, pool *x509.CertPool, workers int, d time.Duration, resumed bool, pids func() []int) hsRun {
	run := hsRun{Workers: workers}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	caches := make([]tls.ClientSessionCache, workers)
	if resumed {
		for i := range caches {
			caches[i] = tls.NewLRUClientSessionCache(2)
			if _, err := probeResume(port, pool, caches[i]); err != nil {
				run.FirstError = "priming: " + err.Error()
			}
		}
	}
	var n, errs, miss, res atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	cpu0, self0 := cpuTime(pids()), cpuTime([]int{os.Getpid()})
	start := time.Now()
	end := start.Add(d)
	for i := range workers {
		wg.Go(func() {
			// Source addresses 127.0.1.x: TIME_WAIT spread over many tuples.
			dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%250))}}
			cfg := hsConfig(pool, caches[i])
			cfg.InsecureSkipVerify = true // verified when priming; the server's work is what is timed
			for k := 0; k < 1_000_000 && time.Now().Before(end); k++ {
				raw, err := dialer.Dial("tcp", addr)
				if err == nil {
					c := tls.Client(raw, cfg)
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					err = c.Handshake()
					if err == nil {
						n.Add(1)
						if c.ConnectionState().DidResume {
							res.Add(1)
						} else if resumed {
							miss.Add(1)
						}
					}
					c.Close()
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	run.ServerCPU = cpuTime(pids()) - cpu0
	run.ClientCPU = cpuTime([]int{os.Getpid()}) - self0
	run.Seconds = el.Seconds()
	run.Handshakes, run.Errors, run.Misses, run.Resumed = n.Load(), errs.Load(), miss.Load(), res.Load()
	if v, ok := firstErr.Load().(string); ok && run.FirstError == "" {
		run.FirstError = v
	}
	run.Rate = float64(run.Handshakes) / el.Seconds()
	if run.Handshakes > 0 {
		run.CPUPerHS = float64(run.ServerCPU.Microseconds()) / float64(run.Handshakes)
	}
	return run
}

// ---- storms ----

type stormSetup struct {
	name    string
	front   string // "smqgw" or "nginx"
	raised  bool
	nginx   string
	perAddr int // sessions per source address; 0: stormSizes.perAddr
}

// stormSetupRun starts a broker and the front end, connects the fleet,
// and restarts the front end, then the broker (SIGTERM), then the broker
// (SIGKILL), measuring each.
func (s *env) stormSetupRun(st stormSetup, pki *stormPKI, sz stormSizes) ([]stormRun, []ticketCheck, *connectRun, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, nil, nil, err
	}
	bport, fport := ports[0], ports[1]
	tag := strings.NewReplacer(" ", "-", ",", "").Replace(st.name)
	tag = strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, tag), "-")
	broker, err := s.newSmqgw("broker-"+tag, fmt.Sprintf("state_dir = %q\n%s[[listener]]\nname = \"lan\"\naddress = \"127.0.0.1:%d\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n",
		s.dir, raisedLimits, bport))
	if err != nil {
		return nil, nil, nil, err
	}
	var front *proc
	ecCert := pki.files[hsCerts[0]]
	if st.front == "smqgw" {
		keyFile := filepath.Join(s.dir, "tickets-"+tag+".key")
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
			return nil, nil, nil, err
		}
		lim := ""
		if st.raised {
			lim = raisedLimits
		}
		conf := fmt.Sprintf("state_dir = %q\nsession_ticket_key_file = %q\n%s[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:%d\"\ntls = \"storm\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"lan\"\n[upstream.lan]\nurls = [\"http://127.0.0.1:%d/\"]\n%s",
			s.dir, keyFile, lim, fport, bport, certsBlock("storm", ecCert))
		if front, err = s.newSmqgw("front-"+tag, conf); err != nil {
			return nil, nil, nil, err
		}
	} else {
		server := "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n" +
			nginxWSServer(fport, ecCert[0], ecCert[1], bport)
		if front, err = newNginx(st.nginx, filepath.Join(s.dir, "nginx-"+tag), server); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, p := range []*proc{broker, front} {
		if err := s.startProc(p); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, p := range ports {
		if _, err := waitListen(p); err != nil {
			return nil, nil, nil, err
		}
	}
	var checks []ticketCheck
	first := st.front == "smqgw" && !st.raised && st.perAddr == 0 // the ticket checks once
	if first {
		tc := ticketCheck{Server: "smqgw", Event: "reload (SIGHUP), session_ticket_key_file", Expect: true}
		cache := tls.NewLRUClientSessionCache(4)
		if _, err := probeResume(fport, pki.pool, cache); err != nil {
			tc.Err = err.Error()
		} else if err := sighupAndWait(front, "configuration reloaded"); err != nil {
			tc.Err = err.Error()
		} else if tc.Resumed, err = probeResume(fport, pki.pool, cache); err != nil {
			tc.Err = err.Error()
		}
		checks = append(checks, tc)
	}

	perAddr := sz.perAddr
	if st.perAddr > 0 {
		perAddr = st.perAddr
	}
	f := newFleet(sz.sessions, perAddr, pki.pool)
	defer f.close()
	url := fmt.Sprintf("wss://127.0.0.1:%d/", fport)
	fmt.Fprintf(s.log, "storm: %s: connecting %d sessions from %d addresses\n", st.name, sz.sessions, f.addrs)
	t0 := time.Now()
	err = f.connect(url)
	conn := &connectRun{Setup: st.name, Sessions: f.n, Seconds: time.Since(t0).Seconds(), FailedAttempts: f.dialFailures()}
	for _, sc := range f.clients {
		if sc != nil {
			conn.Connected++
		}
	}
	fmt.Fprintf(s.log, "storm: %s: %d of %d connected in %.1f s, failed attempts: %s\n", st.name, conn.Connected, f.n, conn.Seconds, kinds(conn.FailedAttempts))
	if err != nil {
		conn.Err = err.Error()
		return nil, checks, conn, err
	}
	restart := func(p *proc, sig syscall.Signal, port int) func() (time.Time, error) {
		return func() (time.Time, error) {
			stopProc(p, sig)
			if p.name != "nginx" {
				// smqgw says when it listens: a probe's connect can fail
				// while the storm fills the accept queue.
				return s.startLogged(p, "msg=listening")
			}
			if err := s.startProc(p); err != nil {
				return time.Time{}, err
			}
			return waitListen(port)
		}
	}
	frontEvent := "gateway restart (SIGTERM, start again)"
	if st.front == "nginx" {
		frontEvent = "nginx restart (SIGTERM, start again)"
	}
	events := []struct {
		name string
		do   func() (time.Time, error)
	}{
		{frontEvent, restart(front, syscall.SIGTERM, fport)},
		{"broker restart (SIGTERM, start again)", restart(broker, syscall.SIGTERM, bport)},
		{"broker crash (SIGKILL, start again)", restart(broker, syscall.SIGKILL, bport)},
	}
	primed := tls.NewLRUClientSessionCache(4)
	_, primeErr := probeResume(fport, pki.pool, primed)
	var runs []stormRun
	for rep := 1; rep <= sz.reps; rep++ {
		for _, ev := range events {
			// At rest first: per-address buckets full again (a burst of
			// 100 refills in 2 s at 50/s), nothing else under way.
			time.Sleep(sz.rest)
			run := f.storm(ev.do, sz.waitBack)
			run.Setup, run.Event, run.Rep = st.name, ev.name, rep
			if run.AllBack {
				f.deliver(&run, fmt.Sprintf("ws://127.0.0.1:%d/", bport), sz.waitDeliv)
			}
			fmt.Fprintf(s.log, "storm: %s: %s rep %d: %d/%d back in %v (%v after listening), %d attempts, resumed %d/%d, lost %d\n",
				st.name, ev.name, rep, run.Back, run.Sessions, run.FromSignal.Round(time.Millisecond), run.FromListening.Round(time.Millisecond),
				run.Attempts, run.TLSResumed, run.TLSHandshakes, run.Lost)
			runs = append(runs, run)
			if first && rep == 1 && ev.name == frontEvent {
				// A ticket from before the restart, on a client that had no
				// failed handshake since (a failed resumption makes Go's
				// client drop its ticket: the storm's full handshakes).
				tc := ticketCheck{Server: "smqgw", Expect: true,
					Event: fmt.Sprintf("restart, session_ticket_key_file (the storm's reconnects: %d of %d handshakes resumed)", run.TLSResumed, run.TLSHandshakes)}
				if primeErr != nil {
					tc.Err = primeErr.Error()
				} else if tc.Resumed, err = probeResume(fport, pki.pool, primed); err != nil {
					tc.Err = err.Error()
				}
				checks = append(checks, tc)
			}
			if !run.AllBack {
				// The next event would start from a broken fleet.
				return runs, checks, conn, nil
			}
		}
	}
	return runs, checks, conn, nil
}

// fleet is the storm's clients.
type fleet struct {
	n, perAddr, addrs int
	pool              *x509.CertPool
	clients           []*stormClient
	round             atomic.Int32
	connected, back   atomic.Int64
	hs, resumed       atomic.Int64
	gaveUp, wouldStop atomic.Int64
	failed            atomic.Int64
	connectBy         time.Time // no initial dial after this

	mu        sync.Mutex
	kinds     map[string]int64 // failed attempts by kind
	dialKinds map[string]int64 // failed first dials by kind
	ended     map[string]int64 // sessions ended by kind
	logger    *slog.Logger
}

type stormClient struct {
	c      *client.Client
	up     atomic.Bool
	round  atomic.Int32 // the round it last came back in
	backAt atomic.Int64 // unix ns
	got    atomic.Int32 // the last round's message it received
}

func newFleet(n, perAddr int, pool *x509.CertPool) *fleet {
	f := &fleet{n: n, perAddr: perAddr, addrs: (n + perAddr - 1) / perAddr, pool: pool,
		kinds: map[string]int64{}, ended: map[string]int64{}, dialKinds: map[string]int64{}}
	f.logger = slog.New(&countHandler{f: f})
	return f
}

// countHandler counts the client library's reconnect log lines by the
// kind of their error.
type countHandler struct{ f *fleet }

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countHandler) WithGroup(string) slog.Handler            { return h }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	var err error
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			err, _ = a.Value.Any().(error)
		}
		return true
	})
	f := h.f
	switch {
	case strings.Contains(r.Message, "reconnect failed"):
		f.failed.Add(1)
		k := classify(err)
		if stopsJS(err) {
			f.wouldStop.Add(1)
		}
		f.mu.Lock()
		f.kinds[k]++
		f.mu.Unlock()
	case strings.Contains(r.Message, "re-subscribe failed"):
		f.mu.Lock()
		f.kinds["re-subscribe failed: "+classify(err)]++
		f.mu.Unlock()
	}
	return nil
}

// classify names what ended a connection or failed an attempt.
func classify(err error) string {
	var re *client.RefusedError
	var de *client.DisconnectError
	var ce *websocket.CloseError
	var se *smqdial.Error
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &re):
		return "Connack " + re.Code.String()
	case errors.As(err, &de):
		return fmt.Sprintf("Disconnect %q", de.Reason)
	case errors.As(err, &ce):
		return fmt.Sprintf("WebSocket close %d %q", ce.Code, ce.Text)
	case errors.As(err, &se) && se.Status != "":
		return "HTTP " + se.Status
	}
	stage := ""
	if errors.As(err, &se) {
		stage = se.Stage.String() + ": "
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + "TCP refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return stage + "TCP reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return stage + "EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return stage + "timeout"
	}
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return stage + "other: " + msg
}

// stopsJS reports whether smq.js would stop for good after err: any
// Connack refusal, any Disconnect (SMQ-WIRE §5).
func stopsJS(err error) bool {
	var re *client.RefusedError
	var de *client.DisconnectError
	return errors.As(err, &re) || errors.As(err, &de)
}

func (f *fleet) onState(sc *stormClient) func(client.StateChange) {
	return func(ch client.StateChange) {
		switch ch.State {
		case client.Connected:
			if !sc.up.Swap(true) {
				f.connected.Add(1)
			}
			if r := f.round.Load(); sc.round.Swap(r) != r {
				sc.backAt.Store(time.Now().UnixNano())
				f.back.Add(1)
			}
		case client.Reconnecting:
			if sc.up.Swap(false) {
				f.connected.Add(-1)
			}
			if stopsJS(ch.Err) {
				f.wouldStop.Add(1)
			}
			k := classify(ch.Err)
			f.mu.Lock()
			f.ended[k]++
			f.mu.Unlock()
		case client.Closed:
			if sc.up.Swap(false) {
				f.connected.Add(-1)
			}
			if f.round.Load() >= 0 && !errors.Is(ch.Err, client.ErrClosed) {
				f.gaveUp.Add(1)
			}
		}
	}
}

// connect dials every client, 64 at a time, each subscribing to
// "storm/all"; a client that fails is tried again (5 times at most).
func (f *fleet) connect(url string) error {
	f.clients = make([]*stormClient, f.n)
	f.connectBy = time.Now().Add(2*time.Minute + time.Duration(f.n)*10*time.Millisecond)
	idx := make(chan int)
	errc := make(chan error, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := range idx {
				if err := f.dialOne(url, i); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	for i := range f.n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

func (f *fleet) dialOne(url string, i int) error {
	sc := &stormClient{}
	src := net.IPv4(127, 0, byte(2+i/f.perAddr/250), byte(2+(i/f.perAddr)%250))
	var err error
	// Patient, bounded: an address with more sessions than
	// session_rate_per_ip's burst is let in at the rate.
	deadline := time.Now().Add(90 * time.Second)
	if f.connectBy.Before(deadline) {
		deadline = f.connectBy
	}
	backoff := 200 * time.Millisecond
	for try := 0; try < 200 && time.Now().Before(deadline); try++ {
		if try > 0 {
			time.Sleep(backoff/2 + mrand.N(backoff/2+1))
			backoff = min(2*backoff, 2*time.Second)
		}
		// X25519 only, as the handshake runs: nginx with OpenSSL 3.0 has no
		// X25519MLKEM768, which smqgw would pick (more work on both sides).
		tcfg := &tls.Config{ClientSessionCache: tls.NewLRUClientSessionCache(2), CurvePreferences: []tls.CurveID{tls.X25519},
			VerifyConnection: func(cs tls.ConnectionState) error {
				f.hs.Add(1)
				if cs.DidResume {
					f.resumed.Add(1)
				}
				return nil
			}}
		opts := client.Options{UID: fmt.Sprintf("storm-%06d", i), RootCAs: f.pool, TLSConfig: tcfg,
			Dialer:    &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second},
			Reconnect: true, MinBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second,
			Logger: f.logger, OnState: f.onState(sc)}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var c *client.Client
		c, err = client.Dial(ctx, url, opts)
		if err == nil {
			_, err = c.Subscribe(ctx, "storm/all", func(m *client.Message) {
				var r int32
				if _, e := fmt.Sscanf(string(m.Payload), "round-%d", &r); e == nil {
					sc.got.Store(r)
				}
			})
			if err != nil {
				_ = c.Close()
			}
		}
		cancel()
		if err == nil {
			sc.c = c
			f.clients[i] = sc
			return nil
		}
		f.mu.Lock()
		f.dialKinds[classify(err)]++
		f.mu.Unlock()
	}
	return fmt.Errorf("session %d from %v: %w", i, src, err)
}

func (f *fleet) dialFailures() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]int64{}
	for k, v := range f.dialKinds {
		m[k] = v
	}
	return m
}

func (f *fleet) close() {
	f.round.Store(-1)
	var wg sync.WaitGroup
	for _, sc := range f.clients {
		if sc != nil && sc.c != nil {
			wg.Go(func() { _ = sc.c.Close() })
		}
	}
	wg.Wait()
}

// storm runs one event and waits until every client is back (connected
// and subscribed again), at most limit.
func (f *fleet) storm(event func() (time.Time, error), limit time.Duration) stormRun {
	f.mu.Lock()
	f.kinds, f.ended = map[string]int64{}, map[string]int64{}
	f.mu.Unlock()
	f.back.Store(0)
	f.hs.Store(0)
	f.resumed.Store(0)
	f.failed.Store(0)
	f.wouldStop.Store(0)
	f.gaveUp.Store(0)
	round := f.round.Add(1)
	t0 := time.Now()
	run := stormRun{Sessions: f.n, Addresses: f.addrs}
	listening, err := event()
	if err != nil {
		// Still wait for the clients: the server may be up all the same.
		run.Err = err.Error()
		listening = t0
	}
	run.Down = listening.Sub(t0)
	deadline := t0.Add(limit)
	for time.Now().Before(deadline) {
		if f.back.Load() == int64(f.n) && f.connected.Load() == int64(f.n) {
			run.AllBack = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var backs []time.Duration
	for _, sc := range f.clients {
		if sc.round.Load() == round {
			backs = append(backs, time.Duration(sc.backAt.Load()-t0.UnixNano()))
		}
	}
	sort.Slice(backs, func(i, j int) bool { return backs[i] < backs[j] })
	run.Back = int64(len(backs))
	if len(backs) > 0 {
		run.P50, run.P90 = backs[len(backs)/2], backs[len(backs)*9/10]
	}
	if run.AllBack {
		run.FromSignal = backs[len(backs)-1]
		run.FromListening = run.FromSignal - run.Down
	} else {
		run.Err = fmt.Sprintf("%d of %d back, %d connected after %v", len(backs), f.n, f.connected.Load(), limit)
	}
	run.FailedAttempts, run.Ended = map[string]int64{}, map[string]int64{}
	f.mu.Lock()
	for k, v := range f.kinds {
		run.FailedAttempts[k] = v
	}
	for k, v := range f.ended {
		run.Ended[k] = v
	}
	f.mu.Unlock()
	run.Attempts = f.failed.Load() + run.Back
	run.TLSHandshakes, run.TLSResumed = f.hs.Load(), f.resumed.Load()
	run.GaveUp, run.WouldStopJS = f.gaveUp.Load(), f.wouldStop.Load()
	return run
}

// deliver publishes one message to "storm/all" straight to the broker
// and counts the clients that receive it within limit.
func (f *fleet) deliver(run *stormRun, brokerURL string, limit time.Duration) {
	round := f.round.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := client.Dial(ctx, brokerURL, client.Options{UID: fmt.Sprintf("storm-publisher-%d", round)})
	if err != nil {
		run.Err = "publisher: " + err.Error()
		return
	}
	defer pub.Close()
	if err := pub.Publish(ctx, "storm/all", fmt.Appendf(nil, "round-%d", round)); err != nil {
		run.Err = "publish: " + err.Error()
		return
	}
	run.Published = true
	count := func() int64 {
		var n int64
		for _, sc := range f.clients {
			if sc.got.Load() == round {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && count() < int64(f.n) {
		time.Sleep(20 * time.Millisecond)
	}
	run.Received = count()
	run.Lost = int64(f.n) - run.Received
}

// ---- report ----

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// hsStats returns the median rate, server CPU and load (smqbench) CPU
// per handshake, and the errors and misses summed, of (server, cert,
// mode).
func (r *stormReport) hsStats(server, cert, mode string) (rate, cpu, client float64, errs, misses int64, n int) {
	var rates, cpus, clients []float64
	for _, h := range r.Handshakes {
		if h.Server == server && h.Cert == cert && h.Mode == mode {
			rates = append(rates, h.Rate)
			cpus = append(cpus, h.CPUPerHS)
			if h.Handshakes > 0 {
				clients = append(clients, float64(h.ClientCPU.Microseconds())/float64(h.Handshakes))
			}
			errs += h.Errors
			misses += h.Misses
			n++
		}
	}
	return median(rates), median(cpus), median(clients), errs, misses, n
}

func (r *stormReport) hasNginx() bool {
	for _, h := range r.Handshakes {
		if h.Server == "nginx" {
			return true
		}
	}
	return false
}

func dur(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return "—"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", strings.ReplaceAll(k, "|", "/"), m[k]))
	}
	return strings.Join(parts, "; ")
}

// report prints the tables and the targets, met or NOT met.
func (r *stormReport) report(w io.Writer) []goal {
	ng := r.hasNginx()
	reps := 0
	for _, h := range r.Handshakes {
		reps = max(reps, h.Rep)
	}
	var targets []goal
	if len(r.Handshakes) > 0 {
		fmt.Fprintf(w, "TLS handshakes per second (%s, %s; median of %d interleaved repetitions; server CPU µs per handshake in brackets):\n\n",
			r.TLSVersion, r.Curve, reps)
	}
	for _, line := range []string{"| certificate | handshake | smqgw | nginx | smqgw / nginx | errors, misses | the load's own CPU µs per handshake (smqgw, nginx runs) |",
		"|---|---|---:|---:|---:|---|---|"} {
		if len(r.Handshakes) > 0 {
			fmt.Fprintln(w, line)
		}
	}
	for _, cert := range hsCerts {
		for _, mode := range []string{"full", "resumed"} {
			gr, gc, gl, ge, gm, gn := r.hsStats("smqgw", cert, mode)
			if gn == 0 {
				continue
			}
			nr, nc, nl, ne, nm, _ := r.hsStats("nginx", cert, mode)
			ratio, ngCol := "—", "—"
			if ng {
				ratio = fmt.Sprintf("%.2f", gr/nr)
				ngCol = fmt.Sprintf("%.0f (%.0f µs)", nr, nc)
			}
			fmt.Fprintf(w, "| %s | %s | %.0f (%.0f µs) | %s | %s | smqgw %d, %d; nginx %d, %d | %.0f, %.0f |\n",
				cert, mode, gr, gc, ngCol, ratio, ge, gm, ne, nm, gl, nl)
			if ng {
				targets = append(targets, goal{Target: fmt.Sprintf("handshakes/s %s %s, smqgw ≥ nginx", cert, mode), Met: gr >= nr,
					Measured: fmt.Sprintf("%.0f vs %.0f/s (%.2f; server CPU per handshake %.0f vs %.0f µs)", gr, nr, gr/nr, gc, nc)})
			}
		}
	}
	fmt.Fprintln(w)
	if len(r.Tickets) > 0 {
		fmt.Fprintln(w, "Session tickets: a client holding a ticket from before the event, after it:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| server | event | resumed | expected |")
		fmt.Fprintln(w, "|---|---|---|---|")
	}
	for _, t := range r.Tickets {
		got := fmt.Sprint(t.Resumed)
		if t.Err != "" {
			got = "error: " + t.Err
		}
		fmt.Fprintf(w, "| %s | %s | %s | %v |\n", t.Server, t.Event, got, t.Expect)
		if t.Expect {
			targets = append(targets, goal{Target: fmt.Sprintf("%s resumes after %s", t.Server, t.Event), Met: t.Resumed && t.Err == "", Measured: got})
		}
	}
	if len(r.Tickets) > 0 {
		fmt.Fprintln(w)
	}
	r.stormTables(w)
	for _, g := range r.stormGroups() {
		if !strings.HasPrefix(g.setup, "smqgw") {
			continue
		}
		ok, fig := g.verdict(r)
		targets = append(targets, goal{Target: fmt.Sprintf("%s: %s: every session back within what the limits allow, none lost, no refusal smq.js takes as final", g.setup, g.event), Met: ok, Measured: fig})
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "Notes:")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
	return targets
}

// nginxStorm is nginx's run of the matching event, if any.
func (r *stormReport) nginxStorm(event string) *stormRun {
	kind := "broker crash"
	switch {
	case strings.HasPrefix(event, "gateway restart"):
		kind = "nginx restart"
	case strings.HasPrefix(event, "broker restart"):
		kind = "broker restart"
	}
	for i := range r.Storms {
		if r.Storms[i].Setup == "nginx" && strings.HasPrefix(r.Storms[i].Event, kind) {
			return &r.Storms[i]
		}
	}
	return nil
}

// runStorm is the storm section: the other targets' processes stop
// while it runs (it starts its own), and start again after it.
func runStorm(s *suite) error {
	s.e.stopAll()
	r, err := s.e.storms(s.quick)
	s.storm = r
	if r != nil {
		s.json["storm"] = r
	}
	if err != nil {
		return err
	}
	return s.e.start()
}

func reportStorm(s *suite, w io.Writer) {
	if s.storm == nil {
		return
	}
	fmt.Fprintln(w, "\nReconnect storms and TLS handshakes (issue 17 §3):")
	fmt.Fprintln(w)
	s.goals = append(s.goals, s.storm.report(w)...)
}

// stormGroup is the repetitions of one (setup, event).
type stormGroup struct {
	setup, event string
	runs         []stormRun
}

func (r *stormReport) stormGroups() []*stormGroup {
	var out []*stormGroup
	idx := map[[2]string]*stormGroup{}
	for _, s := range r.Storms {
		k := [2]string{s.Setup, s.Event}
		g := idx[k]
		if g == nil {
			g = &stormGroup{setup: s.Setup, event: s.Event}
			idx[k] = g
			out = append(out, g)
		}
		g.runs = append(g.runs, s)
	}
	return out
}

// medianDur is the median of f over the runs that got all back.
func (g *stormGroup) medianDur(f func(stormRun) time.Duration) (time.Duration, []string) {
	var v []float64
	var each []string
	for _, s := range g.runs {
		if s.AllBack {
			v = append(v, float64(f(s)))
			each = append(each, fmt.Sprintf("%.2f", f(s).Seconds()))
		} else {
			each = append(each, "not all")
		}
	}
	return time.Duration(median(v)), each
}

func (g *stormGroup) sum(f func(stormRun) int64) int64 {
	var n int64
	for _, s := range g.runs {
		n += f(s)
	}
	return n
}

func (g *stormGroup) merged(f func(stormRun) map[string]int64) map[string]int64 {
	m := map[string]int64{}
	for _, s := range g.runs {
		for k, v := range f(s) {
			m[k] += v
		}
	}
	return m
}

// rateFloor is the least time session_rate_per_ip (default: 50/s, a
// burst of 100) lets perAddr sessions of one address in: the burst at
// once, the rest at the rate.
func rateFloor(perAddr int) time.Duration {
	const rate, burst = 50, 100
	if perAddr <= burst {
		return 0
	}
	return time.Duration(float64(perAddr-burst) / rate * float64(time.Second))
}

// verdict: every repetition all back, delivered, nothing lost, no
// refusal smq.js takes as final, no client given up; and, under default
// limits, back within the raised-limits time of the same event (the
// machine's own speed) plus the session rate's floor plus one maximum
// backoff of the clients (5 s: what a refusal may cost a client).
func (g *stormGroup) verdict(r *stormReport) (bool, string) {
	ok := true
	for _, s := range g.runs {
		ok = ok && s.AllBack && s.Published && s.Lost == 0 && s.GaveUp == 0 && s.WouldStopJS == 0
	}
	all, each := g.medianDur(func(s stormRun) time.Duration { return s.FromSignal })
	fig := fmt.Sprintf("all back %s after the signal (each: %s), lost %d, smq.js would stop %d",
		dur(all), strings.Join(each, ", "), g.sum(func(s stormRun) int64 { return s.Lost }), g.sum(func(s stormRun) int64 { return s.WouldStopJS }))
	if strings.Contains(g.setup, "default limits") && len(g.runs) > 0 {
		per := g.runs[0].Sessions / max(g.runs[0].Addresses, 1)
		kind := strings.SplitN(g.event, " (", 2)[0]
		for _, o := range r.stormGroups() {
			if strings.Contains(o.setup, "limits raised") && strings.HasPrefix(o.event, kind) {
				machine, _ := o.medianDur(func(s stormRun) time.Duration { return s.FromSignal })
				allow := machine + rateFloor(per) + 5*time.Second
				fig += fmt.Sprintf("; allowed %s (raised limits %s + session_rate_per_ip floor %s for %d a address + 5 s backoff)",
					dur(allow), dur(machine), dur(rateFloor(per)), per)
				ok = ok && all <= allow
			}
		}
	}
	if nr := r.nginxStorm(g.event); nr != nil {
		ng := &stormGroup{}
		for _, s := range r.Storms {
			if s.Setup == nr.Setup && s.Event == nr.Event {
				ng.runs = append(ng.runs, s)
			}
		}
		if d, _ := ng.medianDur(func(s stormRun) time.Duration { return s.FromSignal }); d > 0 {
			fig += fmt.Sprintf(" (nginx, %s: %s)", nr.Event, dur(d))
		}
	}
	return ok, fig
}

// stormTables prints the storms, one row per (setup, event), medians
// over the repetitions.
func (r *stormReport) stormTables(w io.Writer) {
	if len(r.Connects) > 0 {
		fmt.Fprintln(w, "First connect of the fleet, 64 dials at a time (a baseline of the machine's pace):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| setup | connected | seconds | sessions/s | failed attempts by |")
		fmt.Fprintln(w, "|---|---|---:|---:|---|")
		for _, c := range r.Connects {
			fmt.Fprintf(w, "| %s | %d/%d | %.1f | %.0f | %s |\n", c.Setup, c.Connected, c.Sessions, c.Seconds,
				float64(c.Connected)/max(c.Seconds, 1e-9), kinds(c.FailedAttempts))
		}
		fmt.Fprintln(w)
	}
	groups := r.stormGroups()
	if len(groups) == 0 {
		return
	}
	fmt.Fprintf(w, "Reconnect storms: %d sessions over WebSocket (wss), each subscribed to one topic, spread over source addresses 127.0.x.y; after each event, once all are back, one message published to that topic straight at the broker (lost = sessions without it). Times from the signal (SIGTERM or SIGKILL) to the last session back (Connected and subscribed again); medians over the repetitions, each in brackets:\n\n",
		groups[0].runs[0].Sessions)
	fmt.Fprintln(w, "| setup | event | sessions per address | reps all back | all back (each) | p50 / p90 back | after listening again | down (signal → listening) | attempts | resumed TLS | lost | smq.js would stop |")
	fmt.Fprintln(w, "|---|---|---:|---|---|---|---|---|---:|---|---:|---:|")
	for _, g := range groups {
		s0 := g.runs[0]
		back := 0
		for _, s := range g.runs {
			if s.AllBack {
				back++
			}
		}
		all, each := g.medianDur(func(s stormRun) time.Duration { return s.FromSignal })
		dur := func(d time.Duration) string {
			if back == 0 {
				return "—"
			}
			return dur(d)
		}
		p50, _ := g.medianDur(func(s stormRun) time.Duration { return s.P50 })
		p90, _ := g.medianDur(func(s stormRun) time.Duration { return s.P90 })
		listen, _ := g.medianDur(func(s stormRun) time.Duration { return s.FromListening })
		down, _ := g.medianDur(func(s stormRun) time.Duration { return s.Down })
		hs, res := g.sum(func(s stormRun) int64 { return s.TLSHandshakes }), g.sum(func(s stormRun) int64 { return s.TLSResumed })
		resumed := "—"
		if hs > 0 {
			resumed = fmt.Sprintf("%d/%d (%.0f%%)", res, hs, 100*float64(res)/float64(hs))
		}
		lost := "—"
		if g.sum(func(s stormRun) int64 {
			if s.Published {
				return 1
			}
			return 0
		}) == int64(len(g.runs)) {
			lost = fmt.Sprint(g.sum(func(s stormRun) int64 { return s.Lost }))
		}
		var att []string
		for _, s := range g.runs {
			att = append(att, fmt.Sprint(s.Attempts))
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d/%d | %s (%s) | %s / %s | %s | %s | %s | %s | %s | %d |\n",
			g.setup, g.event, s0.Sessions/max(s0.Addresses, 1), back, len(g.runs), dur(all), strings.Join(each, ", "),
			dur(p50), dur(p90), dur(listen), dur(down), strings.Join(att, ", "), resumed, lost, g.sum(func(s stormRun) int64 { return s.WouldStopJS }))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Why sessions ended and why reconnect attempts failed (summed over the repetitions):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| setup | event | sessions ended by | failed attempts by | clients gave up | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---|")
	for _, g := range groups {
		var errs []string
		for _, s := range g.runs {
			if s.Err != "" {
				errs = append(errs, fmt.Sprintf("rep %d: %s", s.Rep, strings.ReplaceAll(s.Err, "|", "/")))
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %s |\n", g.setup, g.event,
			kinds(g.merged(func(s stormRun) map[string]int64 { return s.Ended })),
			kinds(g.merged(func(s stormRun) map[string]int64 { return s.FailedAttempts })),
			g.sum(func(s stormRun) int64 { return s.GaveUp }), strings.Join(errs, "; "))
	}
	fmt.Fprintln(w)
}
