package smqdial_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
)

// kindCase is a dial that fails one way.
type kindCase struct {
	name   string
	url    string
	dialer *smqdial.Dialer
	kind   smqdial.Kind
	stage  smqdial.Stage
	reason string // smqdial.Reason, exactly
	// is and as are what errors.Is and errors.As must find in the error.
	is []error
	as []any
}

// check dials tc and checks its error: Kind, Stage, the *net.OpError it
// unwraps to, what it matches, and a Reason without address or password.
func (tc kindCase) check(t *testing.T) {
	t.Helper()
	u := mustURL(tc.url)
	_, err := tc.dialer.Dial(smqtest.Context(t), u, nil)
	var e *smqdial.Error
	if !errors.As(err, &e) {
		t.Fatalf("%T %v, want a *smqdial.Error", err, err)
	}
	if e.Kind != tc.kind || e.Stage != tc.stage {
		t.Errorf("kind %v at %v, want %v at %v: %v", e.Kind, e.Stage, tc.kind, tc.stage, err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" || oe.Addr.String() != u.Host {
		t.Errorf("%v does not unwrap to the *net.OpError of a dial to %s", err, u.Host)
	}
	if !strings.HasPrefix(err.Error(), "dial tcp "+u.Host+": ") {
		t.Errorf("error %q", err)
	}
	for _, target := range tc.is {
		if !errors.Is(err, target) {
			t.Errorf("%v is not %v", err, target)
		}
	}
	for _, target := range tc.as {
		if !errors.As(err, target) {
			t.Errorf("%v has no %T", err, target)
		}
	}
	r := smqdial.Reason(fmt.Errorf("wrapped: %w", err))
	if r != tc.reason {
		t.Errorf("reason %q\nwant   %q", r, tc.reason)
	}
	if strings.Contains(r, "127.0.0.1") || strings.Contains(r, "wrong") {
		t.Errorf("reason %q shows an address or a password", r)
	}
}

// TestKinds makes a dial fail in each way it can and checks what the error
// says: connect, TLS, certificates, bootstrap, upgrade.
func TestKinds(t *testing.T) {
	noLeak(t)
	ca, clientCA := testpki.NewCA(t), testpki.NewCA(t)
	dead := smqtest.DeadAddr(t)
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	webAddr := strings.TrimPrefix(web.URL, "http://")
	trusted := &tls.Config{RootCAs: ca.Pool}
	tls12 := &tls.Config{RootCAs: ca.Pool, MaxVersion: tls.VersionTLS12}
	secure, _ := startBroker(t, ca.Server(t).ServerConfig(nil))
	strict, _ := startBroker(t, ca.Server(t).ServerConfig(clientCA.Pool)) // wants a client certificate
	var direct smqdial.Dialer
	var (
		ua x509.UnknownAuthorityError
		rh tls.RecordHeaderError
	)
	for _, tc := range []kindCase{
		{name: "connection refused", url: "http://" + dead + "/smq", dialer: &direct,
			kind: smqdial.Connect, stage: smqdial.StageConnect, reason: "connect: connection refused",
			is: []error{syscall.ECONNREFUSED}},
		{name: "connection refused/ws", url: "wss://" + dead + "/smq", dialer: &direct,
			kind: smqdial.Connect, stage: smqdial.StageConnect, reason: "connect: connection refused",
			is: []error{syscall.ECONNREFUSED}},
		{name: "unknown authority", url: "https://" + secure + "/smq", dialer: &direct,
			kind: smqdial.TLS, stage: smqdial.StageTLS, reason: "tls handshake: the server's certificate is not trusted",
			as: []any{&ua}},
		{name: "unknown authority/ws", url: "wss://" + secure + "/smq", dialer: &direct,
			kind: smqdial.TLS, stage: smqdial.StageTLS, reason: "tls handshake: the server's certificate is not trusted",
			as: []any{&ua}},
		{name: "not tls", url: "https://" + webAddr + "/", dialer: &direct,
			kind: smqdial.TLS, stage: smqdial.StageTLS, reason: "tls handshake: the server does not speak TLS",
			as: []any{&rh}},
		// TLS 1.3: the server refuses the certificate after the client's
		// handshake is over, as the bootstrap's answer.
		{name: "no certificate", url: "https://" + strict + "/smq", dialer: &smqdial.Dialer{TLSConfig: trusted},
			kind: smqdial.CertificateRefused, stage: smqdial.StageBootstrap,
			reason: "client certificate refused: tls: certificate required"},
		{name: "no certificate/ws", url: "wss://" + strict + "/smq", dialer: &smqdial.Dialer{TLSConfig: trusted},
			kind: smqdial.CertificateRefused, stage: smqdial.StageUpgrade,
			reason: "client certificate refused: tls: certificate required"},
		// TLS 1.2: in the handshake. Go's server answers a missing
		// certificate with handshake_failure, which may mean anything.
		{name: "no certificate/tls1.2", url: "https://" + strict + "/smq", dialer: &smqdial.Dialer{TLSConfig: tls12},
			kind: smqdial.TLS, stage: smqdial.StageTLS,
			reason: "tls handshake: remote error: tls: handshake failure"},
		{name: "unknown client ca", url: "wss://" + strict + "/smq", dialer: &smqdial.Dialer{TLSConfig: &tls.Config{
			RootCAs: ca.Pool, MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{testpki.NewCA(t).Client(t, "gw").TLS}}},
			kind: smqdial.CertificateRefused, stage: smqdial.StageTLS,
			reason: "client certificate refused: tls: unknown certificate authority"},
		{name: "not a broker", url: "http://" + webAddr + "/", dialer: &direct,
			kind: smqdial.Bootstrap, stage: smqdial.StageBootstrap,
			reason: `bootstrap: smq: bad bootstrap: broker answered "404 Not Found"`,
			is:     []error{smq.ErrBadBootstrap}},
		{name: "not a broker/ws", url: "ws://" + webAddr + "/", dialer: &direct,
			kind: smqdial.Upgrade, stage: smqdial.StageUpgrade, reason: "websocket upgrade refused: 404 Not Found",
			is: []error{websocket.ErrBadHandshake}},
	} {
		t.Run(tc.name, tc.check)
	}
	t.Run("upgrade status", func(t *testing.T) {
		_, err := direct.Dial(smqtest.Context(t), mustURL("ws://"+webAddr+"/"), nil)
		var e *smqdial.Error
		if !errors.As(err, &e) || e.Status != "404 Not Found" ||
			err.Error() != "dial tcp "+webAddr+`: websocket upgrade: broker answered "404 Not Found"` {
			t.Errorf("%v (status %q)", err, e.Status)
		}
	})
}

// TestProxyKinds dials through the real tinyproxy and microsocks: a proxy
// that is not there, one that refuses the credentials, one that cannot
// reach the broker.
func TestProxyKinds(t *testing.T) {
	noLeak(t)
	auth := proxytest.Options{User: "gw", Password: "s3cret"}
	tiny := proxytest.StartTinyproxy(t, auth)
	socks := proxytest.StartMicrosocks(t, auth)
	socksOpen := proxytest.StartMicrosocks(t, proxytest.Options{})
	dead := smqtest.DeadAddr(t)
	broker, _ := startBroker(t, nil)
	through := func(proxy *url.URL, password string) *smqdial.Dialer {
		t.Helper()
		u := *proxy
		if password != "" {
			u.User = url.UserPassword(u.User.Username(), password)
		}
		pd, err := proxyclient.FromURL(&u, proxyclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return &smqdial.Dialer{NetDialer: pd, Timeout: smqtest.WaitFor}
	}
	var se *proxyclient.StatusError
	var ke *proxyclient.SOCKSError
	for _, tc := range []kindCase{
		{name: "no proxy there", url: "http://" + broker + "/smq",
			dialer: through(&url.URL{Scheme: "http", Host: dead}, ""),
			kind:   smqdial.Proxy, stage: smqdial.StageConnect, reason: "proxy: connection refused"},
		{name: "http credentials", url: "ws://" + broker + "/smq", dialer: through(tiny.URL, "wrong"),
			kind: smqdial.ProxyRefused, stage: smqdial.StageConnect,
			reason: "proxy authentication required (credentials rejected)",
			is:     []error{proxyclient.ErrProxyAuth}, as: []any{&se}},
		{name: "socks credentials", url: "http://" + broker + "/smq", dialer: through(socks.URL, "wrong"),
			kind: smqdial.ProxyRefused, stage: smqdial.StageConnect,
			reason: "proxy authentication required (credentials rejected)",
			is:     []error{proxyclient.ErrProxyAuth}},
		{name: "socks target refused", url: "http://" + dead + "/smq", dialer: through(socksOpen.URL, ""),
			kind: smqdial.ProxyRefused, stage: smqdial.StageConnect,
			reason: "SOCKS proxy: connection refused (SOCKS reply 0x05)",
			is:     []error{syscall.ECONNREFUSED}, as: []any{&ke}},
	} {
		t.Run(tc.name, tc.check)
	}
	t.Run("through", func(t *testing.T) {
		for _, p := range []*proxytest.Proxy{tiny, socks} {
			c, err := through(p.URL, "").Dial(smqtest.Context(t), mustURL("ws://"+broker+"/smq"), nil)
			if err != nil {
				t.Fatalf("through %s: %v", p.URL.Redacted(), err)
			}
			if m := exchange(t, c, nil); m.Type() != smq.TypeInit {
				t.Errorf("first message %v", m.Type())
			}
			c.Close()
		}
	})
}

// TestTimeout: Dialer.Timeout ends a dial whatever stage it is in, with an
// error that says so.
func TestTimeout(t *testing.T) {
	noLeak(t)
	const timeout = 200 * time.Millisecond
	silent := silentServer(t, nil).addr
	for _, tc := range []struct {
		url   string
		nd    blockingDialer
		stage smqdial.Stage
	}{
		{"http://192.0.2.1/smq", blockingDialer{make(chan struct{}, 1)}, smqdial.StageConnect},
		{"https://" + silent + "/smq", blockingDialer{}, smqdial.StageTLS},
		{"http://" + silent + "/smq", blockingDialer{}, smqdial.StageBootstrap},
		{"ws://" + silent + "/smq", blockingDialer{}, smqdial.StageUpgrade},
	} {
		t.Run(tc.stage.String(), func(t *testing.T) {
			d := &smqdial.Dialer{Timeout: timeout}
			if tc.nd.started != nil {
				d.NetDialer = tc.nd
			}
			start := time.Now()
			_, err := d.Dial(context.Background(), mustURL(tc.url), nil)
			if took := time.Since(start); took < timeout || took > timeout+5*time.Second {
				t.Errorf("failed after %v, want %v", took, timeout)
			}
			var e *smqdial.Error
			var ne net.Error
			if !errors.As(err, &e) || e.Kind != smqdial.Timeout || e.Stage != tc.stage || !e.Timeout() ||
				!errors.As(err, &ne) || !ne.Timeout() ||
				!errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%v is not a timeout at %v", err, tc.stage)
			}
			want := "no answer within 200ms"
			if tc.stage != smqdial.StageConnect {
				want = tc.stage.String() + ": " + want
			}
			if !strings.HasSuffix(err.Error(), ": "+want) {
				t.Errorf("error %q, want it to end %q", err, want)
			}
			if r := smqdial.Reason(err); r != tc.stage.String()+": timed out" {
				t.Errorf("reason %q", r)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for k, want := range map[smqdial.Kind]string{smqdial.Connect: "connect", smqdial.ProxyRefused: "proxy_refused",
		smqdial.CertificateRefused: "certificate_refused", smqdial.Aborted: "aborted", 0: "Kind(0)", 200: "Kind(200)"} {
		if k.String() != want {
			t.Errorf("%d: %q, want %q", k, k, want)
		}
	}
	for s, want := range map[smqdial.Stage]string{smqdial.StageTLS: "tls handshake", smqdial.StageUpgrade: "websocket upgrade", 0: "Stage(0)"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", s, s, want)
		}
	}
	if r := smqdial.Reason(errors.New("not a dial")); r != "" {
		t.Errorf("Reason of another error: %q", r)
	}
	// A zero Error, or one made by hand, still reads.
	e := &smqdial.Error{Kind: smqdial.Upgrade, Stage: smqdial.StageUpgrade, Addr: "h:80"}
	if e.Error() != "dial tcp h:80: websocket upgrade: upgrade" || smqdial.Reason(e) != "websocket upgrade: failed" {
		t.Errorf("%q %q", e, smqdial.Reason(e))
	}
	if (&smqdial.Error{}).Error() == "" {
		t.Error("the zero Error has no text")
	}
}
