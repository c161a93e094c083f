// Package apptest starts the servers of end-to-end tests: a whole smqgw
// from an inline TOML configuration (app.Start, as the smqgw command runs
// it, with its certificate upkeep going until the test ends), a bare broker
// on a listener, and small TOML builders for the blocks that every such
// configuration repeats.
package apptest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/app"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// Running is a gateway built from TOML, serving.
type Running struct {
	*app.Built                     // the parts built at start
	Server     *app.Server         // Reload puts dir/smqgw.toml in force, as SIGHUP does
	GW         *gateway.Gateway    // Server.Gateway()
	Logs       *smqtest.SyncBuffer // the gateway's log, printed when the test fails
	stop       func()
}

// Start writes src to dir/smqgw.toml, parses it, and serves it with
// app.Start: the listeners, the admin endpoint if configured, and the
// certificate upkeep. The log level is the configuration's. When the test
// ends (or at Stop) the server drains for its shutdown_grace and stops,
// embedded broker included.
func Start(t testing.TB, dir, src string) *Running {
	t.Helper()
	file := filepath.Join(dir, "smqgw.toml")
	WriteFile(t, file, []byte(src))
	cfg, err := config.Parse([]byte(src), file)
	if err != nil {
		t.Fatal(err)
	}
	logs := &smqtest.SyncBuffer{}
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	srv, err := app.Start(cfg, file, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})), level)
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, logs)
	}
	r := &Running{Built: srv.Built(), Server: srv, GW: srv.Gateway(), Logs: logs}
	var once sync.Once
	r.stop = func() { once.Do(srv.Shutdown) }
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs)
		}
	})
	return r
}

// Stop shuts the gateway down as the end of the test would, for a test
// that starts another on the same state directory. It may be called more
// than once.
func (r *Running) Stop() { r.stop() }

// Listener is a [[listener]] block named name on a free loopback port with
// one route, "/", to the embedded broker; tls names its [certs.NAME] block,
// "" for plaintext. Listeners whose routes matter to a test spell their
// blocks out.
func Listener(name, tls string) string {
	s := fmt.Sprintf("[[listener]]\nname = %q\naddress = \"127.0.0.1:0\"\n", name)
	if tls != "" {
		s += fmt.Sprintf("tls = %q\n", tls)
	}
	return s + "  [[listener.route]]\n  path = \"/\"\n  upstream = \"embedded\"\n"
}

// CertFiles is the [certs.files] block serving leaf's files.
func CertFiles(leaf *testpki.Leaf) string {
	return fmt.Sprintf("[certs.files]\ncert_file = %q\nkey_file = %q\n", leaf.CertFile, leaf.KeyFile)
}

// WriteFile replaces the file name with data by writing a temporary file
// and renaming it over name, as certificate tools and editors do: a reader
// sees the old file or the new one, never half of one.
func WriteFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(name+".new", name); err != nil {
		t.Fatal(err)
	}
}

// Broker serves a broker with cfg on l (smqtest.Listen for a loopback
// port; a TLS listener for a broker with TLS) until the test ends, then
// shuts it down and waits for Serve to return.
func Broker(t testing.TB, cfg broker.Config, l net.Listener) *broker.Broker {
	t.Helper()
	b := broker.New(cfg)
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("broker Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, broker.ErrClosed) {
			t.Errorf("broker Serve returned %v, want broker.ErrClosed", err)
		}
	})
	return b
}

var topicSeq atomic.Int64

// PubSub subscribes sub to a fresh topic, publishes from pub, and waits
// for the message to arrive, once.
func PubSub(t testing.TB, sub, pub *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	topic := fmt.Sprintf("t-%s-%d", t.Name(), topicSeq.Add(1))
	got := make(chan string, 1)
	if _, err := sub.Subscribe(ctx, topic, func(m *client.Message) {
		select {
		case got <- string(m.Payload):
		default: // a duplicate fails the test below, not the dispatcher
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, topic, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "hello" {
			t.Fatalf("received %q", m)
		}
	case <-ctx.Done():
		t.Fatal("no message")
	}
}
