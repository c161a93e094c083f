package gateway_test

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/app"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// lanBroker serves a broker on a loopback port and returns it and the
// port's address.
func lanBroker(t *testing.T) (*broker.Broker, string) {
	t.Helper()
	l := smqtest.Listen(t)
	return apptest.Broker(t, broker.Config{}, l), l.Addr().String()
}

// TestApply: a new configuration changes limits, upstream URLs and origin
// allow-lists for new sessions while an established session keeps what it
// started with; listeners added or removed are reported, not applied; an
// invalid configuration changes nothing.
func TestApply(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	brokerA, addrA := lanBroker(t)
	brokerB, addrB := lanBroker(t)
	conf := func(rate int, brokerAddr, origins, second string) string {
		return fmt.Sprintf(`
[limits]
message_rate = %d
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "lan"
  allowed_origins = [%s]
[[listener]]
name = %q
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
[upstream.lan]
urls = ["http://%s/smq"]
`, rate, origins, second, brokerAddr)
	}
	b := apptest.Start(t, dir, conf(1000, addrA, "", "side"))
	lan := b.GW.Addr("lan").String()
	old := smqtest.Connect(t, lan, "before-apply")
	if s := brokerA.Stats(); s.Accepted != 1 {
		t.Fatalf("broker A accepted %d", s.Accepted)
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+lan+"/", http.Header{"Origin": {"https://app.example"}})
	if err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a foreign origin before the change: %v", err)
	}

	apply := func(src string) ([]string, error) {
		t.Helper()
		cfg, err := config.Parse([]byte(src), filepath.Join(dir, "smqgw.toml"))
		if err != nil {
			t.Fatal(err)
		}
		next, err := b.Rebuild(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b.GW.Apply(next.Config)
	}
	restart, err := apply(conf(3, addrB, `"https://app.example"`, "extra"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`listener "extra" is new: it opens on restart`,
		`listener "side" was removed: it serves as before until restart`} {
		if !slices.Contains(restart, want) {
			t.Errorf("restart list %q lacks %q", restart, want)
		}
	}

	// The session from before keeps its message rate of 1000.
	for range 5 {
		old.Send(smq.Ping{})
	}
	for range 5 {
		old.ExpectType(smq.TypePong)
	}
	// A new session goes to broker B, and gets the rate of 3.
	fresh := smqtest.Connect(t, lan, "after-apply")
	if a, b := brokerA.Stats().Accepted, brokerB.Stats().Accepted; a != 1 || b != 1 {
		t.Errorf("accepted by A %d, by B %d: want the new session on B", a, b)
	}
	for range 4 {
		fresh.Send(smq.Ping{})
	}
	if d := disconnectAfterPongs(t, fresh); d.Reason != "rate limit exceeded" {
		t.Errorf("new session over the new rate: %q", d.Reason)
	}
	// The origin is allowed now.
	ws, _ := smqtest.OpenWS(t, "ws://"+lan+"/", http.Header{"Origin": {"https://app.example"}})
	ws.ReadInit()
	// The removed listener still serves.
	smqtest.Connect(t, b.GW.Addr("side").String(), "side-session")

	// A configuration the gateway cannot take changes nothing.
	if _, err := b.GW.Apply(gateway.Config{}); err == nil {
		t.Fatal("an empty configuration was applied")
	}
	again := smqtest.Connect(t, lan, "again-apply")
	if brokerB.Stats().Accepted != 2 {
		t.Error("after a rejected Apply, new sessions do not go where the last good one says")
	}
	again.Close()
}

// TestRebuildKeepsBroker: a configuration that stops using the embedded
// broker keeps it for its sessions, and a later one that uses it again
// gets the same broker, not a second one.
func TestRebuildKeepsBroker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, lanAddr := lanBroker(t)
	conf := func(up string) *config.Config {
		cfg, err := config.Parse([]byte(fmt.Sprintf(`
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = %q
[upstream.lan]
urls = ["http://%s/smq"]
`, up, lanAddr)), filepath.Join(dir, "smqgw.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	first, err := app.Build(conf("embedded"), nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := first.Rebuild(conf("lan"))
	if err != nil {
		t.Fatal(err)
	}
	third, err := second.Rebuild(conf("embedded"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Broker == nil || second.Broker != nil || second.EmbeddedBroker() != first.Broker ||
		third.Broker != first.Broker || third.Metrics != first.Metrics {
		t.Errorf("brokers %p, %p (kept %p), %p", first.Broker, second.Broker, second.EmbeddedBroker(), third.Broker)
	}
}

// TestPlainListenerOrigins: without allowed_origins, a plain listener
// takes WebSocket upgrades only from its own origins — http, its port, an
// address it listens on or localhost — whatever the Host header says: a
// DNS-rebinding page (Origin and Host evil.example, resolved to the
// gateway) is refused.
func TestPlainListenerOrigins(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, t.TempDir(), apptest.Listener("lan", ""))
	addr := b.GW.Addr("lan").String()
	_, port, _ := net.SplitHostPort(addr)
	for _, tc := range []struct {
		origin, host string
		status       int
	}{
		{"http://127.0.0.1:" + port, "", http.StatusSwitchingProtocols},
		{"http://localhost:" + port, "localhost:" + port, http.StatusSwitchingProtocols},
		{"http://evil.example:" + port, "evil.example:" + port, http.StatusForbidden},
		{"https://127.0.0.1:" + port, "", http.StatusForbidden},
		{"http://127.0.0.1:1", "", http.StatusForbidden},
		{"http://127.0.0.2:" + port, "127.0.0.2:" + port, http.StatusForbidden}, // not the listener's address
	} {
		h := http.Header{"Origin": {tc.origin}}
		if tc.host != "" {
			h.Set("Host", tc.host)
		}
		conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", h)
		if conn != nil {
			conn.Close()
		}
		if resp == nil {
			t.Fatalf("%s: %v", tc.origin, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("Origin %s, Host %q: status %d, want %d", tc.origin, tc.host, resp.StatusCode, tc.status)
		}
	}
}
