package apptest

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// Restartable is a broker on a fixed loopback address that a test can
// crash and start again, as an operator restarts the reference broker.
type Restartable struct {
	Addr   string // host:port, the same across restarts
	t      testing.TB
	b      *broker.Broker
	l      *smqtest.Killable
	served chan struct{}
}

// StartRestartable starts a broker on a free loopback port; it is killed
// when the test ends.
func StartRestartable(t testing.TB) *Restartable {
	t.Helper()
	r := &Restartable{t: t, Addr: "127.0.0.1:0"}
	r.Start()
	r.Addr = r.l.Addr().String()
	t.Cleanup(r.Kill)
	return r
}

// Start starts the broker (again) on Addr.
func (r *Restartable) Start() {
	r.t.Helper()
	l := ListenAgain(r.t, r.Addr)
	r.l, r.b, r.served = smqtest.Track(l), broker.New(broker.Config{}), make(chan struct{})
	go func() { defer close(r.served); r.b.Serve(r.l) }()
}

// Kill ends the broker as a crash or a restart does: every connection
// drops, no goodbye.
func (r *Restartable) Kill() {
	if r.b == nil {
		return
	}
	r.l.Kill()
	r.b.Shutdown(context.Background())
	<-r.served
	r.b = nil
}

// Publish publishes payload to topic straight on the broker.
func (r *Restartable) Publish(t testing.TB, topic, payload string) {
	t.Helper()
	p := smqtest.Connect(t, r.Addr, "publisher-"+strings.ReplaceAll(payload, " ", "-"))
	p.Publish(p.Create(topic), 0, []byte(payload))
	p.Barrier()
	p.Close()
}

// ListenAgain listens on addr, which a server of the test used before:
// for a while, should another socket of the machine have taken the port
// in between.
func ListenAgain(t testing.TB, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	smqtest.Retry(t, smqtest.WaitFor, "listening on "+addr, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l
}
