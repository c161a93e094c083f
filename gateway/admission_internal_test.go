package gateway

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// emfileListener fails its first Accepts with EMFILE, then accepts from
// a real listener.
type emfileListener struct {
	net.Listener
	fail int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fail > 0 {
		l.fail--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestFDGuard: out of descriptors, the guard gives up its spare, accepts
// the waiting connection and closes it at once (the client is refused
// now rather than left in the backlog), and takes the spare back.
func TestFDGuard(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	g := newFDGuard(&emfileListener{Listener: inner, fail: 1}, func() { refused++ })
	defer g.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	done := make(chan error, 1)
	go func() {
		c, err := g.Accept() // EMFILE, the waiting client refused, then waits for the next
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the client read a byte, want its connection closed")
	}
	next, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := <-done; err != nil {
		t.Fatalf("Accept after the refusal: %v", err)
	}
	if refused != 1 || g.spare == nil {
		t.Errorf("refused %d, spare %v: want 1 and the spare back", refused, g.spare)
	}

}
