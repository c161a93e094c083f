package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/gateway"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// demoConfig is the built-in demo on ephemeral ports with its own state.
func demoConfig(t *testing.T) (file, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	stateDir = filepath.Join(dir, "state")
	file = filepath.Join(dir, "smqgw.toml")
	cfg := `state_dir = "` + stateDir + `"
[[listener]]
name = "tls"
address = "127.0.0.1:0"
tls = "dev"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[certs.dev]
dev = true
`
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, stateDir
}

func TestRunServesTLSAndPlainThenShutsDown(t *testing.T) {
	file, stateDir := demoConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *gateway.Gateway, 1)
	done := make(chan error, 1)
	var banner strings.Builder
	go func() { done <- run(ctx, []string{"-config", file}, &banner, io.Discard, ready) }()
	var gw *gateway.Gateway
	select {
	case gw = <-ready:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}

	caPEM, err := os.ReadFile(filepath.Join(stateDir, "dev", "ca.pem"))
	if err != nil {
		t.Fatalf("dev CA not created: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	dctx, dcancel := context.WithTimeout(ctx, waitFor)
	defer dcancel()
	secure, err := client.Dial(dctx, "wss://"+gw.Addr("tls").String()+"/smq", client.Options{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Close()
	device, err := client.Dial(dctx, "http://"+gw.Addr("lan").String()+"/smq", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()
	got := make(chan string, 1)
	if _, err := secure.Subscribe(dctx, "demo", func(m *client.Message) { got <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	if err := device.Publish(dctx, "demo", []byte("from the LAN")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "from the LAN" {
			t.Fatalf("got %q", m)
		}
	case <-dctx.Done():
		t.Fatal("no message from the plain device to the TLS client")
	}
	for _, want := range []string{"wss://" + gw.Addr("tls").String(), "dev CA to trust", "smq sub"} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner.String())
		}
	}

	cancel()
	var de *client.DisconnectError
	select {
	case <-secure.Done():
		if !errors.As(secure.Err(), &de) || de.Reason != "shutdown" {
			t.Errorf("secure client ended with %v, want Disconnect \"shutdown\"", secure.Err())
		}
	case <-time.After(waitFor):
		t.Fatal("client not disconnected on shutdown")
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestCheckOnly(t *testing.T) {
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
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-config", "/does/not/exist.toml"}} {
		if err := run(context.Background(), args, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("%q: run succeeded", args)
		}
	}
}

func TestVersion(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), []string{"version"}, &out, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^smqgw (devel|v\S+)( commit [0-9a-f]{1,12}(\+dirty)?( \(\S+\))?)? go\S+ \w+/\w+\n$`)
	if !want.MatchString(out.String()) {
		t.Errorf("smqgw version printed %q", out.String())
	}
	if !strings.Contains(out.String(), runtime.Version()) {
		t.Errorf("smqgw version does not name the Go version %s: %q", runtime.Version(), out.String())
	}
}
