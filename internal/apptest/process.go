package apptest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/smqtest"
)

// The smqgw program, built once per test binary, without the race
// detector, as it ships.
var (
	buildOnce sync.Once
	binFile   string
	buildErr  error
)

// Binary returns cmd/smqgw built into a temporary directory, once per test
// binary. Without a go command the test is skipped, but fails where
// CI=true: there a missing part is a failure.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("no go command on PATH to build cmd/smqgw: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "smqgw-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binFile = filepath.Join(dir, "smqgw")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, goBin, "build", "-o", binFile, "github.com/smqgw/smqgw/cmd/smqgw").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build cmd/smqgw: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(buildErr)
		}
		t.Skip(buildErr)
	}
	return binFile
}

// Process is smqgw running as a process of its own, for a test that kills
// it as a crash would or watches it from outside.
type Process struct {
	Addrs  map[string]string // listener name (and "admin") → host:port, from the banner
	Pid    int               // its process id
	Logs   Log               // its standard error: the log
	cmd    *exec.Cmd
	exited chan struct{}
}

// Log is where a Process's standard error goes, read back as a string: a
// buffer that keeps it all (smqtest.SyncBuffer) or its end
// (childproc.Tail). It must be safe for concurrent use.
type Log interface {
	io.Writer
	String() string
}

// ProcessOptions are StartProcessWith's options. The zero value is
// StartProcess's.
type ProcessOptions struct {
	// Logs receives the log. Nil means a new smqtest.SyncBuffer, which keeps
	// it all: a test that makes the log long wants a childproc.Tail.
	Logs Log

	// StartTimeout bounds the wait for the banner. Zero means
	// smqtest.WaitFor.
	StartTimeout time.Duration
}

// StartProcess runs bin -config file and waits for its banner, which must
// name the listeners (and "admin" last, so the configuration needs an
// [admin] block). The process is killed when the test ends.
func StartProcess(t testing.TB, bin, file string, listeners ...string) *Process {
	t.Helper()
	return StartProcessWith(t, bin, file, ProcessOptions{}, listeners...)
}

// StartProcessWith is StartProcess with opts.
func StartProcessWith(t testing.TB, bin, file string, opts ProcessOptions, listeners ...string) *Process {
	t.Helper()
	if opts.Logs == nil {
		opts.Logs = &smqtest.SyncBuffer{}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = smqtest.WaitFor
	}
	cmd := exec.Command(bin, "-config", file)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Addrs: map[string]string{}, Logs: opts.Logs, cmd: cmd, exited: make(chan struct{})}
	cmd.Stderr = p.Logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.Pid = cmd.Process.Pid
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", file, p.Logs)
		}
	})
	// The banner names each listener's address ("  lan  ws://ADDR/smq
	// ...") and the admin endpoint's ("  admin  http://ADDR/metrics ...").
	banner := make(chan map[string]string, 1)
	go func() {
		found := map[string]string{}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			if u, err := url.Parse(f[1]); err == nil && u.Host != "" {
				found[f[0]] = u.Host
			}
			if f[0] == "admin" {
				banner <- found
				found = nil
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		if found != nil {
			banner <- nil
		}
	}()
	select {
	case found := <-banner:
		if found == nil {
			t.Fatalf("smqgw printed no banner:\n%s", p.Logs)
		}
		for _, name := range append(listeners, "admin") {
			if found[name] == "" {
				t.Fatalf("no address for %s in the banner", name)
			}
		}
		p.Addrs = found
	case <-p.exited:
		t.Fatalf("smqgw exited at start:\n%s", p.Logs)
	case <-time.After(opts.StartTimeout):
		t.Fatalf("smqgw did not start within %v:\n%s", opts.StartTimeout, p.Logs)
	}
	return p
}

// Kill kills the process (SIGKILL: no drain, no goodbye) and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}
