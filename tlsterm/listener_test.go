package tlsterm_test

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/internal/tlsalert"
	"github.com/smqgw/smqgw/tlsterm"
)

// unknownName is a server name the test listeners have no certificate for.
const unknownName = "unknown.example"

// handshake is one handshake a Listener reported to OnHandshake.
type handshake struct {
	conn net.Conn
	err  error
}

// testListener is a tlsterm.Listener on a loopback port.
type testListener struct {
	*tlsterm.Listener
	addr     string
	ca       *testpki.CA    // issued the server certificate (127.0.0.1, ::1, localhost)
	leaf     *testpki.Leaf  // the server certificate
	reported chan handshake // what OnHandshake was told, unless the test set it
	accepted chan *tls.Conn // what Accept returned
}

// listen starts a Listener over inner (a new loopback TCP listener if nil)
// with cfg, whose zero fields get test defaults: Config is ServerConfig
// with a certificate for every name but unknownName, Timeout smqtest.WaitFor,
// OnHandshake reports to reported. The listener closes, and its accept
// loop and the connections it accepted are reaped, when the test ends.
func listen(t *testing.T, inner net.Listener, cfg tlsterm.ListenerConfig) *testListener {
	t.Helper()
	tl := &testListener{ca: testpki.NewCA(t), reported: make(chan handshake, 16), accepted: make(chan *tls.Conn, 16)}
	tl.leaf = tl.ca.Server(t)
	if inner == nil {
		var err error
		if inner, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Config == nil {
		sc := tlsterm.ServerConfig(func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName == unknownName {
				return nil, errors.New("certs: no certificate for " + unknownName)
			}
			return &tl.leaf.TLS, nil
		})
		cfg.Config = func() *tls.Config { return sc }
	}
	if cfg.Timeout == nil {
		cfg.Timeout = func() time.Duration { return smqtest.WaitFor }
	}
	if cfg.OnHandshake == nil {
		cfg.OnHandshake = func(c net.Conn, err error) { tl.reported <- handshake{c, err} }
	}
	tl.Listener = tlsterm.NewListener(inner, cfg)
	tl.addr = tl.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			tl.accepted <- c.(*tls.Conn)
		}
	})
	t.Cleanup(func() {
		tl.Close()
		wg.Wait()
		close(tl.accepted)
		for c := range tl.accepted {
			c.Close()
		}
	})
	return tl
}

// next returns the next handshake the listener reported.
func (tl *testListener) next(t *testing.T) handshake {
	t.Helper()
	select {
	case h := <-tl.reported:
		return h
	case <-time.After(smqtest.WaitFor):
		t.Fatal("the listener reported no handshake")
		return handshake{}
	}
}

// nextConn returns the next connection Accept returned.
func (tl *testListener) nextConn(t *testing.T) *tls.Conn {
	t.Helper()
	select {
	case c := <-tl.accepted:
		return c
	case <-time.After(smqtest.WaitFor):
		t.Fatal("Accept returned no connection")
		return nil
	}
}

// dialTCP connects to addr; the connection closes when the test ends.
func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, smqtest.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(smqtest.WaitFor))
	return c
}

// readAll reads c until the server closes it, and returns what it got.
// Reaching the deadline instead is an error.
func readAll(c net.Conn) (string, error) {
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return string(b), err
	}
	return string(b), nil
}

// rawClient returns a client that writes send on a TCP connection and
// reads until the server closes it.
func rawClient(send string) func(*testing.T, *testListener) {
	return func(t *testing.T, tl *testListener) {
		c := dialTCP(t, tl.addr)
		if send != "" {
			if _, err := io.WriteString(c, send); err != nil {
				t.Errorf("write: %v", err)
			}
		}
		if got, err := readAll(c); err != nil || got != "" {
			t.Errorf("the server answered %q, %v; want nothing and a close", got, err)
		}
	}
}

// goClient returns a client that handshakes with cfg (RootCAs the
// listener's CA unless set) and, if its side of the handshake succeeds,
// reads until the server closes: a server's failure in TLS 1.3 can come
// after the client's handshake is done.
func goClient(cfg *tls.Config) func(*testing.T, *testListener) {
	return func(t *testing.T, tl *testListener) {
		cfg := cfg.Clone()
		if cfg.RootCAs == nil {
			cfg.RootCAs = tl.ca.Pool
		}
		c, err := tls.Dial("tcp", tl.addr, cfg)
		if err != nil {
			t.Logf("client: %v", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(smqtest.WaitFor))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("the server accepted the connection")
		}
	}
}

// errNoCert has no certificate to offer when the server asks for one.
var errNoCert = errors.New("test: no client certificate")

// TestFailureReason fails handshakes with a real client in each way
// FailureReason names, and checks the name.
func TestFailureReason(t *testing.T) {
	t.Parallel()
	// A client that sends its certificate and then cannot sign with its
	// key ends the handshake with the alert internal_error.
	cantSign := func(t *testing.T) *tls.Certificate {
		leaf := testpki.NewCA(t).Client(t, "device")
		return &tls.Certificate{Certificate: leaf.TLS.Certificate, PrivateKey: failingSigner{leaf.Key}}
	}
	garbageCert := func(t *testing.T) *tls.Certificate {
		leaf := testpki.NewCA(t).Client(t, "device")
		return &tls.Certificate{Certificate: [][]byte{[]byte("not a certificate")}, PrivateKey: leaf.Key}
	}
	tests := []struct {
		name    string
		want    tlsterm.Failure
		label   string
		proxied bool          // behind a PROXY protocol listener that requires a header
		timeout time.Duration // 0: smqtest.WaitFor
		client  func(*testing.T, *testListener)
	}{
		{name: "silent", want: tlsterm.FailureTimeout, label: "timeout", timeout: 100 * time.Millisecond,
			client: rawClient("")},
		{name: "half a ClientHello, then silent", want: tlsterm.FailureTimeout, label: "timeout", timeout: 100 * time.Millisecond,
			client: rawClient("\x16\x03\x01\x00\x40\x01")},
		{name: "plain HTTP", want: tlsterm.FailureNotTLS, label: "not_tls", client: func(t *testing.T, tl *testListener) {
			c := dialTCP(t, tl.addr)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			got, err := readAll(c)
			want := "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nsmqgw: this port speaks TLS: use https:// or wss://\n"
			if err != nil || got != want {
				t.Errorf("answer %q, %v; want %q", got, err, want)
			}
		}},
		{name: "SSH", want: tlsterm.FailureNotTLS, label: "not_tls", client: rawClient("SSH-2.0-OpenSSH_9.6\r\n")},
		{name: "unknown server name", want: tlsterm.FailureNoCertificate, label: "no_certificate",
			client: goClient(&tls.Config{ServerName: unknownName})},
		{name: "no PROXY header", want: tlsterm.FailureProxyProtocol, label: "proxy_protocol", proxied: true,
			client: goClient(&tls.Config{})},
		{name: "malformed PROXY header", want: tlsterm.FailureProxyProtocol, label: "proxy_protocol", proxied: true,
			client: rawClient("PROXY TCP4 banana\r\n")},
		{name: "closed at once", want: tlsterm.FailureClientClosed, label: "client_closed", client: func(t *testing.T, tl *testListener) {
			dialTCP(t, tl.addr).Close()
		}},
		{name: "closed in a record header", want: tlsterm.FailureClientClosed, label: "client_closed",
			client: func(t *testing.T, tl *testListener) {
				c := dialTCP(t, tl.addr)
				io.WriteString(c, "\x16\x03\x01")
				c.(*net.TCPConn).CloseWrite()
				readAll(c)
			}},
		{name: "reset", want: tlsterm.FailureClientClosed, label: "client_closed", client: func(t *testing.T, tl *testListener) {
			c := dialTCP(t, tl.addr)
			io.WriteString(c, "\x16\x03\x01\x00\x40\x01")
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}},
		{name: "unknown CA, TLS 1.2", want: tlsterm.FailureClientRejectedCertificate, label: "client_rejected_certificate",
			client: goClient(&tls.Config{RootCAs: x509.NewCertPool(), MaxVersion: tls.VersionTLS12})},
		{name: "unknown CA, TLS 1.3", want: tlsterm.FailureClientRejectedCertificate, label: "client_rejected_certificate",
			client: goClient(&tls.Config{RootCAs: x509.NewCertPool()})},
		{name: "wrong server name", want: tlsterm.FailureClientRejectedCertificate, label: "client_rejected_certificate",
			client: goClient(&tls.Config{ServerName: "other.example"})},
		{name: "internal error, TLS 1.2", want: tlsterm.FailureClientAlert, label: "client_alert",
			client: goClient(&tls.Config{MaxVersion: tls.VersionTLS12,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return nil, errNoCert }})},
		{name: "signing fails, TLS 1.2", want: tlsterm.FailureClientAlert, label: "client_alert",
			client: func(t *testing.T, tl *testListener) {
				cert := cantSign(t)
				goClient(&tls.Config{MaxVersion: tls.VersionTLS12,
					GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})(t, tl)
			}},
		{name: "signing fails, TLS 1.3", want: tlsterm.FailureClientAlert, label: "client_alert",
			client: func(t *testing.T, tl *testListener) {
				cert := cantSign(t)
				goClient(&tls.Config{
					GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})(t, tl)
			}},
		{name: "TLS 1.1", want: tlsterm.FailureNoCommonParameters, label: "no_common_parameters",
			client: goClient(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})},
		{name: "CBC suites only", want: tlsterm.FailureNoCommonParameters, label: "no_common_parameters",
			client: goClient(&tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}})},
		{name: "ALPN h2 only", want: tlsterm.FailureNoCommonParameters, label: "no_common_parameters",
			client: goClient(&tls.Config{NextProtos: []string{"h2"}})},
		{name: "unparsable client certificate, TLS 1.2", want: tlsterm.FailureOther, label: "other",
			client: func(t *testing.T, tl *testListener) {
				cert := garbageCert(t)
				goClient(&tls.Config{MaxVersion: tls.VersionTLS12,
					GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})(t, tl)
			}},
		{name: "unparsable client certificate, TLS 1.3", want: tlsterm.FailureOther, label: "other",
			client: func(t *testing.T, tl *testListener) {
				cert := garbageCert(t)
				goClient(&tls.Config{
					GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})(t, tl)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var inner net.Listener
			if tt.proxied {
				tcp, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				inner = &proxyproto.Listener{Listener: tcp, ReadHeaderTimeout: smqtest.WaitFor}
			}
			var cfg tlsterm.ListenerConfig
			if tt.timeout > 0 {
				cfg.Timeout = func() time.Duration { return tt.timeout }
			}
			tl := listen(t, inner, cfg)
			clientDone := make(chan struct{})
			go func() {
				defer close(clientDone)
				tt.client(t, tl)
			}()
			h := tl.next(t)
			<-clientDone
			if h.err == nil {
				t.Fatal("the handshake succeeded")
			}
			got := tlsterm.FailureReason(h.err)
			t.Logf("%v: %v", got, h.err)
			if got != tt.want || got.String() != tt.label {
				t.Errorf("FailureReason = %v (%d), want %s", got, got, tt.label)
			}
			if h.conn == nil || h.conn.RemoteAddr() == nil {
				t.Error("OnHandshake got no connection")
			}
			select {
			case h := <-tl.reported:
				t.Errorf("a second handshake reported: %v", h.err)
			default:
			}
		})
	}
}

// failingSigner holds a client certificate's public key but cannot sign.
type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("test: the key is in a smart card that was pulled out")
}

func TestFailureString(t *testing.T) {
	t.Parallel()
	labels := map[string]bool{}
	for f := tlsterm.FailureOther; f <= tlsterm.FailureNoCommonParameters; f++ {
		s := f.String()
		if s == "" || labels[s] || strings.ToLower(s) != s || strings.ContainsAny(s, " -") {
			t.Errorf("Failure(%d) = %q: want a distinct snake_case label", f, s)
		}
		labels[s] = true
	}
	if s := tlsterm.Failure(200).String(); s != "other" {
		t.Errorf("Failure(200) = %q", s)
	}
}

// TestFailureReasonUnwraps: the classification looks through wrapping.
func TestFailureReasonUnwraps(t *testing.T) {
	t.Parallel()
	tl := listen(t, nil, tlsterm.ListenerConfig{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		goClient(&tls.Config{RootCAs: x509.NewCertPool()})(t, tl)
	}()
	err := tl.next(t).err
	<-done
	a, ok := tlsalert.Received(err)
	if !ok || a != 42 || a.Error() != "tls: bad certificate" {
		t.Fatalf("tlsalert.Received = %v (%d), %v; want bad certificate", a, a, ok)
	}
	for _, wrapped := range []error{
		errors.Join(errors.New("first"), err),
		&net.OpError{Op: "read", Err: err},
	} {
		if got := tlsterm.FailureReason(wrapped); got != tlsterm.FailureClientRejectedCertificate {
			t.Errorf("FailureReason(%v) = %v", wrapped, got)
		}
	}
	// What we send is not what the peer sent.
	for _, e := range []error{tls.AlertError(42), &net.OpError{Op: "local error", Err: tls.AlertError(42)}, nil} {
		if a, ok := tlsalert.Received(e); ok {
			t.Errorf("tlsalert.Received(%v) = %v", e, a)
		}
	}
}

// TestListenerAccepts: a client that completes the handshake is reported
// and then accepted, with the configuration in force when it connected.
func TestListenerAccepts(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	certs := []*testpki.Leaf{ca.Server(t), ca.Server(t)}
	var current atomic.Pointer[tls.Config]
	config := func(leaf *testpki.Leaf) *tls.Config {
		return tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &leaf.TLS, nil })
	}
	current.Store(config(certs[0]))
	tl := listen(t, nil, tlsterm.ListenerConfig{Config: func() *tls.Config { return current.Load() }})
	for i, want := range certs {
		current.Store(config(want))
		c, err := tls.Dial("tcp", tl.addr, &tls.Config{RootCAs: ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		h := tl.next(t)
		if h.err != nil {
			t.Fatalf("reported failure: %v", h.err)
		}
		if h.conn.RemoteAddr().String() != c.LocalAddr().String() {
			t.Errorf("reported %v, want the client %v", h.conn.RemoteAddr(), c.LocalAddr())
		}
		sc := tl.nextConn(t)
		if !sc.ConnectionState().HandshakeComplete || sc.RemoteAddr().String() != c.LocalAddr().String() {
			t.Errorf("accepted %v, handshake complete %v", sc.RemoteAddr(), sc.ConnectionState().HandshakeComplete)
		}
		if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(want.Cert) {
			t.Errorf("connection %d: served certificate %v, want the one in force", i, got.SerialNumber)
		}
		sc.Write([]byte{7})
		var b [1]byte
		c.SetDeadline(time.Now().Add(smqtest.WaitFor))
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 7 {
			t.Errorf("read %v, %v", b, err)
		}
		sc.Close()
		c.Close()
	}
}

// TestListenerAdmit: Admit sees each connection first; one it refuses is
// closed at once, never handshaken nor reported.
func TestListenerAdmit(t *testing.T) {
	t.Parallel()
	refuse := errors.New("test: refused")
	admitted := make(chan net.Conn, 4)
	var refusing atomic.Bool
	tl := listen(t, nil, tlsterm.ListenerConfig{Admit: func(c net.Conn) error {
		admitted <- c
		if refusing.Load() {
			return refuse
		}
		return nil
	}})
	client := &tls.Config{RootCAs: tl.ca.Pool}

	refusing.Store(true)
	raw := dialTCP(t, tl.addr)
	if got, err := readAll(raw); err != nil || got != "" {
		t.Fatalf("refused connection: read %q, %v; want a close", got, err)
	}
	if c := <-admitted; c.RemoteAddr().String() != raw.LocalAddr().String() {
		t.Errorf("Admit saw %v, want the client %v", c.RemoteAddr(), raw.LocalAddr())
	}
	// A report would have come before the close the client saw.
	select {
	case h := <-tl.reported:
		t.Fatalf("a refused connection was reported: %v", h.err)
	default:
	}

	refusing.Store(false)
	c, err := tls.Dial("tcp", tl.addr, client)
	if err != nil {
		t.Fatalf("admitted connection: %v", err)
	}
	defer c.Close()
	if h := tl.next(t); h.err != nil {
		t.Fatal(h.err)
	}
	if a := <-admitted; a.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("Admit saw %v, want the client %v", a.RemoteAddr(), c.LocalAddr())
	}
	tl.nextConn(t).Close()
}

// TestListenerCloseEndsHandshakes: Close ends the handshakes in progress
// (and an Admit blocked on the connection) at once, reports none of them,
// and leaves no goroutine behind. Not parallel: the goroutine check sees
// those of every test running.
func TestListenerCloseEndsHandshakes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const silent = 3
	started := make(chan struct{}, silent)
	admitting := make(chan struct{}, 1)
	ca := testpki.NewCA(t)
	leaf := ca.Server(t)
	cfg := tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &leaf.TLS, nil })
	reported := make(chan error, silent+1)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var blockedConn atomic.Pointer[net.Conn]
	l := tlsterm.NewListener(inner, tlsterm.ListenerConfig{
		Config: func() *tls.Config {
			started <- struct{}{}
			return cfg
		},
		Timeout: func() time.Duration { return time.Hour }, // only Close can end them
		Admit: func(c net.Conn) error {
			if blockedConn.CompareAndSwap(nil, &c) {
				admitting <- struct{}{}
				_, err := c.Read(make([]byte, 1)) // a silent client: until Close
				return err
			}
			return nil
		},
		OnHandshake: func(_ net.Conn, err error) { reported <- err },
	})
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()

	var clients []net.Conn
	for range silent + 1 {
		c, err := net.DialTimeout("tcp", l.Addr().String(), smqtest.WaitFor)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	<-admitting
	for range silent {
		<-started
	}

	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(smqtest.WaitFor):
		t.Fatal("Close did not end the handshakes")
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		if got, err := readAll(c); err != nil || got != "" {
			t.Errorf("client %d: read %q, %v; want a close", i, got, err)
		}
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	select {
	case err := <-reported:
		t.Errorf("a handshake ended by Close was reported: %v", err)
	default:
	}
}

// TestListenerStalledHandshakesHoldNoSlot: clients that stop in the
// middle of their handshakes, more of them than there are handshake slots
// (after their ClientHello; or after the server's flight, never sending
// their Finished), hold up nobody: a good client's handshake completes
// at once, not after their (here ten-minute) timeouts.
func TestListenerStalledHandshakesHoldNoSlot(t *testing.T) {
	t.Parallel()
	tl := listen(t, nil, tlsterm.ListenerConfig{
		Timeout:     func() time.Duration { return 10 * time.Minute },
		OnHandshake: func(net.Conn, error) {},
	})
	cfg := &tls.Config{RootCAs: tl.ca.Pool, ServerName: "127.0.0.1"}
	stalled := 4*runtime.GOMAXPROCS(0) + 8 // more than the slots
	for i := range stalled {
		c := dialTCP(t, tl.addr)
		if i%2 == 0 {
			// Half a ClientHello.
			if _, err := c.Write([]byte{22, 3, 1, 0, 200, 1, 0, 0}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// A whole handshake from the client's side, whose Finished never
		// leaves: the server waits for it.
		tc := tls.Client(&writeOnce{Conn: c}, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
	}
	good := tls.Client(dialTCP(t, tl.addr), cfg)
	if err := good.Handshake(); err != nil {
		t.Fatalf("a good client behind %d stalled handshakes: %v", stalled, err)
	}
	if c := tl.nextConn(t); c == nil {
		t.Fatal("no connection accepted")
	}
}

// writeOnce is a connection whose writes after the first go nowhere.
type writeOnce struct {
	net.Conn
	wrote bool
}

func (c *writeOnce) Write(b []byte) (int, error) {
	if c.wrote {
		return len(b), nil
	}
	c.wrote = true
	return c.Conn.Write(b)
}
