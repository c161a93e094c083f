package config_test

import (
	"strings"
	"testing"

	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/limits"
)

// TestBrokerBlock: [broker] takes its defaults from package limits, takes
// explicit values, and reports bad ones at their line.
func TestBrokerBlock(t *testing.T) {
	t.Parallel()
	_, name := testDir(t)
	c, err := config.Parse([]byte(withListener()), name)
	if err != nil {
		t.Fatal(err)
	}
	def := limits.Broker{MaxTopicName: 1024, MaxTopicsPerSession: 1000, QueueBytes: 4 << 20,
		QueueMessages: 8192, MaxQueuedBytes: 256 << 20}
	if c.Broker != def {
		t.Errorf("Broker = %+v, want the defaults %+v", c.Broker, def)
	}
	if d := config.Default(); d.Broker != def {
		t.Errorf("Default().Broker = %+v, want %+v", d.Broker, def)
	}

	c, err = config.Parse([]byte(withListener(
		`[broker]`,
		`max_topic_name = 200`,
		`max_topics_per_session = 50`,
		`queue_bytes = 1048576`,
		`queue_messages = 1000`,
		`max_queued_bytes = 67108864`,
	)), name)
	if err != nil {
		t.Fatal(err)
	}
	want := limits.Broker{MaxTopicName: 200, MaxTopicsPerSession: 50, QueueBytes: 1 << 20,
		QueueMessages: 1000, MaxQueuedBytes: 64 << 20}
	if c.Broker != want {
		t.Errorf("Broker = %+v, want %+v", c.Broker, want)
	}
}

func TestBrokerProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"unknown key", withListener(`[broker]`, `max_topic_names = 10`),
			[]want{{8, `unknown key "max_topic_names" in [broker] (did you mean "max_topic_name"?)`}}},
		{"zero", withListener(`[broker]`, `max_topics_per_session = 0`),
			[]want{{8, `max_topics_per_session in [broker]: must be between 1 and 2147483647, got 0`}}},
		{"negative", withListener(`[broker]`, `queue_messages = -5`),
			[]want{{8, `queue_messages in [broker]: must be between 1 and 2147483647, got -5`}}},
		{"not an integer", withListener(`[broker]`, `max_queued_bytes = "256MiB"`),
			[]want{{8, `max_queued_bytes in [broker]: want an integer, got string "256MiB"`}}},
		{"topic name too long", withListener(`[broker]`, `max_topic_name = 65528`),
			[]want{{8, `max_topic_name in [broker]: 65528 is larger than 65527, the longest name whose Suback fits an SMQ frame`}}},
		{"queue too small", withListener(`[broker]`, `queue_bytes = 65534`),
			[]want{{8, `queue_bytes in [broker]: 65534 is smaller than 65535, the largest SMQ message`}}},
		{"budget below a queue", withListener(`[broker]`, `queue_bytes = 1048576`, `max_queued_bytes = 1048575`),
			[]want{{9, `max_queued_bytes in [broker]: max_queued_bytes (1048575) is smaller than queue_bytes (1048576)`}}},
		{"queue above the default budget", withListener(`[broker]`, `queue_bytes = 536870912`),
			[]want{{8, `queue_bytes in [broker]: max_queued_bytes (268435456) is smaller than queue_bytes (536870912)`}}},
		{"not a table", lines(append([]string{`broker = 5`}, listener...)...),
			[]want{{1, `broker: want a table, got integer 5`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, name := testDir(t)
			_, err := config.Parse([]byte(tt.src), name)
			if err == nil {
				t.Fatalf("Parse succeeded, want %d problems", len(tt.want))
			}
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if p := got[i]; p.Line != w.line || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = line %d %q\nwant line %d containing %q", i, p.Line, p.Msg, w.line, w.msg)
				}
			}
		})
	}
}
