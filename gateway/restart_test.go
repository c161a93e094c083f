package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/upstream"
)

// expect waits for payload on each client's topic.
func expect(t *testing.T, payload string, clients ...*smqtest.RefClient) {
	t.Helper()
	for _, c := range clients {
		for got := ""; got != payload; {
			got = smqtest.Recv(t, c.Messages, fmt.Sprintf("%q at %v %s", payload, c.Kind, c.UID))
		}
	}
}

// TestPassingTroubleKeepsClientsRetrying is item 4: clients that reconnect
// as smq.js and the C client do (SMQ-WIRE §5) stay on their retry path
// through a crash and restart of the upstream broker and a restart of the
// gateway (a drain, then a new process on the same port): every passing
// condition ends their connection without an SMQ refusal. They are all
// connected again soon after each restart, and get their topic's messages
// again. On a route with RefuseTemporary (temporary_failures = "refuse")
// the same outage gets Connack 0x02, after which both stop for good.
func TestPassingTroubleKeepsClientsRetrying(t *testing.T) {
	t.Parallel()
	const retry = 500 * time.Millisecond
	up := apptest.StartRestartable(t)
	lan, err := upstream.New(upstream.Config{Name: "lan", URLs: []string{"http://" + up.Addr + "/smq"}})
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogSink()
	routes := []*gateway.Route{
		{Path: "/", Upstream: lan},
		{Path: "/refuse", Upstream: lan, RefuseTemporary: true},
	}
	startGW := func(ln net.Listener) *gateway.Gateway {
		gw, err := gateway.New(gateway.Config{Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			Limits:    limits.Limits{ConnectTimeout: 2 * time.Second, ShutdownGrace: 5 * time.Second},
			Listeners: []gateway.Listener{{Name: "lan", Listener: ln, Routes: routes}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		return gw
	}
	gw := startGW(smqtest.Listen(t))
	addr := gw.Addr("lan").String()
	defer func() { gw.Shutdown(context.Background()) }()

	clients := []*smqtest.RefClient{
		smqtest.StartRef(t, smqtest.SMQJS, "ws://"+addr+"/", "browser-1", "news", retry),
		smqtest.StartRef(t, smqtest.SMQJS, "ws://"+addr+"/", "browser-2", "news", retry),
		smqtest.StartRef(t, smqtest.CClient, addr+"/", "led-device-1", "news", retry),
		smqtest.StartRef(t, smqtest.CClient, addr+"/", "led-device-2", "news", retry),
	}
	smqtest.WaitSessions(t, smqtest.WaitFor, 1, clients...)
	up.Publish(t, "news", "before")
	expect(t, "before", clients...)

	// The broker crashes. While it is down the clients keep trying:
	// each try ends without a refusal.
	up.Kill()
	unavailable := func() int {
		n := 0
		for _, rec := range logs.records(t, "session") {
			if rec["reason"] == "upstream_unavailable" && rec["route"] == "/" {
				n++
			}
		}
		return n
	}
	smqtest.WaitUntil(t, "each client to try at least twice against the dead broker", func() bool {
		return unavailable() >= 2*len(clients)
	})
	// The same outage, told with Connack 0x02: both kinds stop for good.
	refused := []*smqtest.RefClient{
		smqtest.StartRef(t, smqtest.SMQJS, "ws://"+addr+"/refuse", "browser-refused", "news", retry),
		smqtest.StartRef(t, smqtest.CClient, addr+"/refuse", "led-device-refused", "news", retry),
	}
	for _, c := range refused {
		if err := smqtest.WaitStopped(t, smqtest.WaitFor, c); !strings.Contains(err.Error(), "Connack 0x02") {
			t.Errorf("%v on /refuse stopped with %v, want Connack 0x02", c.Kind, err)
		}
	}

	up.Start()
	took := smqtest.WaitSessions(t, smqtest.WaitFor, 2, clients...)
	t.Logf("all %d clients connected again %v after the broker came back (retry delay %v)", len(clients),
		took.Round(time.Millisecond), retry)
	if took > 5*time.Second {
		t.Errorf("reconnecting took %v", took)
	}
	up.Publish(t, "news", "after the broker restart")
	expect(t, "after the broker restart", clients...)
	// On the refusing route, with the broker back: Disconnect "shutdown"
	// at the drain below stops smq.js; the C client takes it as an error
	// and retries.
	refusedJS := smqtest.StartRef(t, smqtest.SMQJS, "ws://"+addr+"/refuse", "browser-told-shutdown", "news", retry)
	refusedC := smqtest.StartRef(t, smqtest.CClient, addr+"/refuse", "led-device-told-shutdown", "news", retry)
	smqtest.WaitSessions(t, smqtest.WaitFor, 1, refusedJS, refusedC)

	// The gateway restarts: it drains (every session ends without an SMQ
	// refusal), a new one listens on the same port.
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	gw = startGW(apptest.ListenAgain(t, addr))
	took = smqtest.WaitSessions(t, smqtest.WaitFor, 3, clients...)
	t.Logf("all %d clients connected again %v after the new gateway started", len(clients), took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("reconnecting took %v", took)
	}
	smqtest.WaitSessions(t, smqtest.WaitFor, 2, refusedC)
	if err := smqtest.WaitStopped(t, smqtest.WaitFor, refusedJS); !strings.Contains(err.Error(), `Disconnect "shutdown"`) {
		t.Errorf("smq.js on /refuse stopped with %v, want Disconnect \"shutdown\"", err)
	}
	up.Publish(t, "news", "after the gateway restart")
	expect(t, "after the gateway restart", append(clients, refusedC)...)
	for _, c := range clients {
		if _, _, stopped := c.State(); stopped != nil {
			t.Errorf("%v %s stopped: %v", c.Kind, c.UID, stopped)
		}
	}
}
