package app_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// clusterMetric returns the value of smqgw_cluster_NAME{label}, as metric.
func clusterMetric(t *testing.T, b *apptest.Running, name, label string) float64 {
	t.Helper()
	return metric(t, b, "smqgw_cluster_"+name, label)
}

// TestCluster: two gateways with [cluster] route to each other with
// mutual TLS and make one broker (a message crosses each way), report the
// smqgw_cluster_* metrics, keep the node across a
// reload that changes [cluster] (saying it needs a restart), and close it
// on shutdown.
func TestCluster(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	node := func(name string) *testpki.Leaf {
		return ca.Issue(t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: name},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		})
	}
	conf := func(leaf *testpki.Leaf, name, routes, extra string) string {
		return "watch_interval = \"50ms\"\n" + brokerListener + apptest.CertFiles(leaf) + fmt.Sprintf(
			"[cluster]\nname = %q\nlisten = \"127.0.0.1:0\"\nroutes = [%s]\ntls = \"files\"\nca = %q\n%s",
			name, routes, ca.CertFile, extra)
	}
	// routeCert is the certificate a node presents on its route port.
	probe := node("probe")
	routeCert := func(addr string) *x509.Certificate {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{probe.TLS}})
		if err != nil {
			t.Fatalf("route handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	dirA := t.TempDir()
	fast := "heartbeat = \"100ms\"\npeer_timeout = \"1s\"\n" // b's end is seen at once
	a := apptest.Start(t, dirA, conf(node("gw-a"), "gw-a", "", fast))
	na := a.ClusterNode()
	if na == nil || na.RouteAddr() == nil {
		t.Fatal("no cluster node")
	}
	b := apptest.Start(t, t.TempDir(), conf(node("gw-b"), "gw-b", fmt.Sprintf("%q", na.RouteAddr().String()), fast))
	smqtest.WaitUntil(t, "a route both ways", func() bool {
		return clusterMetric(t, a, "routes", "") == 1 && clusterMetric(t, b, "routes", "") == 1
	})
	for _, gw := range []*apptest.Running{a, b} {
		for _, m := range []struct{ name, label string }{
			{"peers", ""}, {"messages_total", "direction=in"}, {"messages_total", "direction=out"},
			{"dropped_total", ""}, {"pending", ""}, {"takeovers_total", "direction=in"},
			{"takeovers_total", "direction=out"}, {"peers_lost_total", ""}, {"request_timeouts_total", ""},
			{"barriers_total", ""},
		} {
			clusterMetric(t, gw, m.name, m.label) // present
		}
		if got := clusterMetric(t, gw, "connected", ""); got != 1 {
			t.Errorf("smqgw_cluster_connected = %v, want 1", got)
		}
	}
	// One broker: a client of each gateway, a message each way.
	smqtest.WaitUntil(t, "each node hears from the other", func() bool {
		return clusterMetric(t, a, "peers", "") == 1 && clusterMetric(t, b, "peers", "") == 1
	})
	ctx := smqtest.Context(t)
	clients := make([]*client.Client, 2)
	for i, gw := range []*apptest.Running{a, b} {
		c, err := client.Dial(ctx, "ws://"+gw.GW.Addr("lan").String()+"/", client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	apptest.PubSub(t, clients[0], clients[1])
	apptest.PubSub(t, clients[1], clients[0])
	for _, gw := range []*apptest.Running{a, b} {
		for _, dir := range []string{"in", "out"} {
			if got := clusterMetric(t, gw, "messages_total", "direction="+dir); got < 1 {
				t.Errorf("smqgw_cluster_messages_total{direction=%q} = %v, want at least 1", dir, got)
			}
		}
	}
	if log := a.Logs.String(); !strings.Contains(log, "cluster node started") || !strings.Contains(log, "node=gw-a") ||
		!strings.Contains(log, "mode=embedded") {
		t.Errorf("no start line naming the node:\n%s", log)
	}

	// A reload that changes [cluster]: the node stays, and the log says
	// the change needs a restart.
	reloaded := node("gw-a")
	apptest.WriteFile(t, filepath.Join(dirA, "smqgw.toml"), []byte(conf(reloaded, "gw-a", "", "heartbeat = \"2s\"\npeer_timeout = \"9s\"\n")))
	a.Server.Reload()
	if log := a.Logs.String(); !strings.Contains(log, "configuration reloaded") || !strings.Contains(log, "needs a restart") ||
		!strings.Contains(log, "[cluster]") {
		t.Fatalf("no restart note for [cluster]:\n%s", log)
	}
	if a.Server.Built().ClusterNode() != na || a.Server.Config().Cluster.Heartbeat != 100*time.Millisecond {
		t.Error("the reload replaced the node or its settings")
	}
	if clusterMetric(t, a, "routes", "") != 1 {
		t.Error("route lost over the reload")
	}
	// The route certificate comes from the reloaded [certs] block, whose
	// files are watched: a new certificate in them is presented next.
	if got := routeCert(na.RouteAddr().String()); !got.Equal(reloaded.Cert) {
		t.Errorf("route certificate after the reload: serial %v, want %v", got.SerialNumber, reloaded.Cert.SerialNumber)
	}
	renewed := node("gw-a")
	apptest.WriteFile(t, reloaded.KeyFile, renewed.KeyPEM)
	apptest.WriteFile(t, reloaded.CertFile, renewed.CertPEM)
	smqtest.WaitUntil(t, "the renewed route certificate", func() bool {
		return routeCert(na.RouteAddr().String()).Equal(renewed.Cert)
	})

	// Shutting b down closes its node: a loses the route.
	b.Stop()
	if b.ClusterNode().Connected() {
		t.Error("b's node still connected after shutdown")
	}
	smqtest.WaitUntil(t, "a's route to b gone, and b no longer a peer", func() bool {
		return clusterMetric(t, a, "routes", "") == 0 && clusterMetric(t, a, "peers", "") == 0
	})
}

// TestClusterExternal: a gateway joins an existing NATS with a password in
// the URL; the password is in no log line, and the node reports connected.
func TestClusterExternal(t *testing.T) {
	t.Parallel()
	const password = "pa55-in-url"
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Username: "gw", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(smqtest.WaitFor) {
		t.Fatal("NATS server not ready")
	}
	url := fmt.Sprintf("nats://gw:%s@%s", password, ns.Addr())
	r := apptest.Start(t, t.TempDir(), brokerListener+fmt.Sprintf("[log]\nlevel = \"debug\"\n[cluster]\nname = \"gw-x\"\nnats = [%q]\n", url))
	if got := clusterMetric(t, r, "connected", ""); got != 1 {
		t.Errorf("smqgw_cluster_connected = %v, want 1", got)
	}
	if got := clusterMetric(t, r, "routes", ""); got != 0 {
		t.Errorf("smqgw_cluster_routes = %v, want 0 with an external NATS", got)
	}
	r.Stop()
	log := r.Logs.String()
	if !strings.Contains(log, "mode=external") || !strings.Contains(log, "gw:xxxxx@") {
		t.Errorf("no start line with the redacted URL:\n%s", log)
	}
	if strings.Contains(log, password) {
		t.Errorf("the password is in the log:\n%s", log)
	}
	if strings.Contains(log, "lost the connection") {
		t.Errorf("shutdown logged as a lost connection:\n%s", log)
	}
}
