// Package proxytest starts real forward proxies for tests: tinyproxy (HTTP
// CONNECT) and microsocks (SOCKS5), from Debian's packages of the same
// names. Each runs in the foreground as a child of the test, on a free
// 127.0.0.1 port, with its configuration and logs in the test's temporary
// directory (no system paths, no daemon), and is stopped by PID when the
// test ends. It exists so proxyclient and the gateway's egress tests
// exercise the proxies people really run rather than fakes.
//
// A missing binary skips the test with the install command, or fails it
// when CI=true.
package proxytest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of starting and stopping a proxy.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// Options configures a proxy. The zero value is a proxy without
// authentication.
type Options struct {
	// User and Password turn on authentication when User is not empty:
	// Basic for tinyproxy (BasicAuth), RFC 1929 username/password for
	// microsocks. tinyproxy's configuration only takes letters, digits,
	// '.', '_' and '-' in both.
	User, Password string
}

// Proxy is a running proxy.
type Proxy struct {
	// URL reaches the proxy: http://127.0.0.1:PORT for tinyproxy,
	// socks5://127.0.0.1:PORT for microsocks (set Scheme to "socks5h" for
	// remote resolution), with User and Password as user info when set.
	URL *url.URL
	// Addr is the proxy's host:port.
	Addr string
	// PID is the proxy's process ID.
	PID int

	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait has returned
	logFile string
	once    sync.Once
}

// Stop ends the proxy: SIGTERM, then SIGKILL if it has not exited within a
// few seconds, and waits for it. It is safe to call more than once; the
// test's cleanup calls it too.
func (p *Proxy) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-p.exited:
		case <-timer.C:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// Log returns what the proxy has logged so far: tinyproxy's log file and
// either proxy's standard output and error.
func (p *Proxy) Log() string {
	b, _ := os.ReadFile(p.logFile)
	return string(b)
}

// tinyproxyAuth is what tinyproxy's configuration parser accepts in a
// BasicAuth line.
var tinyproxyAuth = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// StartTinyproxy starts tinyproxy on 127.0.0.1, allowing CONNECT to every
// port (there is no ConnectPort line) from 127.0.0.1 only.
func StartTinyproxy(t testing.TB, opts Options) *Proxy {
	t.Helper()
	bin := lookPath(t, "tinyproxy")
	if opts.User != "" && (!tinyproxyAuth.MatchString(opts.User) || !tinyproxyAuth.MatchString(opts.Password)) {
		t.Fatalf("proxytest: tinyproxy user %q and password must be letters, digits, '.', '_' or '-'", opts.User)
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "tinyproxy.log")
	return start(t, "http", opts, logFile, func(port int) []string {
		conf := fmt.Sprintf(`# written by proxytest
Listen 127.0.0.1
Port %d
Allow 127.0.0.1
Timeout 60
MaxClients 64
Syslog Off
LogLevel Info
LogFile %q
PidFile %q
`, port, logFile, filepath.Join(dir, "tinyproxy.pid"))
		if opts.User != "" {
			conf += fmt.Sprintf("BasicAuth %s %s\n", opts.User, opts.Password)
		}
		file := filepath.Join(dir, "tinyproxy.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		// -d: stay in the foreground, so the PID is tinyproxy's own.
		return []string{bin, "-d", "-c", file}
	})
}

// StartMicrosocks starts microsocks on 127.0.0.1.
func StartMicrosocks(t testing.TB, opts Options) *Proxy {
	t.Helper()
	bin := lookPath(t, "microsocks")
	logFile := filepath.Join(t.TempDir(), "microsocks.log")
	return start(t, "socks5", opts, logFile, func(port int) []string {
		args := []string{bin, "-i", "127.0.0.1", "-p", strconv.Itoa(port)}
		if opts.User != "" {
			args = append(args, "-u", opts.User, "-P", opts.Password)
		}
		return args
	})
}

// lookPath finds a proxy's binary, also in the sbin directories a non-root
// PATH may lack.
func lookPath(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("proxytest: %s not found; install it: apt-get install tinyproxy microsocks", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// start runs the command that command builds for a free port until it
// accepts connections there, trying other ports if the proxy exits first
// (the port was taken meanwhile).
func start(t testing.TB, scheme string, opts Options, logFile string, command func(port int) []string) *Proxy {
	t.Helper()
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("proxytest: %v", err)
		}
		p, err := run(command(port), port, logFile)
		if err == nil {
			p.URL = &url.URL{Scheme: scheme, Host: p.Addr}
			if opts.User != "" {
				p.URL.User = url.UserPassword(opts.User, opts.Password)
			}
			t.Cleanup(func() {
				p.Stop()
				if t.Failed() {
					t.Logf("proxytest: %s log:\n%s", filepath.Base(p.cmd.Path), p.Log())
				}
			})
			return p
		}
		lastErr = err
	}
	t.Fatalf("proxytest: %v", lastErr)
	return nil
}

// run starts args, its output appended to logFile, and waits until port
// accepts connections.
func run(args []string, port int, logFile string) (*Proxy, error) {
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = filepath.Dir(logFile)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proxy{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		PID:     cmd.Process.Pid,
		cmd:     cmd,
		exited:  make(chan struct{}),
		logFile: logFile,
	}
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(); err != nil {
		p.Stop()
		if errors.Is(err, errExited) {
			return nil, fmt.Errorf("%s exited (%v) before listening on %s:\n%s", filepath.Base(args[0]), waitErr, p.Addr, p.Log())
		}
		return nil, err
	}
	return p, nil
}

var errExited = errors.New("exited")

// waitReady polls the proxy's port until it accepts a connection: a child
// process has no other way to say it is listening.
func (p *Proxy) waitReady() error {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			select {
			case <-p.exited: // someone else's listener
				return errExited
			default:
				return nil
			}
		}
		select {
		case <-p.exited:
			return errExited
		case <-deadline.C:
			return fmt.Errorf("%s did not listen on %s within %v:\n%s", filepath.Base(p.cmd.Path), p.Addr, startTimeout, p.Log())
		case <-tick.C:
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
