package gateway_test

import (
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// TestPerAddressAndMessageLimits: each limit refuses as documented and the
// log names it.
func TestPerAddressAndMessageLimits(t *testing.T) {
	b := startBuilt(t, t.TempDir(), `
[limits]
max_sessions_per_ip = 2
session_rate_per_ip = 1   # burst 2
message_rate = 5
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
`)
	addr := b.gw.Addr("lan").String()
	refused := func(c *smqtest.Conn, want string) {
		t.Helper()
		c.Send(smq.Connect{Version: 1, UID: "limited-client"})
		ack := c.ExpectConnack(smq.CodeServerUnavailable)
		if ack.Reason != want {
			t.Errorf("Connack 0x02 %q, want %q", ack.Reason, want)
		}
	}

	// Two open sessions from 127.0.0.1; the third is refused.
	one := smqtest.Connect(t, addr, "limited-one")
	two := smqtest.Connect(t, addr, "limited-two")
	refused(smqtest.Dial(t, addr), "server busy: too many sessions from your address")
	// Closing one frees its slot, but the burst of 2 starts is spent.
	two.Close()
	waitLogged(t, b, "reason=client_closed", 1)
	refused(smqtest.Dial(t, addr), "server busy: sessions from your address start too fast")

	// message_rate: the sixth message within a second ends the session.
	for range 6 {
		one.Send(smq.Ping{})
	}
	var got []smq.Type
	for {
		f, err := one.ReadFrame(waitFor)
		if err != nil {
			break
		}
		got = append(got, smq.Type(f.Msg[0]))
		if smq.Type(f.Msg[0]) == smq.TypeDisconnect {
			m, _ := smq.Decode(f.Msg)
			if d, ok := m.(smq.Disconnect); !ok || d.Reason != "rate limit exceeded" {
				t.Errorf("Disconnect %#v, want \"rate limit exceeded\"", m)
			}
			break
		}
	}
	if len(got) == 0 || got[len(got)-1] != smq.TypeDisconnect {
		t.Fatalf("the client got %v, want Pongs then Disconnect", got)
	}
	waitLogged(t, b, `reason=rate_limited`, 1)
	if logs := b.logs.String(); !strings.Contains(logs, `detail="more than 5 messages per second"`) ||
		!strings.Contains(logs, `msg="session refused: per-address limit"`) {
		t.Errorf("limits not logged:\n%s", logs)
	}
}

// waitLogged waits until the gateway's log holds want at least n times.
func waitLogged(t *testing.T, b *built, want string, n int) {
	t.Helper()
	smqtest.WaitUntil(t, "a log line with "+want, func() bool { return strings.Count(b.logs.String(), want) >= n })
}
