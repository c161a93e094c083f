package broker_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// TestMain checks that no test leaves a goroutine behind: every session,
// server and writer must have ended once the brokers are shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testBroker is a broker serving HTTP (raw bootstrap and WebSocket) on a
// loopback port.
type testBroker struct {
	*broker.Broker
	Addr   string
	served chan error // Serve's result
}

// startBroker starts a broker with cfg on 127.0.0.1:0. The listener is bound
// before startBroker returns, so clients may dial at once. The broker is shut
// down when the test ends, after the test's own connections are closed.
func startBroker(t *testing.T, cfg broker.Config) *testBroker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startBrokerOn(t, cfg, l)
}

// startBrokerOn starts a broker with cfg serving on l.
func startBrokerOn(t *testing.T, cfg broker.Config, l net.Listener) *testBroker {
	t.Helper()
	tb := &testBroker{Broker: broker.New(cfg), Addr: l.Addr().String(), served: make(chan error, 1)}
	go func() { tb.served <- tb.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tb.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-tb.served; !errors.Is(err, broker.ErrClosed) && !errors.Is(err, net.ErrClosed) { // closed: killed
			t.Errorf("Serve returned %v, want broker.ErrClosed", err)
		}
		l.Close() // in case Shutdown won the race with Serve
	})
	return tb
}

// serveConnPair serves the accepted end of a loopback socket pair with
// ServeConn and returns ServeConn's result channel and the dialled end.
func serveConnPair(t *testing.T, b *broker.Broker, peer broker.Peer) (<-chan struct{}, *smqtest.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	peer.RemoteAddr = server.RemoteAddr().String()
	return serveConn(t, b, server, peer), smqtest.New(t, client)
}

// serveConnPipe serves one end of a net.Pipe with ServeConn.
func serveConnPipe(t *testing.T, b *broker.Broker, peer broker.Peer) (<-chan struct{}, *smqtest.Conn) {
	t.Helper()
	client, server := net.Pipe()
	return serveConn(t, b, server, peer), smqtest.New(t, client)
}

// serveConn runs ServeConn on its own goroutine; the returned channel is
// closed when it returns.
func serveConn(t *testing.T, b *broker.Broker, server net.Conn, peer broker.Peer) <-chan struct{} {
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := b.ServeConn(server, peer); err != nil {
			t.Logf("ServeConn: %v", err)
		}
	}()
	t.Cleanup(func() {
		server.Close()
		<-served
	})
	return served
}

// closedPipe returns a connection whose peer is already gone.
func closedPipe() net.Conn {
	a, b := net.Pipe()
	b.Close()
	return a
}

func dialQuick(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
