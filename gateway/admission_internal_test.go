package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/limits"
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

// onceEMFILE fails its first Accept with EMFILE — Linux's accept4 does so
// at the descriptor limit whether or not a client waits — then accepts
// from the TCP listener, whose deadline it passes on.
type onceEMFILE struct {
	*net.TCPListener
	failed atomic.Bool
}

func (l *onceEMFILE) Accept() (net.Conn, error) {
	if l.failed.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.TCPListener.Accept()
}

// TestFDGuardNoClientWaiting: at the descriptor limit with no client
// waiting, fdGuard's accept with the spare given up ends on its short
// deadline: Accept reports EMFILE (net/http backs off) with the spare
// back, and Close, even during that accept, closes at once (it hung
// behind the guard's lock: a Shutdown at the limit never ended).
func TestFDGuardNoClientWaiting(t *testing.T) {
	t.Parallel()
	inner, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g := newFDGuard(&onceEMFILE{TCPListener: inner}, func() { t.Error("refused a connection that was not there") })
	first := make(chan error, 1)
	go func() { _, err := g.Accept(); first <- err }()
	select {
	case err := <-first:
		if !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("Accept: %v, want EMFILE", err)
		}
	case <-time.After(smqtest.WaitFor):
		inner.Close()
		t.Fatal("Accept without its spare waited for a client that never came")
	}
	if g.spare == nil {
		t.Fatal("the spare was not taken back")
	}
	done := make(chan error, 1)
	go func() { _, err := g.Accept(); done <- err }() // waits for a client
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(smqtest.WaitFor):
		t.Fatal("Accept went on after Close")
	}
}

const envFDChild = "SMQGW_FDGUARD_CHILD"

// TestFDGuardRealEMFILE: with the descriptor table really full and three
// clients waiting, fdGuard refuses all three and keeps its spare (it
// reopened the spare before closing the connection holding its slot, so
// after one refusal the spare was gone and the next clients waited in
// the backlog again). The table is filled in a child process: the limit
// is the process's.
func TestFDGuardRealEMFILE(t *testing.T) {
	if os.Getenv(envFDChild) == "1" {
		fdGuardChild(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFDGuardRealEMFILE$", "-test.v")
	cmd.Env = append(os.Environ(), envFDChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("refused 3, spare kept")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func fdGuardChild(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	g := newFDGuard(inner, func() { refused.Add(1) })
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// Fill the table: lower the limit to what is open, plus a few, and
	// open /dev/null until it is full.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(len(fds) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		defer f.Close()
	}
	// Each waiting client is refused; with none left, Accept reports
	// EMFILE after the guard's short wait.
	for range 4 {
		if c, err := g.Accept(); err == nil {
			c.Close()
			t.Fatal("a connection was accepted into the full table")
		}
		if refused.Load() == 3 {
			break
		}
	}
	fmt.Printf("refused %d, spare kept %v\n", refused.Load(), g.spare != nil)
}

// TestRefusedConnStaysRefused: a connection admission refused keeps
// failing reads (a second read went to the socket).
func TestRefusedConnStaysRefused(t *testing.T) {
	t.Parallel()
	g, err := New(Config{Limits: limits.Limits{MaxConnectionsPerIP: 1},
		Listeners: []Listener{{Name: "h", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}}})
	if err != nil {
		t.Fatal(err)
	}
	ll := g.lns[0]
	conn := func() *countedConn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		go func() { _, _ = b.Write([]byte("GET / HTTP/1.1\r\n")) }()
		return &countedConn{Conn: a, g: g, ll: ll}
	}
	first := conn()
	if err := first.admit(); err != nil { // net.Pipe has no IP: one bucket
		t.Fatal(err)
	}
	second := conn()
	for i := range 2 {
		if n, err := second.Read(make([]byte, 16)); err == nil || n != 0 {
			t.Fatalf("read %d of a refused connection: %d bytes, %v", i+1, n, err)
		}
	}
}

// TestAddressOverItsLimitTakesNoListenerSlot: an address over its own
// limit, hammering, never takes the listener's pending slots, even for
// a moment: another address is never refused max_pending while there is
// room (it took a slot first and gave it back: 7–12k of 20k legitimate
// admissions were refused in a review).
func TestAddressOverItsLimitTakesNoListenerSlot(t *testing.T) {
	t.Parallel()
	g, err := New(Config{Limits: limits.Limits{MaxPending: 1, MaxPendingPerIP: 10, MaxConnectionsPerIP: 1},
		Listeners: []Listener{{Name: "h", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}}})
	if err != nil {
		t.Fatal(err)
	}
	ll := g.lns[0]
	from := func(ip string) *countedConn {
		a, b := net.Pipe()
		a.Close()
		b.Close()
		return &countedConn{Conn: &addrConn{Conn: a, remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(ip + ":1000"))}, g: g, ll: ll}
	}
	at := from("127.0.0.2") // at its limit: one session
	if err := at.admit(); err != nil {
		t.Fatal(err)
	}
	at.toSession()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				_ = from("127.0.0.2").admit() // refused, over its limit
			}
		})
	}
	refused := 0
	for range 5000 {
		c := from("127.0.0.3")
		if c.admit() != nil {
			refused++
		}
		_ = c.Close()
	}
	stop.Store(true)
	wg.Wait()
	if refused != 0 {
		t.Errorf("127.0.0.3 refused %d of 5000 times with the listener's slot free", refused)
	}
}

// addrConn is a connection with a given remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }
