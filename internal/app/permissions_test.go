package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// TestPermissionsFromConfig: [[permissions.NAME]] rules named by a route
// hold its sessions (here anonymous ones, on a plain listener); a reload
// with other rules holds the sessions that start after it.
func TestPermissionsFromConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := func(topic string) string {
		return `
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  permissions = "public"
[[permissions.public]]
anonymous = true
subscribe = ["` + topic + `/#"]
publish = ["` + topic + `/#"]
`
	}
	b := apptest.Start(t, dir, conf("news"))
	url := "http://" + b.GW.Addr("lan").String() + "/"
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	dial := func() *client.Client {
		t.Helper()
		c, err := client.Dial(ctx, url, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := dial()
	if _, err := first.Subscribe(ctx, "news/today", func(*client.Message) {}); err != nil {
		t.Fatalf("granted Subscribe: %v", err)
	}
	if _, err := first.Subscribe(ctx, "sports/today", func(*client.Message) {}); !errors.Is(err, client.ErrDenied) {
		t.Fatalf("Subscribe outside the rules: %v, want ErrDenied", err)
	}

	apptest.WriteFile(t, dir+"/smqgw.toml", []byte(conf("sports")))
	b.Server.Reload() // synchronous: in force for the next session
	if strings.Contains(b.Logs.String(), "reload rejected") {
		t.Fatalf("reload rejected:\n%s", b.Logs)
	}
	second := dial()
	if _, err := second.Subscribe(ctx, "sports/today", func(*client.Message) {}); err != nil {
		t.Fatalf("Subscribe granted by the reloaded rules: %v", err)
	}
	if _, err := second.Subscribe(ctx, "news/today", func(*client.Message) {}); !errors.Is(err, client.ErrDenied) {
		t.Fatalf("Subscribe the reloaded rules no longer grant: %v, want ErrDenied", err)
	}
	// The session from before the reload keeps its grants.
	if _, err := first.Subscribe(ctx, "news/tomorrow", func(*client.Message) {}); err != nil {
		t.Fatalf("the older session's Subscribe: %v", err)
	}
}
