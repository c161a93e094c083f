//go:build unix

// Package pebbletest runs Pebble, Let's Encrypt's ACME test CA, for tests: a
// real ACME server on loopback that validates HTTP-01 and TLS-ALPN-01
// challenges by connecting to 127.0.0.1, because pebble-challtestsrv's DNS
// server answers every name with 127.0.0.1. Given a DNS server of the test's
// own instead (Options.DNSServer, such as internal/bindtest's BIND), Pebble
// resolves against that one and validates DNS-01 challenges by its TXT
// records. Both programs come from the tool lines in go.mod, built by
// "go tool -n" and run as the test's own children, each in its own process
// group, and stop with the test.
//
// Pebble makes a fresh root CA on every start: trust Roots, not a fixed file.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/smqgw/smqgw/internal/childproc"
	"github.com/smqgw/smqgw/internal/testpki"
)

const (
	// startTimeout bounds Start, including the first "go tool -n" run,
	// which compiles Pebble.
	startTimeout = 90 * time.Second
	// pollEvery is the readiness polling interval.
	pollEvery = 25 * time.Millisecond
	// outputTail is how much of each process's output a failed test logs.
	outputTail = 16 << 10
)

// Environment for both processes, replacing any PEBBLE_* variables of the
// test's own environment. PEBBLE_VA_ALWAYS_VALID stays unset: challenges are
// really validated.
var pebbleEnv = []string{
	"PEBBLE_VA_NOSLEEP=1",      // validate at once, not after up to 5 s
	"PEBBLE_AUTHZREUSE=0",      // every order gets fresh authorizations
	"PEBBLE_WFE_NONCEREJECT=0", // never reject a good nonce
}

// Options configures Start. The zero value runs Pebble without external
// account binding and with nothing answering its challenges.
type Options struct {
	// HTTPPort is the port on 127.0.0.1 where Pebble's validation authority
	// fetches HTTP-01 responses. Zero picks a port nothing listens on, so
	// HTTP-01 validation fails.
	HTTPPort int

	// TLSPort is the port on 127.0.0.1 where Pebble's validation authority
	// makes TLS-ALPN-01 handshakes. Zero picks a port nothing listens on, so
	// TLS-ALPN-01 validation fails.
	TLSPort int

	// EAB, if non-nil, makes newAccount require an external account binding
	// with one of these key IDs and raw HMAC keys. Nil requires none; an
	// empty map requires one that can never be given. Pebble rejects keys
	// shorter than the MAC's hash (32 bytes for HS256, which
	// golang.org/x/crypto/acme uses), so Start refuses keys under 32 bytes.
	EAB map[string][]byte

	// DNSServer, if set, is the DNS server Pebble uses for every lookup
	// instead of pebble-challtestsrv, which then does not run: host:port,
	// such as a bindtest.Server's Addr. Pebble asks it over TCP, without
	// recursion, for the TXT records of _acme-challenge names (DNS-01) and
	// the addresses of names it connects to (HTTP-01, TLS-ALPN-01), so it
	// must be authoritative for the names ordered. Empty means
	// pebble-challtestsrv, which answers every A query with 127.0.0.1 and
	// serves no TXT records.
	DNSServer string

	// Validity is how long the certificates Pebble issues are valid (at
	// least a few seconds). Zero means 90 days, as Let's Encrypt's.
	Validity time.Duration
}

// Pebble is a running Pebble and, unless Options.DNSServer is set,
// pebble-challtestsrv as its DNS server, started by Start.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir. Its
	// certificate is issued by CAFile / CAPool, not by Roots.
	DirectoryURL string

	// ManagementURL is Pebble's management interface, https://127.0.0.1:PORT,
	// serving /roots/0, /intermediates/0, /cert-status-by-serial/ and more
	// under the same certificate as DirectoryURL.
	ManagementURL string

	// CAFile is a PEM file holding the CA that issued the certificate of
	// DirectoryURL and ManagementURL; CAPool holds the same CA. An ACME client
	// trusts it for its own HTTPS; certificates Pebble issues chain to Roots.
	CAFile string
	CAPool *x509.CertPool

	// HTTPPort and TLSPort are the validation ports in use: those of Options,
	// or the unused ones picked for zeros.
	HTTPPort int
	TLSPort  int

	// DNSAddr is the DNS server Pebble uses for every lookup:
	// Options.DNSServer, or else pebble-challtestsrv's, 127.0.0.1:PORT over
	// UDP and TCP, which answers A queries with 127.0.0.1 and AAAA queries
	// with nothing unless told otherwise.
	DNSAddr string

	// ChallSrvURL is pebble-challtestsrv's management API,
	// http://127.0.0.1:PORT, for tests that need other DNS answers: POST
	// /set-txt for DNS-01, /add-a, /set-servfail and so on. It is empty when
	// Options.DNSServer is set.
	ChallSrvURL string

	client   *http.Client // trusts CAPool
	procs    []*process
	stopOnce sync.Once
}

// Start runs pebble-challtestsrv (unless Options.DNSServer is set) and
// Pebble on free loopback ports and returns once they answer, failing t after 90 seconds. Stop is registered
// with t.Cleanup; if t fails, the tail of both programs' output is logged.
//
// When "go tool pebble" cannot be built (no go command, no module cache and
// no network), Start skips t, or fails it if the environment variable CI is
// "true".
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	if opts.DNSServer != "" {
		if _, _, err := net.SplitHostPort(opts.DNSServer); err != nil {
			t.Fatalf("pebbletest: invalid DNSServer %q: want host:port: %v", opts.DNSServer, err)
		}
	}
	tc, err := findToolchain()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v", err)
		}
		t.Skipf("skipping (set CI=true to fail instead): %v", err)
	}
	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "127.0.0.1", "localhost")
	// The programs bind the ports some time after they are found free
	// (they start up first); a listener elsewhere may take one
	// meanwhile. Then the program exits, and other ports are tried.
	for attempt := 1; ; attempt++ {
		p, err := launch(t, tc, opts, ca, leaf)
		if err == nil {
			return p
		}
		if attempt == startAttempts || !errors.Is(err, errPortTaken) {
			t.Fatalf("pebbletest: %v", err)
		}
		t.Logf("pebbletest: %v; trying other ports", err)
	}
}

// portsReleased, when set (by a test), is called with the ports the
// programs will listen on (not the DNS port), after they are found free and
// before the programs start.
var portsReleased func(ports ...int)

// startAttempts bounds Start's tries when a port is taken.
const startAttempts = 3

// errPortTaken marks a start that failed because a port was taken.
var errPortTaken = errors.New("a port was taken before the program bound it")

// launch starts both programs once and waits until they answer. On failure
// it stops them and says why, with the tail of their output.
func launch(t testing.TB, tc toolchain, opts Options, ca *testpki.CA, leaf *testpki.Leaf) (*Pebble, error) {
	t.Helper()
	dir := t.TempDir()

	var res childproc.Ports
	defer res.Release()
	dnsAddr := opts.DNSServer
	if dnsAddr == "" {
		dnsAddr = loopback(res.TCPAndUDP(t))
	}
	// challMgmtPort goes unused with opts.DNSServer; it is reserved anyway
	// so that portsReleased sees the same list.
	challMgmtPort, listenPort, mgmtPort := res.TCP(t), res.TCP(t), res.TCP(t)
	httpPort, tlsPort := opts.HTTPPort, opts.TLSPort
	if httpPort == 0 {
		httpPort = res.TCP(t)
	}
	if tlsPort == 0 {
		tlsPort = res.TCP(t)
	}
	res.Release()
	if portsReleased != nil {
		portsReleased(challMgmtPort, listenPort, mgmtPort)
	}

	p := &Pebble{
		DirectoryURL:  "https://" + loopback(listenPort) + "/dir",
		ManagementURL: "https://" + loopback(mgmtPort),
		CAFile:        ca.CertFile,
		CAPool:        ca.Pool,
		HTTPPort:      httpPort,
		TLSPort:       tlsPort,
		DNSAddr:       dnsAddr,
		client: &http.Client{
			Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: ca.Pool},
				DisableKeepAlives: true, // leave no connection goroutines behind
			},
			Timeout: 5 * time.Second,
		},
	}
	t.Cleanup(p.Stop) // if a t.Fatal below cuts the start short
	config := writeConfig(t, dir, pebbleConfig{Pebble: pebbleSettings{
		ListenAddress:                  loopback(listenPort),
		ManagementListenAddress:        loopback(mgmtPort),
		Certificate:                    leaf.CertFile,
		PrivateKey:                     leaf.KeyFile,
		HTTPPort:                       httpPort,
		TLSPort:                        tlsPort,
		ExternalAccountBindingRequired: opts.EAB != nil,
		ExternalAccountMACKeys:         macKeys(t, opts.EAB),
		KeyAlgorithm:                   "ecdsa",
		Profiles: map[string]profile{
			"default": {Description: "pebbletest default profile", ValidityPeriod: validity(opts.Validity)},
		},
	}})

	var probes []probe
	if opts.DNSServer == "" {
		p.ChallSrvURL = "http://" + loopback(challMgmtPort)
		chall := p.start(t, tc, "pebble-challtestsrv",
			"-defaultIPv4", "127.0.0.1",
			"-defaultIPv6", "",
			"-http01", "",
			"-https01", "",
			"-tlsalpn01", "",
			"-doh", "",
			"-dnsserver", p.DNSAddr,
			"-management", loopback(challMgmtPort),
		)
		probes = append(probes,
			probe{chall, "DNS server", p.dnsReady},
			probe{chall, "management API", func(ctx context.Context) error {
				// It has no page at "/": any answer means it is up.
				_, _, err := p.get(ctx, p.ChallSrvURL+"/")
				return err
			}},
		)
	}
	pebble := p.start(t, tc, "pebble",
		"-config", config,
		"-dnsserver", p.DNSAddr,
		"-strict",
	)

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	err := p.await(ctx, append(probes, []probe{
		{pebble, "ACME directory", func(ctx context.Context) error {
			_, err := p.getOK(ctx, p.DirectoryURL)
			return err
		}},
		{pebble, "management interface", func(ctx context.Context) error {
			_, err := p.getOK(ctx, p.ManagementURL+"/roots/0")
			return err
		}},
	}...))
	if err != nil {
		p.Stop()
		taken := false
		for _, pr := range p.procs {
			tail := pr.Out.Last(outputTail)
			err = fmt.Errorf("%w\noutput of %s (tail):\n%s", err, pr.name, tail)
			taken = taken || strings.Contains(tail, "address already in use")
		}
		if taken {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, err
	}
	// Registered after every t.TempDir, so it runs before they are removed.
	t.Cleanup(func() {
		p.Stop()
		for _, pr := range p.procs {
			if pr.Crashed() && !t.Failed() {
				t.Errorf("pebbletest: %s exited before Stop: %v", pr.name, pr.Err())
			}
			if t.Failed() {
				t.Logf("pebbletest: output of %s (tail):\n%s", pr.name, pr.Out.Last(outputTail))
			}
		}
	})
	return p, nil
}

// Roots returns the root CA that Pebble issues certificates under, fetched
// from its management interface. Pebble makes a new one on every start.
// Issued chains end in an intermediate, which TLS peers send, so the roots
// alone verify them.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := p.ManagementURL + "/roots/0"
	body, err := p.getOK(ctx, url)
	if err != nil {
		t.Fatalf("pebbletest: fetching roots: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		t.Fatalf("pebbletest: no certificate in %s: %q", url, body)
	}
	return pool
}

// Stop ends the programs and waits for them: SIGTERM to each process group,
// then SIGKILL after 3 seconds. It may be called more than once; Start
// registers it with t.Cleanup.
func (p *Pebble) Stop() {
	p.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, pr := range p.procs {
			wg.Go(pr.Stop)
		}
		wg.Wait()
		p.client.CloseIdleConnections()
	})
}

// probe is one readiness check of a process.
type probe struct {
	proc  *process
	what  string
	check func(context.Context) error
}

// await polls the probes until all pass, or says which process exited or
// which probes still failed when ctx ended.
func (p *Pebble) await(ctx context.Context, probes []probe) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	last := make([]error, len(probes))
	for {
		pending := 0
		for i, pb := range probes {
			if pb.check == nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			last[i] = pb.check(cctx)
			cancel()
			if last[i] == nil {
				probes[i].check = nil
			} else {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		for _, pb := range probes {
			select {
			case <-pb.proc.Done():
				return fmt.Errorf("%s exited while starting: %v", pb.proc.name, pb.proc.Err())
			default:
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			var errs []error
			for i, pb := range probes {
				if pb.check != nil {
					errs = append(errs, fmt.Errorf("%s %s: %w", pb.proc.name, pb.what, last[i]))
				}
			}
			return fmt.Errorf("not ready after %v: %w", startTimeout, errors.Join(errs...))
		}
	}
}

// get fetches url.
func (p *Pebble) get(ctx context.Context, url string) (status int, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// getOK fetches url, requiring status 200 OK.
func (p *Pebble) getOK(ctx context.Context, url string) ([]byte, error) {
	status, body, err := p.get(ctx, url)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("GET %s: status %d %s", url, status, bytes.TrimSpace(body))
	}
	return body, err
}

// dnsReady asks the DNS server for an A record over TCP, as Pebble does, and
// requires the answer 127.0.0.1.
func (p *Pebble) dnsReady(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.DNSAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b := dnsmessage.NewBuilder(make([]byte, 2, 512), dnsmessage.Header{ID: 1, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return err
	}
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("ready.pebbletest.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	if err := b.Question(q); err != nil {
		return err
	}
	msg, err := b.Finish()
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2)) // TCP length prefix
	if _, err := c.Write(msg); err != nil {
		return err
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return err
	}
	resp := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		return err
	}
	var parser dnsmessage.Parser
	if _, err := parser.Start(resp); err != nil {
		return err
	}
	if err := parser.SkipAllQuestions(); err != nil {
		return err
	}
	answers, err := parser.AllAnswers()
	if err != nil {
		return err
	}
	for _, a := range answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok && netip.AddrFrom4(r.A) == netip.MustParseAddr("127.0.0.1") {
			return nil
		}
	}
	return fmt.Errorf("DNS answer for %s: %v, want 127.0.0.1", q.Name, answers)
}

// toolchain is where the tools are: built by "go tool -n" into the build
// cache and run from there, so that each tool is the test's own child,
// reaped by cmd.Wait (a "go tool" in between would leave the tool a
// grandchild, killed and reparented but possibly not yet reaped when Stop
// returns).
type toolchain struct {
	goBin   string            // the go command
	modRoot string            // the directory of go.mod, with the pebble tool lines
	bins    map[string]string // tool name → its binary
}

// findToolchain locates the go command and the module, and builds both tools
// once per test binary, so that Start can tell a missing component (skip)
// from a broken start (fail), and the build does not count against the
// readiness timeout.
var findToolchain = sync.OnceValues(func() (toolchain, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		// "go test" puts GOROOT/bin first on PATH, so this is rarely reached.
		//lint:ignore SA1019 a fallback for when PATH has no go command
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return toolchain{}, fmt.Errorf("pebbletest: cannot run %s: %v", goBin, err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return toolchain{}, errors.New("pebbletest: not in a Go module, so no pebble tool")
	}
	tc := toolchain{goBin: goBin, modRoot: filepath.Dir(gomod), bins: map[string]string{}}
	for _, tool := range []string{"pebble", "pebble-challtestsrv"} {
		// -n builds the tool into the build cache and prints its path
		// instead of running it.
		cmd := exec.CommandContext(ctx, goBin, "tool", "-n", tool)
		cmd.Dir = tc.modRoot
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			return toolchain{}, fmt.Errorf("pebbletest: cannot build %q (go tool -n %s): %v\n%s", tool, tool, err, bytes.TrimSpace(stderr))
		}
		bin := strings.TrimSpace(string(out))
		if !filepath.IsAbs(bin) {
			return toolchain{}, fmt.Errorf("pebbletest: go tool -n %s printed %q, not the path of a binary", tool, bin)
		}
		tc.bins[tool] = bin
	}
	return tc, nil
})

// process is one tool, running in its own process group.
type process struct {
	name string
	*childproc.Process
}

// start runs the tool name with args in the module root.
func (p *Pebble) start(t testing.TB, tc toolchain, name string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(tc.bins[name], args...)
	cmd.Dir = tc.modRoot
	cmd.Env = append(withoutPebbleEnv(os.Environ()), pebbleEnv...)
	proc, err := childproc.Start(cmd)
	if err != nil {
		t.Fatalf("pebbletest: starting %s: %v", name, err)
	}
	pr := &process{name: name, Process: proc}
	p.procs = append(p.procs, pr)
	return pr
}

// pebbleConfig is Pebble's configuration file (cmd/pebble's config).
type pebbleConfig struct {
	Pebble pebbleSettings `json:"pebble"`
}

type pebbleSettings struct {
	ListenAddress                  string             `json:"listenAddress"`
	ManagementListenAddress        string             `json:"managementListenAddress"`
	Certificate                    string             `json:"certificate"`
	PrivateKey                     string             `json:"privateKey"`
	HTTPPort                       int                `json:"httpPort"`
	TLSPort                        int                `json:"tlsPort"`
	ExternalAccountBindingRequired bool               `json:"externalAccountBindingRequired"`
	ExternalAccountMACKeys         map[string]string  `json:"externalAccountMACKeys,omitempty"`
	KeyAlgorithm                   string             `json:"keyAlgorithm"`
	Profiles                       map[string]profile `json:"profiles"`
}

type profile struct {
	Description    string `json:"description"`
	ValidityPeriod uint64 `json:"validityPeriod"` // seconds
}

func writeConfig(t testing.TB, dir string, cfg pebbleConfig) string {
	t.Helper()
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("pebbletest: encoding config: %v", err)
	}
	name := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	return name
}

// macKeys encodes EAB keys as Pebble reads them: unpadded base64url.
func macKeys(t testing.TB, eab map[string][]byte) map[string]string {
	t.Helper()
	if len(eab) == 0 {
		return nil
	}
	keys := make(map[string]string, len(eab))
	for kid, key := range eab {
		if kid == "" {
			t.Fatalf("pebbletest: empty EAB key ID")
		}
		if len(key) < 32 {
			t.Fatalf("pebbletest: EAB key %q is %d bytes: Pebble needs at least 32 for HS256", kid, len(key))
		}
		keys[kid] = base64.RawURLEncoding.EncodeToString(key)
	}
	return keys
}

func withoutPebbleEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			out = append(out, kv)
		}
	}
	return out
}

func loopback(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// validity is Options.Validity in whole seconds, 90 days for zero.
func validity(d time.Duration) uint64 {
	if d <= 0 {
		return 90 * 24 * 60 * 60
	}
	return uint64(max(d/time.Second, 5))
}
