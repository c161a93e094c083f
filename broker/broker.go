// Package broker is an embedded SMQ broker that behaves on the wire like the
// reference broker of Barracuda App Server / Mako Server, minus its bugs:
// Unobserve works, and a message too large for a raw subscriber is dropped for
// that subscriber instead of being sent with a wrapped length.
//
// One Broker serves raw SMQ (both bootstrap forms) and WebSocket on one
// http.Handler, and accepts already-bootstrapped connections with ServeConn,
// which is how the gateway reaches it in-process.
package broker

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Serve and ServeConn after Shutdown.
var ErrClosed = errors.New("broker: closed")

// Stats are the broker's counters since New.
type Stats struct {
	Sessions        int64  // open sessions (connected or not yet)
	Accepted        uint64 // Connack 0x00 sent
	Refused         uint64 // refusing Connack sent
	Published       uint64 // Publish messages accepted for delivery
	Delivered       uint64 // messages queued to subscribers
	DroppedTooBig   uint64 // deliveries dropped: too big for a raw subscriber
	SlowDisconnects uint64 // subscribers disconnected for overflowing their queue
	ProtocolErrors  uint64 // sessions closed for malformed input
	Takeovers       uint64 // sessions kicked by a newer one with the same UID
}

type counters struct {
	sessions                                               atomic.Int64
	accepted, refused, published, delivered, droppedTooBig atomic.Uint64
	slowDisconnects, protocolErrors, takeovers             atomic.Uint64
}

// Broker is an SMQ broker. Create it with New.
type Broker struct {
	cfg Config
	st  counters

	mu       sync.Mutex
	closed   bool
	servers  map[*http.Server]struct{}
	sessions map[*session]struct{}
	sessWG   sync.WaitGroup

	reg registry
}

// New returns a broker configured by cfg.
func New(cfg Config) *Broker {
	b := &Broker{
		cfg:      cfg,
		servers:  make(map[*http.Server]struct{}),
		sessions: make(map[*session]struct{}),
	}
	b.reg.init()
	return b
}

// Stats returns a snapshot of the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Sessions:        b.st.sessions.Load(),
		Accepted:        b.st.accepted.Load(),
		Refused:         b.st.refused.Load(),
		Published:       b.st.published.Load(),
		Delivered:       b.st.delivered.Load(),
		DroppedTooBig:   b.st.droppedTooBig.Load(),
		SlowDisconnects: b.st.slowDisconnects.Load(),
		ProtocolErrors:  b.st.protocolErrors.Load(),
		Takeovers:       b.st.takeovers.Load(),
	}
}

// Serve accepts HTTP connections on l and serves SMQ on every path. It
// returns ErrClosed after Shutdown.
func (b *Broker) Serve(l net.Listener) error {
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	if b.cfg.Logger != nil {
		srv.ErrorLog = slog.NewLogLogger(b.cfg.Logger.Handler(), slog.LevelDebug)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.servers[srv] = struct{}{}
	b.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return err
}

// Shutdown stops accepting, sends every client Disconnect "shutdown", and
// waits until all sessions have ended or ctx is done, when it closes the rest
// and returns ctx's error.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	servers := b.servers
	b.servers = map[*http.Server]struct{}{}
	sessions := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		sessions = append(sessions, s)
	}
	b.mu.Unlock()
	for srv := range servers {
		_ = srv.Close() // hijacked connections are ours, not the server's
	}
	for _, s := range sessions {
		s.kick(reasonShutdown)
	}
	done := make(chan struct{})
	go func() { b.sessWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		for s := range b.sessions {
			s.abort()
		}
		b.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
