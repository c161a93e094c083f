package gateway

import (
	"crypto/rand"
	"sync"
	"time"
)

// TLS session tickets let a client resume a session without a full
// handshake. The keys that seal them belong to the gateway, not to a
// listener's TLS configuration, so that a reload (which makes new
// configurations) does not throw every ticket away: without keys of its
// own, a gateway makes random ones, adds a new one every day and keeps
// the last seven (as crypto/tls does for one configuration); with keys
// from a file (Config.SessionTicketKeys), shared by the gateways behind
// one load balancer, it uses those, the first to seal, all to open.

const (
	ticketRotation = 24 * time.Hour
	ticketKeep     = 7
)

// ticketKeys are a gateway's session ticket keys.
type ticketKeys struct {
	mu      sync.Mutex
	keys    [][32]byte
	fixed   bool // given: never rotated
	rotated time.Time
	gen     uint64 // changes with the keys
}

// set puts given keys in force, or (none) random rotating ones.
func (t *ticketKeys) set(keys [][32]byte, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	if len(keys) > 0 {
		t.keys, t.fixed = append([][32]byte(nil), keys...), true
		return
	}
	if t.fixed || len(t.keys) == 0 {
		t.keys, t.fixed = nil, false
		t.rotateLocked(now)
	}
}

// current returns the keys in force, the first sealing, and their
// generation; random keys are rotated when due.
func (t *ticketKeys) current(now time.Time) ([][32]byte, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.fixed && now.Sub(t.rotated) >= ticketRotation {
		t.rotateLocked(now)
	}
	return t.keys, t.gen
}

func (t *ticketKeys) rotateLocked(now time.Time) {
	var k [32]byte
	_, _ = rand.Read(k[:]) // never fails (crypto/rand)
	t.keys = append([][32]byte{k}, t.keys[:min(len(t.keys), ticketKeep-1)]...)
	t.rotated = now
	t.gen++
}
