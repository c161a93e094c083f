package proxyclient_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/proxyclient"
)

// TestMain checks that no test leaves a goroutine behind: every dial and
// every test server must have ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// silentServer accepts connections, reads what it gets and never answers:
// a proxy that hangs. Each connection's first bytes are reported on the
// returned channel (while it has room).
func silentServer(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	l := smqtest.Listen(t)
	received := make(chan struct{}, 16)
	smqtest.Serve(t, l, func(c net.Conn) {
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return
		}
		select {
		case received <- struct{}{}:
		default:
		}
		io.Copy(io.Discard, c)
	})
	return l.Addr().String(), received
}

// connectProxy serves HTTP CONNECT on l: each request is passed to answer,
// which returns the status to send (200 opens a tunnel to the request's
// target) and any bytes to send right after the answer, in the same write.
func connectProxy(t *testing.T, l net.Listener, answer func(req *http.Request) (status int, early string)) {
	t.Helper()
	smqtest.Serve(t, l, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		status, early := answer(req)
		if status != http.StatusOK {
			fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n", status, http.StatusText(status))
			return
		}
		back, err := net.DialTimeout("tcp", req.RequestURI, smqtest.WaitFor)
		if err != nil {
			io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return
		}
		defer back.Close()
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"+early); err != nil {
			return
		}
		// Two copiers; when one ends, both connections close and the
		// other ends too.
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(back, br)
			back.Close()
			c.Close()
		}()
		io.Copy(c, back)
		back.Close()
		c.Close()
		<-done
	})
}

// dial dials addr through d under smqtest.WaitFor; the connection is closed when
// the test ends.
func dial(t *testing.T, d proxyclient.ContextDialer, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("DialContext(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialErr dials addr through d under smqtest.WaitFor and returns the error it
// must fail with.
func dialErr(t *testing.T, d proxyclient.ContextDialer, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("DialContext(%s) succeeded, want an error", addr)
	}
	return err
}

// roundTrip sends a message through c and expects it back (from an echo
// server).
func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(smqtest.WaitFor)); err != nil {
		t.Fatal(err)
	}
	defer c.SetDeadline(time.Time{})
	msg := []byte("hello through the proxy")
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != string(msg) {
		t.Fatalf("read %q, want %q", got, msg)
	}
}

// checkCanceled dials target through d, whose proxy at proxyAddr reads
// and never answers (received reports the first bytes of each connection):
// a dial canceled, and one past its deadline, must end with a *net.OpError
// of op whose Err's text is canceled or timedOut.
func checkCanceled(t *testing.T, d proxyclient.ContextDialer, proxyAddr string, received <-chan struct{}, target, op, canceled, timedOut string) {
	t.Helper()
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-received
			cancel()
		}()
		start := time.Now()
		_, err := d.DialContext(ctx, "tcp", target)
		if time.Since(start) > smqtest.WaitFor/2 {
			t.Errorf("returned after %v", time.Since(start))
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		checkOpError(t, err, op, proxyAddr, target, canceled)
	})
	t.Run("deadline", func(t *testing.T) {
		// Long enough that the TCP connect to the proxy is done before it.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := d.DialContext(ctx, "tcp", target)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want context.DeadlineExceeded", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("error %v is not a net.Error timeout", err)
		}
		checkOpError(t, err, op, proxyAddr, target, timedOut)
	})
}

// checkOpError checks that err is a *net.OpError of op naming the proxy as
// Source and target as Addr, with Err's text errText (when not empty), and
// that the whole text names both addresses.
func checkOpError(t *testing.T, err error, op, proxyAddr, target, errText string) *net.OpError {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("error %v (%T) is not a *net.OpError", err, err)
	}
	if oe.Op != op {
		t.Errorf("Op = %q, want %q", oe.Op, op)
	}
	if oe.Source == nil || oe.Source.String() != proxyAddr {
		t.Errorf("Source = %v, want the proxy %s", oe.Source, proxyAddr)
	}
	if oe.Addr == nil || oe.Addr.String() != target {
		t.Errorf("Addr = %v, want the target %s", oe.Addr, target)
	}
	if errText != "" && (oe.Err == nil || oe.Err.Error() != errText) {
		t.Errorf("Err = %v, want %q", oe.Err, errText)
	}
	if want := proxyAddr + "->" + target; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
	return oe
}
