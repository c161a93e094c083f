// Command smqbench measures smqgw side by side with the direct path and
// nginx, on one machine, in one run:
//
//	go run ./cmd/smqbench            the full run (about 5 minutes)
//	go run ./cmd/smqbench -quick     a short run, to try the setup
//
// It builds smqgw and smq, makes a test PKI, and starts: a broker process
// (smqgw with only a plain listener and its embedded broker: the LAN
// broker), smqgw terminating wss:// in front of it (raw SMQ upstream over
// loopback), smqgw terminating wss:// with its in-process broker, and
// nginx terminating wss:// and proxying to the broker's WebSocket endpoint.
// Every workload runs through each with smq bench; the result is a table
// with the ratios smqgw / direct and smqgw / nginx, and the targets.
//
// nginx comes from Debian: apt-get install nginx. Without it the nginx
// column is left out.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smqgw/smqgw/internal/loadstat"
)

// output is what smq bench -json prints, with the CPU time the proxy
// processes used during the run.
type output struct {
	loadstat.Result
	Totals      loadstat.Totals  `json:"totals"`
	Percentiles map[string]int64 `json:"latency_percentiles_ns"`
	ProxyCPU    time.Duration    `json:"proxy_cpu_ns"`
}

// target is one way to the broker.
type target struct {
	name string
	url  string
	pids func() []int // the processes whose memory counts (the proxy's)
}

// workload is one smq bench run, repeated on each target.
type workload struct {
	name string
	args []string
	kind string // "throughput", "rr", "latency"
}

type env struct {
	dir      string
	smq      string
	smqgw    string
	ca       string
	duration time.Duration
	procs    []*exec.Cmd
	log      io.Writer
}

func main() {
	quick := flag.Bool("quick", false, "short runs (1 s) and fewer idle sessions, to try the setup")
	jsonOut := flag.String("json", "", "also write every measurement to this `file` as JSON")
	// storms (issue 17 §3): storm.go.
	stormsOnly := flag.Bool("storms-only", false, "run only the reconnect storms and handshake rates (storm.go)")
	flag.Parse()
	if *stormsOnly {
		if err := runStorms(*quick, *jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "bench: error:", err)
			os.Exit(1)
		}
		return
	}
	// end storms
	if err := run(*quick, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "bench: error:", err)
		os.Exit(1)
	}
}

func run(quick bool, jsonOut string) error {
	dir, err := os.MkdirTemp("", "smqgw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, duration: 4 * time.Second, log: os.Stderr}
	if quick {
		e.duration = time.Second
	}
	defer e.stopAll()
	if err := e.build(); err != nil {
		return err
	}
	targets, err := e.start()
	if err != nil {
		return err
	}
	idle := []int{1000, 5000, 9000}
	if quick {
		idle = []int{200, 500}
	}
	var work []workload
	for _, size := range []string{"64", "4096"} {
		work = append(work,
			workload{name: "fan-in " + size + " B (20 → 1)", kind: "throughput", args: []string{"-pubs", "20", "-subs", "1", "-size", size}},
			workload{name: "fan-out " + size + " B (1 → 20)", kind: "throughput", args: []string{"-pubs", "1", "-subs", "20", "-size", size}},
			workload{name: "request/response " + size + " B (8 clients)", kind: "rr", args: []string{"-mode", "rr", "-pubs", "8", "-size", size}})
	}
	results := map[string]map[string]*output{}
	record := func(w, t string, o *output) {
		if results[w] == nil {
			results[w] = map[string]*output{}
		}
		results[w][t] = o
	}
	for _, w := range work {
		for _, t := range targets {
			o, err := e.bench(t, w.args)
			if err != nil {
				return fmt.Errorf("%s via %s: %w", w.name, t.name, err)
			}
			record(w.name, t.name, o)
		}
	}
	// Latency at half of smqgw's peak fan-in rate, on every path.
	peak := results[work[0].name]["smqgw → LAN broker"].Totals.Rate
	half := fmt.Sprintf("%.0f", peak/2/20)
	lat := workload{name: fmt.Sprintf("fan-in 64 B at %.0f msgs/s (50%% of smqgw's peak)", peak/2), kind: "latency",
		args: []string{"-pubs", "20", "-subs", "1", "-size", "64", "-rate", half}}
	for _, t := range targets {
		o, err := e.bench(t, lat.args)
		if err != nil {
			return fmt.Errorf("%s via %s: %w", lat.name, t.name, err)
		}
		record(lat.name, t.name, o)
	}
	work = append(work, lat)
	mem := map[int]map[string]float64{}
	for _, n := range idle {
		// Fresh processes for each size: what earlier runs left in their
		// heaps does not count.
		e.stopAll()
		if targets, err = e.start(); err != nil {
			return err
		}
		mem[n] = map[string]float64{}
		for _, t := range targets {
			per, err := e.idleMemory(t, n)
			if err != nil {
				return fmt.Errorf("%d idle sessions via %s: %w", n, t.name, err)
			}
			mem[n][t.name] = per
		}
	}
	report(os.Stdout, targets, work, results, idle, mem)
	if jsonOut != "" {
		js, _ := json.MarshalIndent(map[string]any{"results": results, "idle_bytes_per_session": mem}, "", "  ")
		return os.WriteFile(jsonOut, js, 0o644)
	}
	return nil
}

// build compiles smqgw and smq and makes the PKI.
func (e *env) build() error {
	e.smq, e.smqgw = filepath.Join(e.dir, "smq"), filepath.Join(e.dir, "smqgw")
	for bin, pkg := range map[string]string{e.smq: "./cmd/smq", e.smqgw: "./cmd/smqgw"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Stderr = e.log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s (run from the repository root): %w", pkg, err)
		}
	}
	pki := filepath.Join(e.dir, "pki")
	if out, err := exec.Command(e.smqgw, "certs", "init", "-dir", pki, "-hosts", "127.0.0.1").CombinedOutput(); err != nil {
		return fmt.Errorf("smqgw certs init: %v\n%s", err, out)
	}
	e.ca = filepath.Join(pki, "ca.pem")
	return nil
}

// freePort returns a loopback port nobody listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// limits lets the load through: smqgw's defaults are for the internet.
const limits = `[limits]
max_sessions = 100000
max_sessions_per_ip = 100000
session_rate_per_ip = 100000
message_rate = 100000000
`

// start runs the broker, the two gateways and nginx, and returns the
// paths through them.
func (e *env) start() ([]target, error) {
	var ports [4]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	broker, lan, embedded, nginxPort := ports[0], ports[1], ports[2], ports[3]
	pki := filepath.Join(e.dir, "pki")
	certs := fmt.Sprintf("[certs.pki]\ncert_file = %q\nkey_file = %q\n",
		filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"))
	configs := map[string]string{
		"broker": fmt.Sprintf("state_dir = %q\n%s[[listener]]\nname = \"lan\"\naddress = \"127.0.0.1:%d\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n",
			e.dir, limits, broker),
		"gw-lan": fmt.Sprintf("state_dir = %q\n%s[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:%d\"\ntls = \"pki\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"lan\"\n[upstream.lan]\nurls = [\"http://127.0.0.1:%d/\"]\n%s",
			e.dir, limits, lan, broker, certs),
		"gw-embedded": fmt.Sprintf("state_dir = %q\n%s[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:%d\"\ntls = \"pki\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n%s",
			e.dir, limits, embedded, certs),
	}
	pids := map[string]int{}
	for _, name := range []string{"broker", "gw-lan", "gw-embedded"} {
		file := filepath.Join(e.dir, name+".toml")
		if err := os.WriteFile(file, []byte(configs[name]), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(e.smqgw, "-config", file)
		cmd.Stderr = io.Discard
		if err := e.spawn(cmd); err != nil {
			return nil, err
		}
		pids[name] = cmd.Process.Pid
	}
	for _, p := range ports[:3] {
		if err := waitPort(p); err != nil {
			return nil, err
		}
	}
	one := func(pid int) func() []int { return func() []int { return []int{pid} } }
	targets := []target{
		{"direct", fmt.Sprintf("ws://127.0.0.1:%d/", broker), one(pids["broker"])},
		{"smqgw → LAN broker", fmt.Sprintf("wss://127.0.0.1:%d/", lan), one(pids["gw-lan"])},
		{"smqgw embedded", fmt.Sprintf("wss://127.0.0.1:%d/", embedded), one(pids["gw-embedded"])},
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		fmt.Fprintln(e.log, "bench: nginx not found (apt-get install nginx): its column is left out")
		return targets, nil
	}
	master, err := e.startNginx(nginx, nginxPort, broker)
	if err != nil {
		return nil, err
	}
	return append(targets, target{"nginx", fmt.Sprintf("wss://127.0.0.1:%d/", nginxPort),
		func() []int { return append([]int{master}, children(master)...) }}), nil
}

// startNginx runs nginx terminating TLS on port and proxying WebSockets
// to the broker, with as many workers as CPUs, like smqgw's GOMAXPROCS.
func (e *env) startNginx(bin string, port, broker int) (int, error) {
	prefix := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return 0, err
	}
	pki := filepath.Join(e.dir, "pki")
	conf := fmt.Sprintf(`worker_processes %d;
worker_rlimit_nofile 20000;
pid %[2]s/nginx.pid;
error_log %[2]s/logs/error.log warn;
events { worker_connections 20000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:%[3]d ssl;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://127.0.0.1:%[6]d;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_buffering off;
    }
  }
}
`, runtime.NumCPU(), prefix, port, filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"), broker)
	file := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.Command(bin, "-p", prefix, "-c", file, "-g", "daemon off;")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := e.spawn(cmd); err != nil {
		return 0, err
	}
	if err := waitPort(port); err != nil {
		return 0, fmt.Errorf("nginx: %v\n%s", err, stderr.String())
	}
	return cmd.Process.Pid, nil
}

func (e *env) spawn(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	e.procs = append(e.procs, cmd)
	return nil
}

func (e *env) stopAll() {
	defer func() { e.procs = nil }()
	for _, c := range e.procs {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range e.procs {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

func waitPort(port int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on port %d after 30s", port)
}

// bench runs smq bench through t and returns its result; lost or
// reordered messages and errors are failures of the run.
func (e *env) bench(t target, args []string) (*output, error) {
	all := append([]string{"bench", "-json", "-url", t.url, "-duration", e.duration.String()}, args...)
	if strings.HasPrefix(t.url, "wss://") {
		all = append(all, "-ca", e.ca)
	}
	fmt.Fprintf(e.log, "bench: %s: smq %s\n", t.name, strings.Join(all, " "))
	ctx, cancel := context.WithTimeout(context.Background(), e.duration+2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.smq, all...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cpu0 := cpuTime(t.pids())
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	cpu := cpuTime(t.pids()) - cpu0
	var o output
	if err := json.Unmarshal(stdout.Bytes(), &o); err != nil {
		return nil, err
	}
	o.ProxyCPU = cpu
	if o.Totals.Lost > 0 || o.Reordered > 0 || len(o.Errors) > 0 {
		fmt.Fprintf(e.log, "bench: %s: %d lost, %d reordered, errors %v\n", t.name, o.Totals.Lost, o.Reordered, o.Errors)
	}
	return &o, nil
}

// idleMemory opens n idle sessions through t and returns the proxy's
// resident memory, at its peak while they are held, divided by n.
func (e *env) idleMemory(t target, n int) (float64, error) {
	hold := 3*time.Second + time.Duration(n)*time.Millisecond // connecting takes about 1 ms per session
	args := []string{"bench", "-json", "-mode", "idle", "-conns", strconv.Itoa(n), "-url", t.url,
		"-duration", hold.String(), "-connect-parallel", "32"}
	if strings.HasPrefix(t.url, "wss://") {
		args = append(args, "-ca", e.ca)
	}
	fmt.Fprintf(e.log, "bench: %s: smq %s\n", t.name, strings.Join(args, " "))
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(e.smq, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var peak int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return 0, fmt.Errorf("%v: %s", err, stderr.String())
			}
			var o output
			if err := json.Unmarshal(stdout.Bytes(), &o); err != nil {
				return 0, err
			}
			if o.Connections != n || len(o.Errors) > 0 {
				return 0, fmt.Errorf("%d of %d sessions opened, errors %v", o.Connections, n, o.Errors)
			}
			// Let the proxy settle before the next run.
			time.Sleep(time.Second)
			return float64(peak) / float64(n), nil
		case <-tick.C:
			peak = max(peak, rss(t.pids()))
		}
	}
}

// rss returns the resident memory of processes, in bytes.
func rss(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				total += kb << 10
			}
		}
		f.Close()
	}
	return total
}

// clockTick is the unit of /proc/PID/stat times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime returns the user and system time processes used so far.
func cpuTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(u+s) * clockTick
		}
	}
	return total
}

// children returns the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, en := range entries {
		child, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; cut after ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// report prints the tables and the targets.
func report(w io.Writer, targets []target, work []workload, results map[string]map[string]*output, idle []int,
	mem map[int]map[string]float64) {
	const gw, gwEmb, direct, nginx = "smqgw → LAN broker", "smqgw embedded", "direct", "nginx"
	hasNginx := len(targets) == 4
	head := "| workload |"
	sep := "|---|"
	for _, t := range targets {
		head += " " + t.name + " |"
		sep += "---:|"
	}
	head += " smqgw / direct | smqgw / nginx |"
	sep += "---:|---:|"
	ratio := func(a, b float64) string {
		if b == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	fmt.Fprintln(w, "Throughput (messages delivered per second; request/response: round trips per second) and latency:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	clean := true
	for _, wl := range work {
		row := map[string]*output{}
		for name, o := range results[wl.name] {
			row[name] = o
			if o.Totals.Lost > 0 || o.Reordered > 0 || len(o.Errors) > 0 {
				clean = false
			}
		}
		if wl.kind == "latency" {
			line := "| " + wl.name + ": p99 latency |"
			for _, t := range targets {
				line += fmt.Sprintf(" %.3f ms |", float64(row[t.name].Percentiles["p99"])/1e6)
			}
			added := float64(row[gw].Percentiles["p99"]-row[direct].Percentiles["p99"]) / 1e6
			line += fmt.Sprintf(" +%.3f ms | %s |", added, nginxRatio(hasNginx, func() string {
				return ratio(float64(row[gw].Percentiles["p99"]), float64(row[nginx].Percentiles["p99"]))
			}))
			fmt.Fprintln(w, line)
			continue
		}
		line := "| " + wl.name + " |"
		for _, t := range targets {
			o := row[t.name]
			line += fmt.Sprintf(" %.0f (p99 %.2f ms) |", o.Totals.Rate, float64(o.Percentiles["p99"])/1e6)
		}
		line += fmt.Sprintf(" %s | %s |", ratio(row[gw].Totals.Rate, row[direct].Totals.Rate),
			nginxRatio(hasNginx, func() string { return ratio(row[gw].Totals.Rate, row[nginx].Totals.Rate) }))
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU time of the proxy process(es) per message delivered (µs; direct: the broker itself), on the same runs:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, wl := range work {
		if wl.kind == "latency" {
			continue
		}
		row := results[wl.name]
		per := func(name string) float64 {
			o := row[name]
			if o == nil || o.Totals.Delivered == 0 {
				return 0
			}
			return float64(o.ProxyCPU.Microseconds()) / float64(o.Totals.Delivered)
		}
		line := "| " + wl.name + " |"
		for _, t := range targets {
			line += fmt.Sprintf(" %.2f |", per(t.name))
		}
		line += fmt.Sprintf(" %s | %s |", ratio(per(gw), per(direct)),
			nginxRatio(hasNginx, func() string { return ratio(per(gw), per(nginx)) }))
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Idle sessions: resident memory of the proxy process (peak, fresh process) divided by the sessions (KiB):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, n := range idle {
		line := fmt.Sprintf("| %d sessions |", n)
		for _, t := range targets {
			line += fmt.Sprintf(" %.1f |", mem[n][t.name]/1024)
		}
		line += fmt.Sprintf(" %s | %s |", ratio(mem[n][gw], mem[n][direct]),
			nginxRatio(hasNginx, func() string { return ratio(mem[n][gw], mem[n][nginx]) }))
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Targets:")
	first := results[work[0].name]
	if hasNginx {
		r := first[gw].Totals.Rate / first[nginx].Totals.Rate
		fmt.Fprintf(w, "- wss throughput, 64 B fan-in, smqgw / nginx ≥ 1.3: %.2f — %s\n", r, met(r >= 1.3))
	} else {
		fmt.Fprintln(w, "- wss throughput vs nginx: not measured (nginx not installed)")
	}
	last := results[work[len(work)-1].name]
	added := float64(last[gw].Percentiles["p99"]-last[direct].Percentiles["p99"]) / 1e6
	addedEmb := float64(last[gwEmb].Percentiles["p99"]-last[direct].Percentiles["p99"]) / 1e6
	fmt.Fprintf(w, "- p99 latency added over direct at 50%% of peak < 1 ms: %+.3f ms (embedded: %+.3f ms) — %s\n",
		added, addedEmb, met(added < 1))
	n := idle[len(idle)-1]
	fmt.Fprintf(w, "- idle memory per secure session at %d sessions < 20 KiB: %.1f KiB (embedded broker in the same process: %.1f KiB) — %s\n",
		n, mem[n][gw]/1024, mem[n][gwEmb]/1024, met(mem[n][gw] < 20*1024))
	fmt.Fprintf(w, "- no lost or reordered message, no error, in any run: %s\n", met(clean))
}

func nginxRatio(has bool, f func() string) string {
	if !has {
		return "—"
	}
	return f()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
