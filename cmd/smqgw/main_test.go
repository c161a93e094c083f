package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

func TestMain(m *testing.M) { smqtest.Main(m, 6) }

// demoConfig is the built-in demo on ephemeral ports with its own state.
func demoConfig(t *testing.T) (file, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	stateDir = filepath.Join(dir, "state")
	file = filepath.Join(dir, "smqgw.toml")
	cfg := fmt.Sprintf("state_dir = %q\n", stateDir) + apptest.Listener("tls", "dev") + apptest.Listener("lan", "") + `
[certs.dev]
dev = true
`
	apptest.WriteFile(t, file, []byte(cfg))
	return file, stateDir
}

// running is smqgw run in this process, as main runs it: with its flags,
// its banner and its SIGHUP handling. Tests of anything else start the
// gateway with apptest.Start.
type running struct {
	gw     *gateway.Gateway
	banner *smqtest.SyncBuffer // stdout
	logs   *smqtest.SyncBuffer // stderr
	stop   func()              // shuts it down and waits; idempotent
}

// runSMQGW runs smqgw with args until stop or the end of the test; run
// must return nil.
func runSMQGW(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *gateway.Gateway, 1)
	done := make(chan error, 1)
	r := &running{banner: &smqtest.SyncBuffer{}, logs: &smqtest.SyncBuffer{}}
	go func() { done <- run(ctx, args, r.banner, r.logs, ready) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("smqgw exited with %v", err)
			}
		})
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("smqgw log:\n%s", r.logs)
		}
	})
	select {
	case r.gw = <-ready:
	case err := <-done:
		t.Fatalf("smqgw did not start: %v\n%s", err, r.logs)
	}
	return r
}

// startSMQGW writes src to dir/smqgw.toml and runs smqgw -config on it.
func startSMQGW(t *testing.T, dir, src string) *running {
	t.Helper()
	file := filepath.Join(dir, "smqgw.toml")
	apptest.WriteFile(t, file, []byte(src))
	return runSMQGW(t, "-config", file)
}

func TestRunServesTLSAndPlainThenShutsDown(t *testing.T) {
	t.Parallel()
	file, stateDir := demoConfig(t)
	r := runSMQGW(t, "-config", file)
	caPEM, err := os.ReadFile(filepath.Join(stateDir, "dev", "ca.pem"))
	if err != nil {
		t.Fatalf("dev CA not created: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	secure, err := client.Dial(ctx, "wss://"+r.gw.Addr("tls").String()+"/smq", client.Options{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Close()
	device, err := client.Dial(ctx, "http://"+r.gw.Addr("lan").String()+"/smq", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()
	apptest.PubSub(t, secure, device) // from the plain device to the TLS client
	banner := r.banner.String()
	for _, want := range []string{"wss://" + r.gw.Addr("tls").String(), "dev CA to trust", "smq sub"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	// Shutdown drains: run returns once the clients have been told, with
	// close 1001 "shutdown" and no Disconnect (which smq.js would take as
	// final).
	r.stop()
	var de *client.DisconnectError
	select {
	case <-secure.Done():
		if err := secure.Err(); errors.As(err, &de) || !strings.Contains(fmt.Sprint(err), "close 1001 (going away): shutdown") {
			t.Errorf("secure client ended with %v, want close 1001 \"shutdown\"", err)
		}
	case <-time.After(smqtest.WaitFor):
		t.Fatal("client not disconnected on shutdown")
	}
}

func TestCheckOnly(t *testing.T) {
	t.Parallel()
	file, _ := demoConfig(t)
	var out strings.Builder
	if err := run(context.Background(), []string{"-t", "-config", file}, &out, io.Discard, nil); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if !strings.Contains(out.String(), "is valid") {
		t.Fatalf("output %q", out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[[listener]]\nname = \"x\"\nadress = \":1\"\n"), 0o644)
	err := run(context.Background(), []string{"-t", "-config", bad}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "bad.toml:3") || !strings.Contains(err.Error(), `"adress"`) {
		t.Fatalf("bad config: %v, want the file, line 3 and the key", err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-config", "/does/not/exist.toml"}} {
		if err := run(context.Background(), args, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("%q: run succeeded", args)
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	want := regexp.MustCompile(`^smqgw (devel|v\S+) \((commit [0-9a-f]{1,12}(\+dirty)?, )?(\S+, )?go\S+\)\n$`)
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		r := cli(t, args...)
		if r.code != 0 || r.stderr != "" || !want.MatchString(r.stdout) {
			t.Errorf("smqgw %s: code %d, stdout %q, stderr %q", args[0], r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, runtime.Version()) {
			t.Errorf("smqgw %s does not name the Go version %s: %q", args[0], runtime.Version(), r.stdout)
		}
	}
}
