package attack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/childproc"
	"github.com/smqgw/smqgw/internal/testpki"
)

// The programs the suite runs, built once per test run without the race
// detector, as they ship, into binDir (which TestMain removes): smqgw, and
// this package's test binary, which is the well-behaved client (goodMain).
var (
	buildOnce sync.Once
	binDir    string
	smqgwBin  string
	goodBin   string
	buildErr  error
)

// binaries builds cmd/smqgw and the well-behaved client, once. Without a
// go command the test is skipped, but fails where CI=true: there a missing
// part is a failure.
func binaries(t *testing.T) (gateway, good string) {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("no go command on PATH to build cmd/smqgw: %w", err)
			return
		}
		if binDir, err = os.MkdirTemp("", "smqgw-attack-"); err != nil {
			buildErr = err
			return
		}
		smqgwBin, goodBin = filepath.Join(binDir, "smqgw"), filepath.Join(binDir, "attack.test")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, args := range [][]string{
			{"build", "-o", smqgwBin, "github.com/smqgw/smqgw/cmd/smqgw"},
			{"test", "-c", "-o", goodBin, "github.com/smqgw/smqgw/internal/attack"},
		} {
			if out, err := exec.CommandContext(ctx, goBin, args...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
	})
	if buildErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(buildErr)
		}
		t.Skip(buildErr)
	}
	return smqgwBin, goodBin
}

// gateway is one smqgw process under attack, with the default limits and
// three listeners on 127.0.0.1, each routing to the embedded broker:
//
//   - tls: TLS (wss:// and raw SMQ over TLS), no client certificates; the
//     well-behaved client connects here, and most attacks aim here;
//   - lan: plain (ws:// and raw SMQ);
//   - mtls: TLS with client_auth = "optional", for the takeover attack.
//
// Its admin endpoint (metrics, pprof) is on loopback too.
type gateway struct {
	pid       int
	addrs     map[string]string // listener name (and "admin") → host:port
	adminAddr string
	ca        *testpki.CA
	http      *http.Client // to the admin endpoint
}

// startGateway starts smqgw with its certificates from a test CA and waits
// for its banner; the process is killed when the test ends.
func startGateway(t *testing.T) *gateway {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	cfg := fmt.Sprintf(`state_dir = %q

[admin]
address = "127.0.0.1:0"

[[listener]]
name = "tls"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"

[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"

[[listener]]
name = "mtls"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  client_auth = "optional"
  client_ca = [%q]

[certs.files]
cert_file = %q
key_file = %q
`, filepath.Join(dir, "state"), ca.CertFile, server.CertFile, server.KeyFile)
	file := filepath.Join(dir, "smqgw.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := apptest.StartProcessWith(t, bin, file, apptest.ProcessOptions{
		Logs:         &childproc.Tail{Max: 256 << 10},
		StartTimeout: waitLong,
	}, "tls", "lan", "mtls")
	gw := &gateway{pid: p.Pid, addrs: p.Addrs, adminAddr: p.Addrs["admin"], ca: ca}
	t.Cleanup(func() {
		if gw.http != nil {
			gw.http.CloseIdleConnections()
		}
	})
	// One kept-alive connection to the admin endpoint: one descriptor of
	// the gateway's, the same before and after an attack.
	gw.http = &http.Client{Timeout: waitLong, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	return gw
}

// alive reports whether the gateway process still runs.
func (g *gateway) alive() bool {
	return syscall.Kill(g.pid, 0) == nil && !strings.Contains(procStatus(g.pid, "State:"), "zombie")
}

// get reads path from the admin endpoint.
func (g *gateway) get(path string) ([]byte, error) {
	resp, err := g.http.Get("http://" + g.adminAddr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, err
}

// scrape reads and parses /metrics.
func (g *gateway) scrape() (metrics, error) {
	body, err := g.get("/metrics")
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(bytes.NewReader(body))
}

// mustScrape is scrape failing the test.
func (g *gateway) mustScrape(t *testing.T) metrics {
	t.Helper()
	m, err := g.scrape()
	if err != nil {
		t.Fatalf("metrics of the gateway: %v", err)
	}
	return m
}

// metrics is one scrape of the gateway's /metrics.
type metrics map[string]*dto.MetricFamily

// sum adds up the series of family name whose labels include labels
// (name, value pairs): counters, gauges, untyped values. A family that
// does not exist (yet) counts 0.
func (m metrics) sum(name string, labels ...string) float64 {
	f := m[name]
	if f == nil {
		return 0
	}
	total := 0.0
series:
	for _, s := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(s.Label, func(l *dto.LabelPair) bool {
				return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}) {
				continue series
			}
		}
		switch {
		case s.Counter != nil:
			total += s.Counter.GetValue()
		case s.Gauge != nil:
			total += s.Gauge.GetValue()
		case s.Untyped != nil:
			total += s.Untyped.GetValue()
		}
	}
	return total
}

// byLabel sums family name by the values of label.
func (m metrics) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	if f := m[name]; f != nil {
		for _, s := range f.Metric {
			for _, l := range s.Label {
				if l.GetName() == label {
					out[l.GetValue()] += s.GetCounter().GetValue() + s.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// usage is what the gateway process holds at one moment.
type usage struct {
	RSSKiB     int64   `json:"rss_kib"`
	HeapKiB    int64   `json:"heap_kib"` // live heap after forced GCs
	FDs        int     `json:"fds"`
	Goroutines int     `json:"goroutines"`
	CPUSeconds float64 `json:"cpu_s"` // user + system since the start
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %s, heap %s, %d fds, %d goroutines", kib(u.RSSKiB), kib(u.HeapKiB), u.FDs, u.Goroutines)
}

// usage collects the gateway's usage, after two garbage collections
// (forced through pprof's heap profile, gc=1; the second empties the
// sync.Pools the first only moved aside) so that heap figures compare.
func (g *gateway) usage(t *testing.T) usage {
	t.Helper()
	for range 2 {
		if _, err := g.get("/debug/pprof/heap?gc=1"); err != nil {
			t.Fatalf("forcing a GC in the gateway: %v", err)
		}
	}
	m := g.mustScrape(t)
	return usage{
		RSSKiB:     procKiB(g.pid, "VmRSS:"),
		HeapKiB:    int64(m.sum("go_memstats_alloc_bytes")) >> 10,
		FDs:        g.fds(),
		Goroutines: int(m.sum("go_goroutines")),
		CPUSeconds: g.cpu(),
	}
}

// fds counts the gateway's open descriptors.
func (g *gateway) fds() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// peakRSS is the gateway's resident memory high-water mark (VmHWM).
func (g *gateway) peakRSS() int64 { return procKiB(g.pid, "VmHWM:") }

// cpu is the CPU time the gateway used so far, user and system.
func (g *gateway) cpu() float64 { return procCPU(g.pid) }

// procCPU is the CPU time process pid used so far, user and system, in
// seconds.
func procCPU(pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// procStatus returns the value of a /proc/PID/status line.
func procStatus(pid int, key string) string {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// procKiB reads a "NNN kB" line of /proc/PID/status.
func procKiB(pid int, key string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(procStatus(pid, key), " kB"), 10, 64)
	return n
}

func kib(n int64) string {
	if n >= 10<<10 {
		return fmt.Sprintf("%.0f MiB", float64(n)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/1024)
}

// dialer returns a dialer whose connections leave from the loopback
// address local.
func dialer(local string) *net.Dialer {
	return &net.Dialer{Timeout: waitShort, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
}

// clientOptions are the options of a client of the gateway's from local
// (the takeover's device and its sender).
func (g *gateway) clientOptions(local string) client.Options {
	return client.Options{RootCAs: g.ca.Pool, Dialer: dialer(local), ConnectTimeout: waitShort, PingIdle: -1}
}
