package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// clean reports whether the run lost, reordered or failed nothing.
func (o *output) clean() bool {
	return o.Totals.Lost == 0 && o.Reordered == 0 && len(o.Errors) == 0
}

// The ways to the broker. Each is a target; a process may serve several.
const (
	direct    = "direct"
	directRaw = "direct raw"
	lanWSS    = "smqgw → LAN broker"
	lanRaw    = "smqgw → LAN broker, raw TLS"
	lanOne    = "smqgw → LAN broker, GOMAXPROCS=1"
	embedded  = "smqgw embedded"
	nginxWSS  = "nginx"
	nginxRaw  = "nginx, raw TLS"
)

// streamModule is Debian's nginx stream module (libnginx-mod-stream):
// with it nginx also terminates raw TLS and relays the bytes to the
// broker, the fair comparison for smqgw's raw TLS path.
const streamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// target is one way to the broker.
type target struct {
	name  string
	url   string
	proc  string // the process whose CPU and memory count (the proxy's)
	admin string // its admin endpoint (host:port), "" when it has none
}

// env is the processes of a run and how to reach them.
type env struct {
	dir     string
	smq     string
	smqgw   string
	ca      string
	log     io.Writer
	procs   []*exec.Cmd
	pids    map[string]func() []int
	targets map[string]target
	nginx   string // the nginx binary, "" when there is none
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
	if bin, err := exec.LookPath("nginx"); err == nil {
		e.nginx = bin
	} else {
		fmt.Fprintln(e.log, "bench: nginx not found (apt-get install nginx): its column is left out")
	}
	return nil
}

// has reports whether the run has a target (nginx may be missing).
func (e *env) has(name string) bool {
	_, ok := e.targets[name]
	return ok
}

// pick returns the targets of names that this run has, in that order.
func (e *env) pick(names ...string) []target {
	var out []target
	for _, n := range names {
		if t, ok := e.targets[n]; ok {
			out = append(out, t)
		}
	}
	return out
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

// limits lets the load through: smqgw's defaults are for the internet, and
// every client of the bench comes from 127.0.0.1.
const limits = `[limits]
max_sessions = 100000
max_sessions_per_ip = 100000
session_rate_per_ip = 100000
message_rate = 100000000
message_rate_per_ip = 1000000000
max_pending = 100000
max_pending_per_ip = 100000
max_connections_per_ip = 200000
`

// start runs the broker, the gateways and nginx, and fills in the targets.
func (e *env) start() error {
	var ports [9]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	broker, lan, lanOneP, emb, nginxPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	admLan, admOne, admEmb := ports[5], ports[6], ports[7]
	pki := filepath.Join(e.dir, "pki")
	certs := fmt.Sprintf("[certs.pki]\ncert_file = %q\nkey_file = %q\n",
		filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"))
	admin := func(port int) string { return fmt.Sprintf("[admin]\naddress = \"127.0.0.1:%d\"\n", port) }
	gwLan := func(port, adm int) string {
		return fmt.Sprintf("state_dir = %q\n%s%s[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:%d\"\ntls = \"pki\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"lan\"\n[upstream.lan]\nurls = [\"http://127.0.0.1:%d/\"]\n%s",
			e.dir, limits, admin(adm), port, broker, certs)
	}
	type proc struct {
		name, config string
		env          []string
		port         int
	}
	procs := []proc{
		{"broker", fmt.Sprintf("state_dir = %q\n%s[[listener]]\nname = \"lan\"\naddress = \"127.0.0.1:%d\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n",
			e.dir, limits, broker), nil, broker},
		{"gw-lan", gwLan(lan, admLan), nil, lan},
		{"gw-lan-1", gwLan(lanOneP, admOne), []string{"GOMAXPROCS=1"}, lanOneP},
		{"gw-embedded", fmt.Sprintf("state_dir = %q\n%s%s[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:%d\"\ntls = \"pki\"\n  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n%s",
			e.dir, limits, admin(admEmb), emb, certs), nil, emb},
	}
	e.pids = map[string]func() []int{}
	for _, p := range procs {
		file := filepath.Join(e.dir, p.name+".toml")
		if err := os.WriteFile(file, []byte(p.config), 0o600); err != nil {
			return err
		}
		cmd := exec.Command(e.smqgw, "-config", file)
		cmd.Env = append(os.Environ(), p.env...)
		cmd.Stderr = io.Discard
		if err := e.spawn(cmd); err != nil {
			return err
		}
		pid := cmd.Process.Pid
		e.pids[p.name] = func() []int { return []int{pid} }
	}
	for _, p := range procs {
		if err := waitPort(p.port); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	adm := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	e.targets = map[string]target{}
	for _, t := range []target{
		{direct, fmt.Sprintf("ws://127.0.0.1:%d/", broker), "broker", ""},
		{directRaw, fmt.Sprintf("http://127.0.0.1:%d/", broker), "broker", ""},
		{lanWSS, fmt.Sprintf("wss://127.0.0.1:%d/", lan), "gw-lan", adm(admLan)},
		{lanRaw, fmt.Sprintf("https://127.0.0.1:%d/", lan), "gw-lan", adm(admLan)},
		{lanOne, fmt.Sprintf("wss://127.0.0.1:%d/", lanOneP), "gw-lan-1", adm(admOne)},
		{embedded, fmt.Sprintf("wss://127.0.0.1:%d/", emb), "gw-embedded", adm(admEmb)},
	} {
		e.targets[t.name] = t
	}
	if e.nginx == "" {
		return nil
	}
	nginxRawPort := ports[8]
	if _, err := os.Stat(streamModule); err != nil {
		fmt.Fprintln(e.log, "bench: nginx's stream module not found (apt-get install libnginx-mod-stream): its raw TLS column is left out")
		nginxRawPort = 0
	}
	master, err := e.startNginx(nginxPort, nginxRawPort, broker)
	if err != nil {
		return err
	}
	e.pids["nginx"] = func() []int { return append([]int{master}, children(master)...) }
	e.targets[nginxWSS] = target{nginxWSS, fmt.Sprintf("wss://127.0.0.1:%d/", nginxPort), "nginx", ""}
	if nginxRawPort != 0 {
		e.targets[nginxRaw] = target{nginxRaw, fmt.Sprintf("https://127.0.0.1:%d/", nginxRawPort), "nginx", ""}
	}
	return nil
}

// restart gives every target a fresh process.
func (e *env) restart() error {
	e.stopAll()
	return e.start()
}

// nginxConf is an nginx configuration on prefix with workers as many as
// CPUs (like smqgw's GOMAXPROCS), no access log, and in http { } the
// directives http and then the servers.
func nginxConf(prefix, http, servers string) string {
	return fmt.Sprintf(`worker_processes %d;
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
%[3]s%[4]s}
`, runtime.NumCPU(), prefix, http, servers)
}

// nginxWSServer is an nginx server block terminating TLS on port with the
// certificate and key, and proxying WebSockets to the broker's port.
func nginxWSServer(port int, cert, key string, broker int) string {
	return fmt.Sprintf(`  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://127.0.0.1:%d;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_buffering off;
    }
  }
`, port, cert, key, broker)
}

// startNginx runs nginx terminating TLS on port and proxying WebSockets
// to the broker, with as many workers as CPUs, like smqgw's GOMAXPROCS;
// and, unless rawPort is 0, terminating TLS on rawPort and relaying the
// bytes to the broker (raw SMQ, its HTTP request included).
func (e *env) startNginx(port, rawPort, broker int) (int, error) {
	prefix := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return 0, err
	}
	pki := filepath.Join(e.dir, "pki")
	var stream, load string
	if rawPort != 0 {
		load = "load_module " + streamModule + ";\n"
		stream = fmt.Sprintf(`stream {
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    proxy_pass 127.0.0.1:%d;
    proxy_timeout 1h;
  }
}
`, rawPort, filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"), broker)
	}
	server := nginxWSServer(port, filepath.Join(pki, "server.pem"), filepath.Join(pki, "server-key.pem"), broker)
	conf := load + nginxConf(prefix, "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n", server) + stream
	file := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.Command(e.nginx, "-p", prefix, "-c", file, "-g", "daemon off;")
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

// benchArgs returns the smq bench command line for a run through t.
func (e *env) benchArgs(t target, args ...string) []string {
	all := append([]string{"bench", "-json", "-url", t.url}, args...)
	if strings.HasPrefix(t.url, "wss://") || strings.HasPrefix(t.url, "https://") {
		all = append(all, "-ca", e.ca)
	}
	return all
}

// bench runs smq bench through t and returns its result with the CPU
// time t's proxy used meanwhile. Lost or reordered messages and errors
// are in the result; the caller records them.
func (e *env) bench(t target, d time.Duration, args ...string) (*output, error) {
	all := e.benchArgs(t, append([]string{"-duration", d.String()}, args...)...)
	fmt.Fprintf(e.log, "bench: %s: smq %s\n", t.name, strings.Join(all, " "))
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.smq, all...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	pids := e.pids[t.proc]
	cpu0 := cpuTime(pids())
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("smq bench: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	cpu := cpuTime(pids()) - cpu0
	var o output
	if err := json.Unmarshal(stdout.Bytes(), &o); err != nil {
		return nil, fmt.Errorf("smq bench -json: %w", err)
	}
	o.ProxyCPU = cpu
	if !o.clean() {
		fmt.Fprintf(e.log, "bench: %s: %d lost, %d reordered, errors %v\n", t.name, o.Totals.Lost, o.Reordered, o.Errors)
	}
	return &o, nil
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

// goMemory is what a gateway's /metrics says of its Go runtime, in bytes
// (Goroutines: a count).
type goMemory struct {
	HeapInuse    float64 `json:"heap_inuse_bytes"`
	HeapIdle     float64 `json:"heap_idle_bytes"`
	HeapReleased float64 `json:"heap_released_bytes"`
	StackInuse   float64 `json:"stack_inuse_bytes"`
	Sys          float64 `json:"sys_bytes"`
	Goroutines   float64 `json:"goroutines"`
}

// scrapeMemory reads the go_memstats_* figures from an admin endpoint.
func scrapeMemory(addr string) (*goMemory, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m goMemory
	fields := map[string]*float64{
		"go_memstats_heap_inuse_bytes":    &m.HeapInuse,
		"go_memstats_heap_idle_bytes":     &m.HeapIdle,
		"go_memstats_heap_released_bytes": &m.HeapReleased,
		"go_memstats_stack_inuse_bytes":   &m.StackInuse,
		"go_memstats_sys_bytes":           &m.Sys,
		"go_goroutines":                   &m.Goroutines,
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := fields[name]; ok && p != nil {
			*p, _ = strconv.ParseFloat(strings.TrimSpace(value), 64)
		}
	}
	return &m, sc.Err()
}
