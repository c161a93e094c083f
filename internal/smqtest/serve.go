package smqtest

import (
	"bytes"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Serve accepts connections on l and runs handle on each in its own
// goroutine, closing the connection when handle returns. When the test
// ends, the listener and every connection are closed and the handlers
// waited for, so a goroutine-leak check passes.
func Serve(tb testing.TB, l net.Listener, handle func(c net.Conn)) {
	tb.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Listen listens on a free loopback port and closes the listener when the
// test ends.
func Listen(tb testing.TB) net.Listener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// Echo serves a TCP echo on a free loopback port until the test ends: each
// connection gets back what it sends. It returns the address.
func Echo(tb testing.TB) string {
	tb.Helper()
	l := Listen(tb)
	Serve(tb, l, func(c net.Conn) { _, _ = io.Copy(c, c) })
	return l.Addr().String()
}

// DeadAddr returns a loopback address nobody listens on: connecting to it
// is refused at once. The port stays bound (without listening, and without
// SO_REUSEADDR) until the test ends, so no listener started later in the
// test, or in a parallel test, can be given the same port.
func DeadAddr(tb testing.TB) string {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(os.NewSyscallError("socket", err))
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(os.NewSyscallError("bind", err))
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(os.NewSyscallError("getsockname", err))
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		tb.Fatalf("getsockname: unexpected address %T", sa)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(in4.Port))
}

// SyncBuffer is an io.Writer safe for concurrent use, read while something
// (a logger, a command) still writes to it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
