package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/smqgw/smqgw/client"
)

// deviceCmd is smq demo-device: a simulated LAN device. It publishes a
// temperature reading to a topic every interval, and obeys the commands
// sent to its ETID ("on", "off", "status", or JSON {"cmd": ...}),
// answering the sender with its state.
type deviceCmd struct {
	*common
	topic    string
	name     string
	interval time.Duration
	count    int
}

func (d *deviceCmd) register(fs *flag.FlagSet) {
	fs.StringVar(&d.topic, "topic", "demo/temperature", "`topic` the readings go to")
	fs.StringVar(&d.name, "name", "demo-device", "the device's `name` in its messages")
	fs.DurationVar(&d.interval, "interval", time.Second, "`time` between readings")
	fs.IntVar(&d.count, "count", 0, "stop after `N` readings (0: run until interrupted)")
}

// deviceState is what the device reports: in each reading, and in answer
// to a command.
type deviceState struct {
	Device  string  `json:"device"`
	State   string  `json:"state"` // "on" or "off"
	Celsius float64 `json:"celsius"`
	Seq     int     `json:"seq,omitempty"`
	Error   string  `json:"error,omitempty"`
}

func (d *deviceCmd) run(ctx context.Context, _ io.Reader, stdout, stderr io.Writer) error {
	if d.interval <= 0 || d.count < 0 {
		return usagef("-interval must be positive and -count not negative")
	}
	if d.topic == "" {
		return usagef("demo-device needs a -topic")
	}
	opts, err := d.options()
	if err != nil {
		return err
	}
	if opts.UID == "" {
		opts.UID = fmt.Sprintf("%s-%08x", d.name, rand.Uint32())
	}
	c, err := d.dial(ctx, opts)
	if err != nil {
		return ignoreInterrupt(err)
	}
	defer c.Close()
	var mu sync.Mutex
	state := deviceState{Device: d.name, State: "on", Celsius: 21}
	octx, cancel := d.opctx(ctx)
	_, err = c.Subscribe(octx, client.Self, func(m *client.Message) {
		cmd := strings.TrimSpace(string(m.Payload))
		var js struct{ Cmd string }
		if json.Unmarshal(m.Payload, &js) == nil && js.Cmd != "" {
			cmd = js.Cmd
		}
		mu.Lock()
		reply := state
		switch strings.ToLower(cmd) {
		case "on", "off":
			state.State = strings.ToLower(cmd)
			reply = state
		case "status":
		default:
			reply.Error = fmt.Sprintf("unknown command %q: send on, off or status", cmd)
		}
		mu.Unlock()
		fmt.Fprintf(stdout, "command %q from etid %s: state %s\n", cmd, etid(m.PTID), reply.State)
		body, _ := json.Marshal(reply)
		rctx, rcancel := d.opctx(ctx)
		defer rcancel()
		if err := c.PublishTo(rctx, m.PTID, body); err != nil {
			fmt.Fprintf(stderr, "smq: answering etid %s: %v\n", etid(m.PTID), err)
		}
	})
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: etid %s, publishing to %q every %v; send on, off or status to its etid\n",
		d.name, etid(c.ETID()), d.topic, d.interval)
	t := time.NewTicker(d.interval)
	defer t.Stop()
	start := time.Now()
	for n := 1; d.count == 0 || n <= d.count; n++ {
		mu.Lock()
		// A slow sine around 21 °C, flat while off.
		if state.State == "on" {
			state.Celsius = math.Round((21+2*math.Sin(time.Since(start).Seconds()/30))*10) / 10
		}
		state.Seq = n
		reading := state
		mu.Unlock()
		body, _ := json.Marshal(reading)
		pctx, pcancel := d.opctx(ctx)
		err := c.Publish(pctx, d.topic, body)
		pcancel()
		if err != nil {
			return ignoreInterrupt(err)
		}
		if d.count != 0 && n == d.count {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return c.Err()
		case <-t.C:
		}
	}
	return nil
}
