package app_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// metric returns the value of the metric name (the full name) with the
// given label (name=value, or "" for none), failing the test if there is
// none.
func metric(t *testing.T, b *apptest.Running, name, label string) float64 {
	t.Helper()
	fams, err := b.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			if label == "" || hasLabel(m, label) {
				if f.GetType() == dto.MetricType_COUNTER {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return 0
}

// brokerMetric returns the value of smqgw_broker_NAME{label}, as metric.
func brokerMetric(t *testing.T, b *apptest.Running, name, label string) float64 {
	t.Helper()
	return metric(t, b, "smqgw_broker_"+name, label)
}

func hasLabel(m *dto.Metric, label string) bool {
	name, value, _ := strings.Cut(label, "=")
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

const brokerListener = `
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
`

// TestBrokerMetricsAndLimits: the [broker] block bounds the embedded
// broker; its refusals and gauges are in the gateway's metrics; a reload
// puts new limits in force for the sessions already open.
func TestBrokerMetricsAndLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := func(maxName int) string {
		return brokerListener + fmt.Sprintf("[broker]\nmax_topic_name = %d\nmax_topics_per_session = 2\n", maxName)
	}
	b := apptest.Start(t, dir, conf(8))
	addr := b.GW.Addr("lan").String()
	c := smqtest.Connect(t, addr, "metered-client")

	c.Send(smq.Subscribe{Topic: "nine-long"})
	c.ExpectAck(smq.TypeSuback, smq.AckDenied, "nine-long")
	tid := c.Subscribe("eight-ln")
	c.Create("other")
	c.Send(smq.Createsub{Topic: "third"})
	c.ExpectAck(smq.TypeCreatesuback, smq.AckDenied, "third")
	c.Expect(c.Publish(tid, 0, []byte("carries on")))

	for _, m := range []struct {
		name, label string
		want        float64
	}{
		{"sessions", "", 1},
		{"topics", "", 2},
		{"subtopics", "", 0},
		{"subscriptions", "", 1},
		{"limit_refusals_total", "limit=max_topic_name", 1},
		{"limit_refusals_total", "limit=max_topics_per_session", 1},
		{"messages_published_total", "", 1},
		{"messages_delivered_total", "", 1},
		{"messages_dropped_total", "reason=unknown_id", 0},
		{"slow_consumer_disconnects_total", "limit=max_queued_bytes", 0},
		{"connects_total", "result=accepted", 1},
	} {
		if got := brokerMetric(t, b, m.name, m.label); got != m.want {
			t.Errorf("smqgw_broker_%s{%s} = %v, want %v", m.name, m.label, got, m.want)
		}
	}
	c.Publish(0x7e57_0001, 0, []byte("nowhere"))
	c.Barrier()
	if got := brokerMetric(t, b, "messages_dropped_total", "reason=unknown_id"); got != 1 {
		t.Errorf("dropped for an unknown ID: %v, want 1", got)
	}

	// Reloaded with longer names: in force for the open session too, and
	// the broker and its counts go on.
	apptest.WriteFile(t, filepath.Join(dir, "smqgw.toml"), []byte(conf(9)))
	b.Server.Reload()
	if !strings.Contains(b.Logs.String(), "configuration reloaded") {
		t.Fatalf("not reloaded:\n%s", b.Logs)
	}
	c.Send(smq.Unsubscribe{TID: tid})
	c.Send(smq.Subscribe{Topic: "nine-long"}) // still over max_topics_per_session
	c.ExpectAck(smq.TypeSuback, smq.AckDenied, "nine-long")
	fresh := smqtest.Connect(t, addr, "metered-fresh")
	fresh.Subscribe("nine-long")
	if got := brokerMetric(t, b, "limit_refusals_total", "limit=max_topics_per_session"); got != 2 {
		t.Errorf("refusals by max_topics_per_session: %v, want 2", got)
	}
	if got := brokerMetric(t, b, "limit_refusals_total", "limit=max_topic_name"); got != 1 {
		t.Errorf("refusals by max_topic_name: %v, want still 1", got)
	}
	if got := b.Server.Built().EmbeddedBroker().Limits().MaxTopicName; got != 9 {
		t.Errorf("the broker's max_topic_name is %d after the reload, want 9", got)
	}
}
