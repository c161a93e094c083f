package smqtest

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestDeadAddr checks both promises: a connection is refused, and the port
// cannot be taken by a listener while the test runs.
func TestDeadAddr(t *testing.T) {
	addr := DeadAddr(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
		t.Fatalf("listen on %s succeeded; the port is not held", addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("listen on %s: %v, want address in use", addr, err)
	}
}
