package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
)

// metrics is one scrape of the admin endpoint.
type metrics map[string]*dto.MetricFamily

// scrape reads /metrics from the gateway's admin endpoint over HTTP
// (started if need be) and parses the text format.
func scrape(t *testing.T, gw *gateway.Gateway) metrics {
	t.Helper()
	resp, body := adminGet(t, gw, "/metrics")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics: %s, Content-Type %q", resp.Status, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	return fams
}

// get returns the value of the series of family name whose labels include
// labels (name, value pairs): a counter's or gauge's value, a histogram's
// sample count. It fails the test when there is no such series.
func (m metrics) get(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, err := m.lookup(name, labels...)
	if err != nil {
		t.Error(err)
	}
	return v
}

// lookup is get without a test: it says what is missing.
func (m metrics) lookup(name string, labels ...string) (float64, error) {
	f := m[name]
	if f == nil {
		return 0, fmt.Errorf("metric family %s missing", name)
	}
	sum, found := 0.0, false
series:
	for _, s := range f.Metric {
		for i := 0; i < len(labels); i += 2 {
			if !slices.ContainsFunc(s.Label, func(l *dto.LabelPair) bool {
				return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}) {
				continue series
			}
		}
		found = true
		switch {
		case s.Counter != nil:
			sum += s.Counter.GetValue()
		case s.Gauge != nil:
			sum += s.Gauge.GetValue()
		case s.Histogram != nil:
			sum += float64(s.Histogram.GetSampleCount())
		}
	}
	if !found {
		return 0, fmt.Errorf("%s has no series with %q", name, labels)
	}
	return sum, nil
}

// waitMetric scrapes until the series reaches at least want, for a count
// made after the client saw its result (net/http reports a closed
// connection after closing it), and returns the last scrape.
func waitMetric(t *testing.T, gw *gateway.Gateway, want float64, name string, labels ...string) metrics {
	t.Helper()
	var m metrics
	smqtest.WaitUntil(t, fmt.Sprintf("%s%q to reach %v", name, labels, want), func() bool {
		m = scrape(t, gw)
		v, err := m.lookup(name, labels...)
		return err == nil && v >= want
	})
	return m
}

// TestMetricsScrape runs sessions that end every way the metrics tell
// apart, scrapes the admin endpoint, and checks each family and its
// values.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	dead, deadProxy := smqtest.DeadAddr(t), smqtest.DeadAddr(t)
	b := apptest.Start(t, dir, fmt.Sprintf(`
[limits]
message_rate = 5
[[listener]]
name = "edge"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  [[listener.route]]
  path = "/secure"
  upstream = "embedded"
  client_auth = "require"
  client_ca = [%q]
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  [[listener.route]]
  path = "/down"
  upstream = "dead"
  temporary_failures = "refuse"
  [[listener.route]]
  path = "/proxied"
  upstream = "proxied"
  temporary_failures = "refuse"
[upstream.dead]
urls = ["http://%s/smq"]
[upstream.proxied]
urls = ["http://192.0.2.1/smq"]
proxy = "socks5://%s"
`, ca.CertFile, dead, deadProxy)+apptest.CertFiles(server))
	edge, lan := b.GW.Addr("edge").String(), b.GW.Addr("lan").String()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()

	// A wss:// session that publishes to itself, open during the scrape.
	ws, err := client.Dial(ctx, "wss://"+edge+"/", client.Options{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	apptest.PubSub(t, ws, ws)
	// Raw over TLS without a certificate on a require route: 0x04.
	if _, err := client.Dial(ctx, "https://"+edge+"/secure", client.Options{RootCAs: ca.Pool}); !isRefused(err, smq.CodeCertRequired) {
		t.Fatalf("/secure without a certificate: %v", err)
	}
	// A raw session that goes over its message rate.
	raw := smqtest.Connect(t, lan, "metrics-raw")
	for range 6 {
		raw.Send(smq.Ping{})
	}
	disconnectAfterPongs(t, raw)
	raw.Close()
	// Upstreams that cannot be reached, directly and through a proxy.
	for _, path := range []string{"/down", "/proxied"} {
		if _, err := client.Dial(ctx, "http://"+lan+path, client.Options{}); !isRefused(err, smq.CodeServerUnavailable) {
			t.Fatalf("%s: %v", path, err)
		}
	}
	// Plain HTTP on the TLS port; a WebSocket from a foreign origin.
	c := smqtest.DialWith(t, edge)
	if resp := c.ReadHTTPResponse(); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: %s", resp.Status)
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+lan+"/", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", err, resp)
	}
	waitLogged(t, b, "msg=session ", 4) // every session but the open one has ended

	m := scrape(t, b.GW)
	check := func(what string, got float64, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("%s = %v", what, got)
		}
	}
	v := m.get(t, "smqgw_sessions_open", "listener", "edge", "route", "/", "transport", "websocket")
	check("open wss sessions", v, v == 1)
	v = m.get(t, "smqgw_sessions_open", "listener", "lan", "route", "/", "transport", "raw")
	check("open raw sessions on lan", v, v == 0)
	v = m.get(t, "smqgw_sessions_total", "listener", "lan", "transport", "raw")
	check("raw sessions on lan", v, v == 3)
	v = m.get(t, "smqgw_tls_handshakes_total", "listener", "edge")
	check("TLS handshakes", v, v == 2)
	v = m.get(t, "smqgw_tls_handshake_failures_total", "listener", "edge", "reason", "not_tls")
	check("plain HTTP on TLS", v, v == 1)
	v = m.get(t, "smqgw_connack_total", "code", "0x00", "decided_by", "upstream")
	check("accepted by the broker", v, v == 2)
	v = m.get(t, "smqgw_connack_total", "route", "/secure", "code", "0x04", "decided_by", "gateway")
	check("0x04 from the gateway", v, v == 1)
	v = m.get(t, "smqgw_connack_total", "listener", "lan", "code", "0x02", "decided_by", "gateway")
	check("0x02 from the gateway", v, v == 2)
	for reason, want := range map[string]float64{"refused": 1, "rate_limited": 1, "upstream_unavailable": 2} {
		v = m.get(t, "smqgw_sessions_closed_total", "reason", reason)
		check("sessions closed "+reason, v, v == want)
	}
	v = m.get(t, "smqgw_messages_total", "direction", "client_to_upstream", "type", "Publish")
	check("Publish from clients", v, v == 1)
	v = m.get(t, "smqgw_messages_total", "direction", "upstream_to_client", "type", "Publish")
	check("Publish to clients", v, v == 1)
	v = m.get(t, "smqgw_message_bytes_total", "direction", "client_to_upstream", "type", "Publish")
	check("Publish bytes from clients", v, v == float64(1+smq.PublishHeaderLen+len("hello")))
	v = m.get(t, "smqgw_messages_total", "direction", "client_to_upstream", "type", "Ping")
	check("Pings from clients", v, v == 5)
	v = m.get(t, "smqgw_upstream_dial_duration_seconds", "upstream", "dead", "url", "http://"+dead+"/smq")
	check("dials to the dead upstream", v, v == 1)
	v = m.get(t, "smqgw_upstream_dial_failures_total", "upstream", "dead")
	check("failed dials to the dead upstream", v, v == 1)
	v = m.get(t, "smqgw_proxy_dial_failures_total", "upstream", "proxied", "reason", "unreachable")
	check("proxy failures", v, v == 1)
	v = m.get(t, "smqgw_limit_refusals_total", "listener", "lan", "limit", "message_rate")
	check("message rate refusals", v, v == 1)
	v = m.get(t, "smqgw_limit_refusals_total", "listener", "lan", "limit", "max_sessions")
	check("listener session refusals", v, v == 0)
	v = m.get(t, "smqgw_websocket_origin_refusals_total", "listener", "lan", "route", "/")
	check("origin refusals", v, v == 1)
	v = m.get(t, "smqgw_certificate_expiry_timestamp_seconds", "set", "certs files", "subject", server.Cert.Subject.CommonName)
	check("certificate expiry", v, v == float64(server.Cert.NotAfter.Unix()))
	v = m.get(t, "smqgw_config_reloads_total", "result", "failure")
	check("reload failures", v, v == 0)
	v = m.get(t, "smqgw_config_last_reload_success_timestamp_seconds")
	check("last reload", v, time.Since(time.Unix(int64(v), 0)) < time.Hour)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if m[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

func isRefused(err error, code smq.ConnackCode) bool {
	var re *client.RefusedError
	return errors.As(err, &re) && re.Code == code
}

// TestLimitMetric: smqgw_limit carries the limits in force, defaults
// included, and follows a reload, so that alerts compare with the real
// max_sessions.
func TestLimitMetric(t *testing.T) {
	t.Parallel()
	cfg := gateway.Config{Limits: limits.Limits{MaxSessions: 123},
		Listeners: []gateway.Listener{{Name: "lan", Listener: smqtest.Listen(t), Routes: []*gateway.Route{{Path: "/", Upstream: &countingUpstream{}}}}}}
	gw := runGateway(t, cfg)
	m := scrape(t, gw)
	if v := m.get(t, "smqgw_limit", "limit", "max_sessions"); v != 123 {
		t.Errorf("max_sessions %v, want 123", v)
	}
	if v := m.get(t, "smqgw_limit", "limit", "max_pending_per_ip"); v != limits.DefaultMaxPendingPerIP {
		t.Errorf("max_pending_per_ip %v, want the default %v", v, limits.DefaultMaxPendingPerIP)
	}
	cfg.Limits.MaxSessions = 456
	cfg.Listeners[0].Addr, cfg.Listeners[0].Listener = gw.Addr("lan").String(), nil
	if _, err := gw.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if v := scrape(t, gw).get(t, "smqgw_limit", "limit", "max_sessions"); v != 456 {
		t.Errorf("max_sessions after a reload %v, want 456", v)
	}
}
