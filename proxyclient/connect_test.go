package proxyclient_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/proxyclient"
)

func fromURL(t *testing.T, u *url.URL, opts proxyclient.Options) proxyclient.ContextDialer {
	t.Helper()
	d, err := proxyclient.FromURL(u, opts)
	if err != nil {
		t.Fatalf("FromURL(%s): %v", u.Redacted(), err)
	}
	return d
}

func TestTinyproxy(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	for _, tt := range []struct {
		name string
		opts proxytest.Options
	}{
		{"no auth", proxytest.Options{}},
		{"basic auth", proxytest.Options{User: "alice", Password: "s3cret-pw"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := proxytest.StartTinyproxy(t, tt.opts)
			d := fromURL(t, p.URL, proxyclient.Options{})
			roundTrip(t, dial(t, d, echo))
			// A second tunnel through the same dialer.
			roundTrip(t, dial(t, d, echo))
		})
	}
}

func TestTinyproxyErrors(t *testing.T) {
	t.Parallel()
	echo := smqtest.Echo(t)
	dead := smqtest.DeadAddr(t)
	open := proxytest.StartTinyproxy(t, proxytest.Options{})
	auth := proxytest.StartTinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"})
	withUser := func(p *proxytest.Proxy, ui *url.Userinfo) *url.URL {
		u := *p.URL
		u.User = ui
		return &u
	}
	for _, tt := range []struct {
		name       string
		proxy      *proxytest.Proxy
		url        *url.URL
		target     string
		errText    string
		auth       bool
		statusCode int
	}{
		{"no credentials", auth, withUser(auth, nil), echo,
			"proxy authentication required", true, http.StatusProxyAuthRequired},
		{"wrong password", auth, withUser(auth, url.UserPassword("alice", "wrong")), echo,
			"proxy authentication required (credentials rejected)", true, http.StatusUnauthorized},
		{"unknown user", auth, withUser(auth, url.UserPassword("mallory", "s3cret")), echo,
			"proxy authentication required (credentials rejected)", true, http.StatusUnauthorized},
		{"target refuses", open, open.URL, dead,
			"proxy refused CONNECT: HTTP/1.1 500 Unable to connect", false, http.StatusInternalServerError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := dialErr(t, fromURL(t, tt.url, proxyclient.Options{}), tt.target)
			checkOpError(t, err, "proxyconnect", tt.proxy.Addr, tt.target, tt.errText)
			if got := errors.Is(err, proxyclient.ErrProxyAuth); got != tt.auth {
				t.Errorf("errors.Is(err, ErrProxyAuth) = %v, want %v", got, tt.auth)
			}
			var se *proxyclient.StatusError
			if !errors.As(err, &se) || se.StatusCode != tt.statusCode {
				t.Fatalf("error %v: want a StatusError with code %d", err, tt.statusCode)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// TestConnectRequest checks what the proxy receives and that bytes it
// sends along with its 200 answer reach the caller.
func TestConnectRequest(t *testing.T) {
	t.Parallel()
	const early = "bytes sent with the answer"
	l := smqtest.Listen(t)
	reqs := make(chan *http.Request, 1)
	connectProxy(t, l, func(req *http.Request) (int, string) {
		reqs <- req
		return http.StatusOK, early
	})
	echo := smqtest.Echo(t)

	// A bare host:port is an http:// proxy.
	d, err := proxyclient.Parse("bob:pa%3Ass@"+l.Addr().String(), proxyclient.Options{
		Header: http.Header{"X-Trace": {"abc"}, "Proxy-Authorization": {"Bearer ignored"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, d, echo)

	req := <-reqs
	if req.Method != http.MethodConnect || req.RequestURI != echo || req.Host != echo {
		t.Errorf("request %s %s, Host %s; want CONNECT %s, Host %s", req.Method, req.RequestURI, req.Host, echo, echo)
	}
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:pa:ss"))
	for k, want := range map[string]string{
		"Proxy-Authorization": wantAuth,
		"User-Agent":          proxyclient.DefaultUserAgent,
		"X-Trace":             "abc",
	} {
		if got := req.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}

	c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
	got := make([]byte, len(early))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the early bytes: %v", err)
	}
	if string(got) != early {
		t.Fatalf("first bytes %q, want %q", got, early)
	}
	roundTrip(t, c)
	if cw, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("the tunnel cannot be half-closed")
	} else if err := cw.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
}

func TestConnectCanceled(t *testing.T) {
	t.Parallel()
	proxyAddr, received := silentServer(t)
	d := fromURL(t, &url.URL{Scheme: "http", Host: proxyAddr}, proxyclient.Options{})
	checkCanceled(t, d, proxyAddr, received, "broker.example:443", "proxyconnect",
		"canceled waiting for the proxy's answer to CONNECT", "timed out waiting for the proxy's answer to CONNECT")
}

func TestConnectProxyDown(t *testing.T) {
	t.Parallel()
	dead := smqtest.DeadAddr(t)
	d := fromURL(t, &url.URL{Scheme: "http", Host: dead}, proxyclient.Options{})
	err := dialErr(t, d, "broker.example:443")
	checkOpError(t, err, "proxyconnect", dead, "broker.example:443", "")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not match ECONNREFUSED", err)
	}
}

// TestHTTPSProxy uses a TLS-terminating CONNECT proxy that requires a
// client certificate and refuses port 25.
func TestHTTPSProxy(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	clientCA := testpki.NewCA(t)
	l := smqtest.Listen(t)
	proxyAddr := l.Addr().String()
	connectProxy(t, tls.NewListener(l, ca.Server(t).ServerConfig(clientCA.Pool)), func(req *http.Request) (int, string) {
		if strings.HasSuffix(req.RequestURI, ":25") {
			return http.StatusForbidden, ""
		}
		return http.StatusOK, ""
	})
	echo := smqtest.Echo(t)
	u := &url.URL{Scheme: "https", Host: proxyAddr}
	client := clientCA.Client(t, "gateway")

	t.Run("client certificate", func(t *testing.T) {
		d := fromURL(t, u, proxyclient.Options{TLSConfig: &tls.Config{
			RootCAs:      ca.Pool,
			Certificates: []tls.Certificate{client.TLS},
		}})
		roundTrip(t, dial(t, d, echo))
		err := dialErr(t, d, "127.0.0.1:25")
		checkOpError(t, err, "proxyconnect", proxyAddr, "127.0.0.1:25", "proxy refused CONNECT: HTTP/1.1 403 Forbidden")
	})
	t.Run("no client certificate", func(t *testing.T) {
		d := fromURL(t, u, proxyclient.Options{TLSConfig: &tls.Config{RootCAs: ca.Pool}})
		err := dialErr(t, d, echo)
		checkOpError(t, err, "proxyconnect", proxyAddr, echo, "")
		if !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("error %q does not say a certificate is required", err)
		}
	})
	t.Run("unknown CA", func(t *testing.T) {
		d := fromURL(t, u, proxyclient.Options{})
		err := dialErr(t, d, echo)
		checkOpError(t, err, "proxyconnect", proxyAddr, echo, "")
		var ue x509.UnknownAuthorityError
		if !errors.As(err, &ue) {
			t.Errorf("error %v: want an unknown-authority error", err)
		}
	})
}
