package proxytest_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/proxy"

	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// TestMain checks that no test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(smqtest.WaitFor))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v; want ping", got, err)
	}
}

// connect asks the HTTP proxy at addr for a tunnel to target and returns
// the connection and the answer's status code.
func connect(t *testing.T, addr, target, user, password string) (net.Conn, int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, smqtest.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(smqtest.WaitFor))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if user != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && br.Buffered() != 0 {
		t.Fatalf("%d bytes after the answer", br.Buffered())
	}
	return c, resp.StatusCode
}

// checkStopped checks that p's process is gone and its port closed.
func checkStopped(t *testing.T, p *proxytest.Proxy) {
	t.Helper()
	if err := syscall.Kill(p.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after Stop: kill -0 says %v, want ESRCH", p.PID, err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, smqtest.WaitFor); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", p.Addr)
	}
}

func TestTinyproxy(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	t.Run("no auth", func(t *testing.T) {
		p := proxytest.StartTinyproxy(t, proxytest.Options{})
		if p.URL.Scheme != "http" || p.URL.Host != p.Addr || p.URL.User != nil {
			t.Errorf("URL %s, want http://%s", p.URL, p.Addr)
		}
		// The echo server's port is random: every port may be
		// tunnelled to (the packaged configuration allows 443 and 563).
		c, code := connect(t, p.Addr, echo, "", "")
		if code != http.StatusOK {
			t.Fatalf("CONNECT: %d", code)
		}
		roundTrip(t, c)
		if !strings.Contains(p.Log(), "Starting main loop") {
			t.Errorf("log in the temporary directory lacks the start:\n%s", p.Log())
		}
		p.Stop()
		p.Stop()
		checkStopped(t, p)
	})
	t.Run("basic auth", func(t *testing.T) {
		p := proxytest.StartTinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"})
		if got := p.URL.User.String(); got != "alice:s3cret" {
			t.Errorf("URL user info %q, want alice:s3cret", got)
		}
		if _, code := connect(t, p.Addr, echo, "", ""); code != http.StatusProxyAuthRequired {
			t.Errorf("CONNECT without credentials: %d, want 407", code)
		}
		c, code := connect(t, p.Addr, echo, "alice", "s3cret")
		if code != http.StatusOK {
			t.Fatalf("CONNECT with credentials: %d", code)
		}
		roundTrip(t, c)
	})
}

func TestMicrosocks(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	dial := func(t *testing.T, p *proxytest.Proxy, auth *proxy.Auth) (net.Conn, error) {
		t.Helper()
		d, err := proxy.SOCKS5("tcp", p.Addr, auth, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		return d.(proxy.ContextDialer).DialContext(ctx, "tcp", echo)
	}
	t.Run("no auth", func(t *testing.T) {
		p := proxytest.StartMicrosocks(t, proxytest.Options{})
		if p.URL.Scheme != "socks5" || p.URL.Host != p.Addr || p.URL.User != nil {
			t.Errorf("URL %s, want socks5://%s", p.URL, p.Addr)
		}
		c, err := dial(t, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c)
		p.Stop()
		checkStopped(t, p)
	})
	t.Run("username and password", func(t *testing.T) {
		p := proxytest.StartMicrosocks(t, proxytest.Options{User: "bob", Password: "pw"})
		if got := p.URL.User.String(); got != "bob:pw" {
			t.Errorf("URL user info %q, want bob:pw", got)
		}
		if c, err := dial(t, p, nil); err == nil {
			c.Close()
			t.Error("dial without credentials succeeded")
		}
		c, err := dial(t, p, &proxy.Auth{User: "bob", Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c)
	})
}
