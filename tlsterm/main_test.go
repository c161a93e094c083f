package tlsterm_test

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/tlsterm"
)

// TestMain checks that every test server and connection goroutine ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is what the test server saw on one connection.
type result struct {
	decision tlsterm.Decision
	state    tls.ConnectionState
	err      error // the handshake's, as the Listener reported it
}

// server is a tlsterm.Listener on a loopback port, configured by
// tlsterm.ServerConfig, that runs the current Policy on every connection
// whose handshake succeeded, reports the result (or the handshake's
// failure), and writes the decision's code as one byte before closing.
type server struct {
	addr    string
	ca      *testpki.CA // issued the server certificate: the clients' RootCAs
	policy  atomic.Pointer[tlsterm.Policy]
	results chan result
}

// startServer starts a server with policy p. It stops, and all its
// goroutines are reaped, when the test ends.
func startServer(t *testing.T, p *tlsterm.Policy) *server {
	t.Helper()
	s := &server{ca: testpki.NewCA(t), results: make(chan result, 16)}
	s.policy.Store(p)
	cert := s.ca.Server(t)
	cfg := tlsterm.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert.TLS, nil })
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := tlsterm.NewListener(inner, tlsterm.ListenerConfig{
		Config:  func() *tls.Config { return cfg },
		Timeout: func() time.Duration { return smqtest.WaitFor },
		OnHandshake: func(_ net.Conn, err error) {
			if err != nil {
				s.results <- result{err: err}
			}
		},
	})
	s.addr = l.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.handle(c.(*tls.Conn)) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return s
}

func (s *server) handle(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(smqtest.WaitFor))
	cs := c.ConnectionState()
	d := s.policy.Load().Check(&cs, time.Now())
	s.results <- result{decision: d, state: cs}
	c.Write([]byte{byte(d.Code)})
}

// next returns what the server saw on its next connection.
func (s *server) next(t *testing.T) result {
	t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(smqtest.WaitFor):
		t.Fatal("test server reported nothing")
		return result{}
	}
}

// clientOpts says how a test client connects.
type clientOpts struct {
	cert       *tls.Certificate // sent whatever the server asks; nil sends none
	version    uint16           // exact TLS version; 0 for Go's default range
	cache      tls.ClientSessionCache
	nextProtos []string
}

// dial connects to s, completes the handshake, and returns the code byte the
// server answered and the client's view of the connection. The handshake
// must succeed whatever certificate the client sends.
func (s *server) dial(t *testing.T, o clientOpts) (smq.ConnackCode, tls.ConnectionState) {
	t.Helper()
	cfg := &tls.Config{
		RootCAs:            s.ca.Pool,
		MinVersion:         o.version,
		MaxVersion:         o.version,
		ClientSessionCache: o.cache,
		NextProtos:         o.nextProtos,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if o.cert == nil {
				return &tls.Certificate{}, nil
			}
			return o.cert, nil
		},
	}
	d := net.Dialer{Timeout: smqtest.WaitFor}
	c, err := tls.DialWithDialer(&d, "tcp", s.addr, cfg)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(smqtest.WaitFor))
	var b [1]byte
	// Reading also processes TLS 1.3 session tickets, and surfaces a
	// server-side handshake failure that TLS 1.3 hides from the client's
	// Handshake.
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("client read: %v", err)
	}
	return smq.ConnackCode(b[0]), c.ConnectionState()
}

// versions are the TLS versions every policy case runs over.
var versions = []struct {
	name string
	v    uint16
}{
	{"TLS1.2", tls.VersionTLS12},
	{"TLS1.3", tls.VersionTLS13},
}

func mustPolicy(t testing.TB, cfg tlsterm.PolicyConfig) *tlsterm.Policy {
	t.Helper()
	p, err := tlsterm.NewPolicy(cfg)
	if err != nil {
		t.Fatalf("NewPolicy: %v", err)
	}
	return p
}
