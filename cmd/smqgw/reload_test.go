package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// TestSIGHUPReloadsCertificates replaces the certificate files of a
// running smqgw whose file watch is too slow to notice, sends it SIGHUP,
// and checks new handshakes get the new certificate while a session opened
// before goes on. Not parallel: SIGHUP goes to the whole test process,
// and so reloads every smqgw that run started in it.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	first, second := ca.Server(t, "127.0.0.1"), ca.Server(t, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	replace := func(l *testpki.Leaf) {
		t.Helper()
		apptest.WriteFile(t, certFile, l.CertPEM)
		apptest.WriteFile(t, keyFile, l.KeyPEM)
	}
	replace(first)
	gw := startSMQGW(t, dir, `watch_interval = "1h"
`+apptest.Listener("edge", "files")+fmt.Sprintf(`[certs.files]
cert_file = %q
key_file = %q
`, certFile, keyFile))
	addr := gw.gw.Addr("edge").String()
	roots := &tls.Config{RootCAs: ca.Pool}
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	open, err := client.Dial(ctx, "wss://"+addr+"/", client.Options{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	replace(second)
	if !smqtest.ServedCert(t, addr, roots).Equal(first.Cert) {
		t.Fatal("the new files were loaded before SIGHUP (watch_interval is 1h)")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	smqtest.WaitServed(t, addr, roots, second.Cert)
	if !strings.Contains(gw.logs.String(), "SIGHUP: reloading") {
		t.Error("the reload is not logged")
	}
	// The session from before the reload still works.
	if _, err := open.Ping(ctx); err != nil {
		t.Fatalf("session opened before SIGHUP: %v", err)
	}
}

// TestSIGHUPReloadsConfiguration: a SIGHUP that changes the certificate
// files and adds a route leaves an open wss:// session and an open raw
// session running, and the new route and certificate serve at once; a
// change that needs a restart is named; a configuration that does not
// validate is rejected with each problem logged, and the running one keeps
// serving. Not parallel, as TestSIGHUPReloadsCertificates.
func TestSIGHUPReloadsConfiguration(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	first, second := ca.Server(t, "127.0.0.1"), ca.Server(t, "127.0.0.1")
	file := filepath.Join(dir, "smqgw.toml")
	conf := func(leaf *testpki.Leaf, lanAddr, extra string) string {
		return fmt.Sprintf(`watch_interval = "1h"
[admin]
address = "127.0.0.1:0"
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
%s
[[listener]]
name = "lan"
address = %q
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[certs.files]
cert_file = %q
key_file = %q
`, extra, lanAddr, leaf.CertFile, leaf.KeyFile)
	}
	gw := startSMQGW(t, dir, conf(first, "127.0.0.1:0", ""))
	edge := gw.gw.Addr("edge").String()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	opts := client.Options{RootCAs: ca.Pool}
	browser, err := client.Dial(ctx, "wss://"+edge+"/smq", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	device, err := client.Dial(ctx, "https://"+edge+"/smq", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()
	got := make(chan string, 4)
	if _, err := device.Subscribe(ctx, "cmd", func(m *client.Message) { got <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	relayed := func(payload string) {
		t.Helper()
		if err := browser.Publish(ctx, "cmd", []byte(payload)); err != nil {
			t.Fatalf("publish %q: %v", payload, err)
		}
		select {
		case p := <-got:
			if p != payload {
				t.Fatalf("device got %q, want %q", p, payload)
			}
		case <-ctx.Done():
			t.Fatalf("%q did not reach the device", payload)
		}
	}
	hup := func(want string, n int) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		smqtest.WaitUntil(t, "the reload's last log line", func() bool { return strings.Count(gw.logs.String(), want) >= n })
	}
	relayed("before")
	if _, err := client.Dial(ctx, "wss://"+edge+"/v2", opts); err == nil {
		t.Fatal("/v2 works before it is configured")
	}

	// The new file: the second certificate, route /v2, and the lan
	// listener moved (which needs a restart).
	apptest.WriteFile(t, file, []byte(conf(second, "127.0.0.1:1", `  [[listener.route]]
  path = "/v2"
  upstream = "embedded"`)))
	hup("configuration reloaded", 1)
	if !smqtest.ServedCert(t, edge, &tls.Config{RootCAs: ca.Pool}).Equal(second.Cert) {
		t.Error("new handshakes do not get the reloaded certificate")
	}
	v2, err := client.Dial(ctx, "wss://"+edge+"/v2", opts)
	if err != nil {
		t.Fatalf("the new route right after the reload: %v", err)
	}
	v2.Close()
	relayed("after") // both sessions from before the reload still relay
	logs := gw.logs.String()
	if !strings.Contains(logs, `msg="reload: this change needs a restart" change="listener \"lan\" address 127.0.0.1:1 (still 127.0.0.1:0)"`) {
		t.Errorf("the listener move is not reported:\n%s", logs)
	}

	// A file with two problems: both logged, nothing changes.
	apptest.WriteFile(t, file, []byte(conf(second, "127.0.0.1:0", `  [[listener.route]]
  path = "/v3"
  upstream = "nowhere"
  client_auth = "sometimes"`)))
	hup("reload rejected: the running configuration stays in force", 1)
	logs = gw.logs.String()
	for _, want := range []string{`:13:3: upstream in [[listener.route]]: no [upstream.nowhere] block`, `:14:3: client_auth in [[listener.route]]: invalid value \"sometimes\"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the rejected reload does not log %q:\n%s", want, logs)
		}
	}
	if _, err := client.Dial(ctx, "wss://"+edge+"/v3", opts); err == nil {
		t.Error("a route of the rejected file is served")
	}
	if v2, err := client.Dial(ctx, "wss://"+edge+"/v2", opts); err != nil {
		t.Errorf("after a rejected reload, the running configuration: %v", err)
	} else {
		v2.Close()
	}
	relayed("still")

	// The reloads are counted.
	resp, err := http.Get("http://" + gw.gw.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`smqgw_config_reloads_total{result="success"} 1`, `smqgw_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
