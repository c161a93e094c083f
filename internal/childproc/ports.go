package childproc

import (
	"io"
	"net"
	"strconv"
	"testing"
)

// Ports holds listeners on free loopback ports, so that the ports it hands
// out are distinct, until Release; then the children bind them (another
// program may take one meanwhile). The zero value holds none.
type Ports struct {
	held []io.Closer
}

// TCP returns a free TCP port on 127.0.0.1.
func (r *Ports) TCP(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("childproc: finding a free port: %v", err)
	}
	r.held = append(r.held, l)
	return l.Addr().(*net.TCPAddr).Port
}

// TCPAndUDP returns a port on 127.0.0.1 free for both TCP and UDP, as a
// DNS server needs.
func (r *Ports) TCPAndUDP(t testing.TB) int {
	t.Helper()
	var lastErr error
	for range 20 {
		port := r.TCP(t) // held also when UDP fails, so the port is not picked again
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			lastErr = err
			continue
		}
		r.held = append(r.held, pc)
		return port
	}
	t.Fatalf("childproc: no port free for both TCP and UDP: %v", lastErr)
	return 0
}

// Release closes the listeners, freeing the ports handed out.
func (r *Ports) Release() {
	for _, c := range r.held {
		c.Close()
	}
	r.held = nil
}
