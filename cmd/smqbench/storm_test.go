package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
		stop bool
	}{
		{"nil", nil, "none", false},
		{"connack", fmt.Errorf("x: %w", &client.RefusedError{Code: smq.CodeServerUnavailable, Reason: "busy"}), "Connack 0x02 server unavailable", true},
		{"disconnect", &client.DisconnectError{Reason: "shutdown"}, `Disconnect "shutdown"`, true},
		{"ws close", fmt.Errorf("client: waiting for Init: %w", &websocket.CloseError{Code: 1013, Text: "server busy"}), `WebSocket close 1013 "server busy"`, false},
		{"http status", &smqdial.Error{Kind: smqdial.Upgrade, Stage: smqdial.StageUpgrade, Status: "502 Bad Gateway"}, "HTTP 502 Bad Gateway", false},
		{"tcp refused", &smqdial.Error{Kind: smqdial.Connect, Stage: smqdial.StageConnect,
			Err: &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}, "connect: TCP refused", false},
		{"tls eof", &smqdial.Error{Kind: smqdial.TLS, Stage: smqdial.StageTLS, Err: io.EOF}, "tls handshake: EOF", false},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), "TCP reset", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Errorf("classify = %q, want %q", got, tc.want)
			}
			if got := stopsJS(tc.err); got != tc.stop {
				t.Errorf("stopsJS = %v, want %v", got, tc.stop)
			}
		})
	}
}

func TestRateFloorAndMedian(t *testing.T) {
	t.Parallel()
	for per, want := range map[int]time.Duration{1: 0, 100: 0, 150: time.Second, 500: 8 * time.Second} {
		if got := rateFloor(per); got != want {
			t.Errorf("rateFloor(%d) = %v, want %v", per, got, want)
		}
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v, want 2", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
	if m := median(nil); m != 0 {
		t.Errorf("median(nil) = %v", m)
	}
}

// TestStormReport: a made-up report prints its tables and targets, met
// and NOT met, and survives a JSON round trip with every repetition.
func TestStormReport(t *testing.T) {
	t.Parallel()
	r := &stormReport{TLSVersion: "TLS 1.3", Curve: "X25519"}
	for rep := 1; rep <= 3; rep++ {
		for _, server := range []string{"smqgw", "nginx"} {
			rate := 1000.0
			if server == "nginx" {
				rate = 900
			}
			r.Handshakes = append(r.Handshakes,
				hsRun{Server: server, Cert: "ecdsa-p256", Mode: "full", Rep: rep, Rate: rate + float64(rep), Handshakes: 3000, CPUPerHS: 400},
				hsRun{Server: server, Cert: "rsa-2048", Mode: "full", Rep: rep, Rate: 2000 - rate, Handshakes: 3000, CPUPerHS: 900})
		}
	}
	r.Tickets = []ticketCheck{{Server: "smqgw", Event: "reload (SIGHUP)", Expect: true, Resumed: true}}
	run := func(setup, event string, rep int, all time.Duration, lost int64) stormRun {
		return stormRun{Setup: setup, Event: event, Rep: rep, Sessions: 5000, Addresses: 50, AllBack: true, Back: 5000,
			FromSignal: all, Down: 200 * time.Millisecond, FromListening: all - 200*time.Millisecond, P50: all / 2, P90: all * 9 / 10,
			Attempts: 5100, FailedAttempts: map[string]int64{"connect: TCP refused": 100}, Ended: map[string]int64{`WebSocket close 1001 "shutdown"`: 5000},
			TLSHandshakes: 5000, TLSResumed: 5000, Published: true, Received: 5000 - lost, Lost: lost}
	}
	for rep := 1; rep <= 3; rep++ {
		r.Storms = append(r.Storms,
			run("smqgw, default limits", "gateway restart (SIGTERM, start again)", rep, 3*time.Second, 0),
			run("smqgw, limits raised", "gateway restart (SIGTERM, start again)", rep, 2*time.Second, 0),
			run("smqgw, default limits", "broker restart (SIGTERM, start again)", rep, 2*time.Second, int64(rep-1)),
			run("nginx", "nginx restart (SIGTERM, start again)", rep, time.Second, 0))
	}
	var b bytes.Buffer
	s := &suite{goals: r.report(&b)}
	reportGoals(s, &b)
	out := b.String()
	for _, want := range []string{
		"| ecdsa-p256 | full | 1002 (400 µs) | 902 (400 µs) | 1.11 |",
		"| handshakes/s ecdsa-p256 full, smqgw ≥ nginx | 1002 vs 902/s (1.11; server CPU per handshake 400 vs 400 µs) | met |",
		"| handshakes/s rsa-2048 full, smqgw ≥ nginx | 1000 vs 1100/s (0.91; server CPU per handshake 900 vs 900 µs) | NOT met |",
		"| smqgw, default limits | gateway restart (SIGTERM, start again) | 100 | 3/3 | 3.00 s (3.00, 3.00, 3.00) |",
		"| smqgw, default limits: gateway restart (SIGTERM, start again): every session back within what the limits allow, none lost, no refusal smq.js takes as final | all back 3.00 s",
		"(nginx, nginx restart (SIGTERM, start again): 1.00 s) | met |",
		"broker restart (SIGTERM, start again): every session back within what the limits allow, none lost, no refusal smq.js takes as final | all back 2.00 s after the signal (each: 2.00, 2.00, 2.00), lost 3",
		`connect: TCP refused ×300`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "lost 3, smq.js would stop 0") || strings.Count(out, "NOT met") != 2 {
		t.Errorf("want the broker restart with lost messages and rsa NOT met, got:\n%s", out)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back stormReport
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Storms) != 12 || len(back.Handshakes) != 12 || back.Storms[2].Lost != 0 || back.Storms[6].Lost != 1 ||
		back.Storms[0].FromSignal != 3*time.Second || back.Storms[0].P50 != 1500*time.Millisecond {
		t.Errorf("JSON round trip: %d storms, %d handshake runs, %+v", len(back.Storms), len(back.Handshakes), back.Storms[0])
	}
}
