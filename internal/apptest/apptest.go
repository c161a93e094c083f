// Package apptest starts a whole smqgw for tests from an inline TOML
// configuration: config.Parse, app.Build, gateway.New and Start, with the
// certificate upkeep (app.Built.Run) going until the test ends.
package apptest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/app"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// Running is a gateway built from TOML, serving.
type Running struct {
	*app.Built
	GW   *gateway.Gateway
	Logs *smqtest.SyncBuffer // the gateway's log, printed when the test fails
}

// Start parses src as the config file dir/smqgw.toml, builds and starts
// it, and runs its certificate upkeep until the test ends; then it shuts
// the gateway and its embedded broker down.
func Start(t testing.TB, dir, src string) *Running {
	t.Helper()
	cfg, err := config.Parse([]byte(src), filepath.Join(dir, "smqgw.toml"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &smqtest.SyncBuffer{}
	b, err := app.Build(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		sctx, scancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer scancel()
		gw.Shutdown(sctx)
		if br := b.EmbeddedBroker(); br != nil {
			br.Shutdown(sctx)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs)
		}
	})
	return &Running{Built: b, GW: gw, Logs: logs}
}

// CertFiles is the [certs.files] block serving leaf's files.
func CertFiles(leaf *testpki.Leaf) string {
	return fmt.Sprintf("[certs.files]\ncert_file = %q\nkey_file = %q\n", leaf.CertFile, leaf.KeyFile)
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
