package gateway

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
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

// TestTicketKeysRotate: random session ticket keys get a new first key
// every day and keep the last seven (older tickets still open for a
// week); given keys are never rotated.
func TestTicketKeysRotate(t *testing.T) {
	t.Parallel()
	var tk ticketKeys
	t0 := time.Unix(1e9, 0)
	tk.set(nil, t0)
	keys, gen := tk.current(t0.Add(23 * time.Hour))
	if len(keys) != 1 {
		t.Fatalf("%d keys at the start", len(keys))
	}
	first := keys[0]
	keys, gen2 := tk.current(t0.Add(24 * time.Hour))
	if len(keys) != 2 || gen2 == gen || keys[1] != first || keys[0] == first {
		t.Fatalf("after a day: %d keys, generation %d → %d, the old key second: %v", len(keys), gen, gen2, keys[1] == first)
	}
	for day := 2; day <= 10; day++ {
		keys, _ = tk.current(t0.Add(time.Duration(day) * 24 * time.Hour))
	}
	if len(keys) != ticketKeep {
		t.Fatalf("%d keys after ten days, want %d", len(keys), ticketKeep)
	}
	tk.set([][32]byte{{9}}, t0)
	if keys, _ := tk.current(t0.Add(100 * 24 * time.Hour)); len(keys) != 1 || keys[0] != [32]byte{9} {
		t.Fatalf("given keys rotated: %v", keys)
	}
	tk.set(nil, t0) // back to random ones
	if keys, _ := tk.current(t0); len(keys) != 1 || keys[0] == [32]byte{9} {
		t.Fatal("the given key stayed after going back to random keys")
	}
}
