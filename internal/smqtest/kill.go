package smqtest

import (
	"net"
	"sync"
)

// Killable is a listener that keeps every connection it accepts, so that
// Kill can end them all at once with the listener, as the crash of the
// server behind it would: no goodbye on any connection.
type Killable struct {
	net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	killed bool
}

// Track wraps l.
func Track(l net.Listener) *Killable { return &Killable{Listener: l} }

// Accept accepts a connection and keeps it for Kill.
func (k *Killable) Accept() (net.Conn, error) {
	c, err := k.Listener.Accept()
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.killed {
		c.Close()
		return nil, net.ErrClosed
	}
	k.conns = append(k.conns, c)
	return c, nil
}

// Kill closes the listener and every connection it accepted.
func (k *Killable) Kill() {
	k.mu.Lock()
	k.killed = true
	conns := k.conns
	k.conns = nil
	k.mu.Unlock()
	k.Listener.Close()
	for _, c := range conns {
		c.Close()
	}
}
