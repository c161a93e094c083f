package cluster_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/cluster"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

func TestMain(m *testing.M) { smqtest.Main(m, 4) }

// start starts a node, closed when the test ends, logging to logs.
func start(t *testing.T, cfg cluster.Config, logs *smqtest.SyncBuffer) *cluster.Node {
	t.Helper()
	if logs != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := cluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// crosses checks that a message published on from reaches a subscriber
// on to: it publishes until one arrives, as the subscription needs a
// moment to reach the other node.
func crosses(t *testing.T, from, to *nats.Conn) {
	t.Helper()
	got := make(chan *nats.Msg, 64)
	sub, err := to.ChanSubscribe("test.cross", got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := to.Flush(); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(smqtest.WaitFor)
	for {
		if err := from.Publish("test.cross", []byte("hello")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if string(m.Data) != "hello" {
				t.Fatalf("got %q, want %q", m.Data, "hello")
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatal("no message crossed from one node to the other")
		}
	}
}

// nodeCert issues a node certificate for 127.0.0.1, usable both as a
// server and as a client certificate.
func nodeCert(t *testing.T, ca *testpki.CA, name string) certs.Source {
	t.Helper()
	l := ca.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	c := l.TLS
	return (*certs.Static)(&c)
}

func TestEmbeddedRoutes(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plain loopback", false}, {"mutual TLS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfgA := cluster.Config{Name: "node-a", Listen: "127.0.0.1:0"}
			if tc.tls {
				cfgA.Certificate, cfgA.CAs = nodeCert(t, ca, "node-a"), ca.Pool
			}
			a := start(t, cfgA, &smqtest.SyncBuffer{})
			addr := a.RouteAddr()
			if addr == nil {
				t.Fatal("no route address")
			}
			cfgB := cluster.Config{Name: "node-b", Listen: "127.0.0.1:0", Routes: []string{addr.String()}}
			if tc.tls {
				cfgB.Certificate, cfgB.CAs = nodeCert(t, ca, "node-b"), ca.Pool
			}
			b := start(t, cfgB, &smqtest.SyncBuffer{})
			smqtest.WaitUntil(t, "a route both ways", func() bool { return a.Routes() == 1 && b.Routes() == 1 })
			if !a.Connected() || !b.Connected() || !a.Embedded() {
				t.Fatal("nodes not connected to their servers")
			}
			crosses(t, a.Conn(), b.Conn())
			crosses(t, b.Conn(), a.Conn())
		})
	}
}

// TestWrongCA: a node whose certificate is from another CA forms no
// route, and the refusing node says why.
func TestWrongCA(t *testing.T) {
	t.Parallel()
	ca, other := testpki.NewCA(t), testpki.NewCA(t)
	logsA := &smqtest.SyncBuffer{}
	a := start(t, cluster.Config{Name: "node-a", Listen: "127.0.0.1:0",
		Certificate: nodeCert(t, ca, "node-a"), CAs: ca.Pool}, logsA)
	// It trusts node-a's CA, but its own certificate is not from it.
	c := start(t, cluster.Config{Name: "node-c", Listen: "127.0.0.1:0", Routes: []string{a.RouteAddr().String()},
		Certificate: nodeCert(t, other, "node-c"), CAs: ca.Pool}, &smqtest.SyncBuffer{})
	smqtest.WaitUntil(t, "node-a's log of the refused handshake", func() bool {
		return strings.Contains(logsA.String(), "level=WARN") && strings.Contains(logsA.String(), "TLS route handshake error")
	})
	if a.Routes() != 0 || c.Routes() != 0 {
		t.Fatalf("routes formed: node-a %d, node-c %d", a.Routes(), c.Routes())
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	taken := smqtest.Listen(t)
	for _, tc := range []struct {
		name string
		cfg  cluster.Config
		want string
	}{
		{"port taken", cluster.Config{Name: "n", Listen: taken.Addr().String()}, "listening on router port"},
		{"plain off loopback", cluster.Config{Name: "n", Listen: "0.0.0.0:0"}, "routes without TLS off loopback"},
		{"plain route off loopback", cluster.Config{Name: "n", Listen: "127.0.0.1:0", Routes: []string{"10.1.2.3:6222"}}, "routes without TLS off loopback"},
		{"routes without listen", cluster.Config{Name: "n", Routes: []string{"127.0.0.1:6222"}}, "no listen address"},
		{"both modes", cluster.Config{Name: "n", Listen: "127.0.0.1:0", NATS: []string{"nats://127.0.0.1:4222"}}, "choose one"},
		{"bad route", cluster.Config{Name: "n", Listen: "127.0.0.1:0", Routes: []string{"http://x:1"}}, `scheme "http"`},
		{"no name", cluster.Config{Listen: "127.0.0.1:0"}, "no node name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := cluster.Start(tc.cfg)
			if err == nil {
				n.Close()
				t.Fatal("started")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "cluster: ") {
				t.Fatalf("error %q, want one with %q", err, tc.want)
			}
		})
	}
}

// natsServer starts a NATS server listening for clients on loopback,
// with a user and password.
func natsServer(t *testing.T, user, password string) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(smqtest.WaitFor) {
		t.Fatal("NATS server not ready")
	}
	return ns.Addr().String()
}

func TestExternal(t *testing.T) {
	t.Parallel()
	const password = "s3cret-pa55"
	addr := natsServer(t, "smqgw", password)
	a := start(t, cluster.Config{Name: "node-a", NATS: []string{"nats://smqgw:" + password + "@" + addr}}, &smqtest.SyncBuffer{})
	b := start(t, cluster.Config{Name: "node-b", NATS: []string{"nats://smqgw:" + password + "@" + addr}}, &smqtest.SyncBuffer{})
	if a.Embedded() || a.Routes() != 0 || a.RouteAddr() != nil || !a.Connected() {
		t.Fatalf("external node: embedded %v, routes %d, connected %v", a.Embedded(), a.Routes(), a.Connected())
	}
	crosses(t, a.Conn(), b.Conn())

	t.Run("wrong password", func(t *testing.T) {
		logs := &smqtest.SyncBuffer{}
		const wrong = "not-the-pa55word"
		n, err := cluster.Start(cluster.Config{Name: "node-x", ConnectTimeout: 5 * time.Second,
			NATS:   []string{"nats://smqgw:" + wrong + "@" + addr},
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err == nil {
			n.Close()
			t.Fatal("connected with a wrong password")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("error %q is not nats.ErrAuthorization", err)
		}
		for what, text := range map[string]string{"error": err.Error(), "log": logs.String()} {
			if strings.Contains(text, wrong) {
				t.Errorf("the password is in the %s: %s", what, text)
			}
		}
		if !strings.Contains(err.Error(), "nats://smqgw:xxxxx@"+addr) {
			t.Errorf("error %q does not name the redacted URL", err)
		}
	})
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://u:p@h:4222":      "nats://u:xxxxx@h:4222",
		"nats://token@h:4222":    "nats://xxxxx@h:4222",
		"nats://h:4222":          "nats://h:4222",
		"tls://u:p@a@h:4222/x@y": "tls://u:xxxxx@h:4222/x@y",
	} {
		if got := cluster.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRouteTLSBothWays(t *testing.T) {
	ca := testpki.NewCA(t)
	tc := cluster.RouteTLS(nodeCert(t, ca, "n"), ca.Pool)
	if tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.GetClientCertificate == nil || tc.GetCertificate == nil {
		t.Fatal("route TLS does not verify both ways")
	}
	c, err := tc.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil || c == nil {
		t.Fatalf("no client certificate: %v", err)
	}
}

// TestDevNodeCertificates: node certificates from the dev PKI (what
// `smqgw certs node` makes), loaded as a [certs.NAME] block and a ca file
// are, form mutual-TLS routes; one not issued for the address the other
// node routes to does not.
func TestDevNodeCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := certs.EnsureDev(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	cas, _, err := certs.LoadCAs(filepath.Join(dir, certs.DevCAFile))
	if err != nil {
		t.Fatal(err)
	}
	node := func(t *testing.T, name string, hosts ...string) certs.Source {
		t.Helper()
		f, err := certs.IssueNode(dir, name, certs.NodeOptions{Hosts: hosts})
		if err != nil {
			t.Fatal(err)
		}
		src, err := certs.NewFiles(certs.Pair{CertFile: f.CertFile, KeyFile: f.KeyFile})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}

	t.Run("routes form", func(t *testing.T) {
		t.Parallel()
		a := start(t, cluster.Config{Name: "node-a", Listen: "127.0.0.1:0",
			Certificate: node(t, "node-a", "127.0.0.1", "node-a.test"), CAs: cas}, &smqtest.SyncBuffer{})
		b := start(t, cluster.Config{Name: "node-b", Listen: "127.0.0.1:0", Routes: []string{a.RouteAddr().String()},
			Certificate: node(t, "node-b", "127.0.0.1"), CAs: cas}, &smqtest.SyncBuffer{})
		smqtest.WaitUntil(t, "a route both ways", func() bool { return a.Routes() == 1 && b.Routes() == 1 })
		crosses(t, a.Conn(), b.Conn())
		crosses(t, b.Conn(), a.Conn())
	})

	// node-d routes to 127.0.0.1, which node-c's certificate does not name.
	t.Run("without the route address", func(t *testing.T) {
		t.Parallel()
		c := start(t, cluster.Config{Name: "node-c", Listen: "127.0.0.1:0",
			Certificate: node(t, "node-c", "10.0.0.3"), CAs: cas}, &smqtest.SyncBuffer{})
		logsD := &smqtest.SyncBuffer{}
		d := start(t, cluster.Config{Name: "node-d", Listen: "127.0.0.1:0", Routes: []string{c.RouteAddr().String()},
			Certificate: node(t, "node-d", "127.0.0.1"), CAs: cas}, logsD)
		smqtest.WaitUntil(t, "node-d's log of the refused certificate", func() bool {
			return strings.Contains(logsD.String(), "level=WARN") &&
				strings.Contains(logsD.String(), "certificate is valid for 10.0.0.3, not 127.0.0.1")
		})
		if c.Routes() != 0 || d.Routes() != 0 {
			t.Fatalf("routes formed: node-c %d, node-d %d", c.Routes(), d.Routes())
		}
	})
}
