package app_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

// clusterNode is one smqgw process of TestClusterThreeNodes.
type clusterNode struct {
	name string
	*apptest.Process
}

// Route addresses of the three nodes: a port of its own on loopback
// addresses no other test uses, so that every node's configuration can
// name all three before any starts.
var clusterRoutes = []string{"127.1.9.1:16222", "127.1.9.2:16222", "127.1.9.3:16222"}

// startClusterNodes starts three smqgw processes, each with the embedded
// broker as one node of a cluster ([cluster], routes to all three on
// loopback), a plain listener "lan" and a TLS listener "mtls" that asks for
// client certificates of ca (optional), and waits until each counts the
// other two as peers (smqgw_cluster_peers).
func startClusterNodes(t *testing.T, ca *testpki.CA) []*clusterNode {
	t.Helper()
	bin := apptest.Binary(t)
	server := ca.Server(t, "127.0.0.1")
	routes := `"` + strings.Join(clusterRoutes, `", "`) + `"`
	var nodes []*clusterNode
	for i, name := range []string{"node-a", "node-b", "node-c"} {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`state_dir = %q

[admin]
address = "127.0.0.1:0"

[cluster]
name = %q
listen = %q
routes = [%s]
heartbeat = "100ms"
peer_timeout = "3s"

[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "embedded"

[[listener]]
name = "mtls"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/"
  upstream = "embedded"
  client_auth = "optional"
  client_ca = [%q]

[certs.files]
cert_file = %q
key_file = %q
`, filepath.Join(dir, "state"), name, clusterRoutes[i], routes, ca.CertFile, server.CertFile, server.KeyFile)
		file := filepath.Join(dir, "smqgw.toml")
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &clusterNode{name: name, Process: apptest.StartProcess(t, bin, file, "lan", "mtls")})
	}
	for _, n := range nodes {
		n.waitMetric(t, "smqgw_cluster_peers", 2)
	}
	return nodes
}

// metric returns the value of an unlabelled metric the node exports, -1 if
// it does not.
func (n *clusterNode) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.Addrs["admin"] + "/metrics")
	if err != nil {
		return -1 // killed, or not yet up
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %s: %v", n.name, name, err)
			}
			return f
		}
	}
	return -1
}

func (n *clusterNode) waitMetric(t *testing.T, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(smqtest.WaitFor)
	for got := n.metric(t, name); got != want; got = n.metric(t, name) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s is %v, want %v", n.name, name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// raw and ws connect to a node's plain listener as the C client and a
// browser do, and log in.
func (n *clusterNode) raw(t *testing.T, uid string) *smqtest.Conn {
	t.Helper()
	return smqtest.Connect(t, n.Addrs["lan"], uid)
}

func (n *clusterNode) ws(t *testing.T, uid string) *smqtest.Conn {
	t.Helper()
	return smqtest.ConnectWS(t, n.Addrs["lan"], uid)
}

// device connects to a node's mtls listener over WebSocket with leaf's
// certificate and logs in with uid; it returns the ETID.
func (n *clusterNode) device(t *testing.T, ca *testpki.CA, leaf *testpki.Leaf, uid string) *smqtest.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: smqtest.DefaultTimeout, TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{leaf.TLS}}}
	ws, _, err := d.Dial("wss://"+n.Addrs["mtls"]+"/", nil)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	c := smqtest.NewWS(t, ws)
	c.ReadInit()
	c.Login(uid)
	return c
}

func numbered(i int) []byte { return binary.BigEndian.AppendUint32([]byte("n"), uint32(i)) }

// TestClusterThreeNodes runs three smqgw processes as one SMQ broker
// ([cluster], embedded NATS routed on loopback) and clients of the shapes
// the reference clients have, raw (as the C client) and WebSocket (as
// smq.js), on different nodes: pub/sub both ways in publisher order,
// one-to-one across nodes with a reply to the ptid, cluster-wide observe
// counts, a takeover across nodes that keeps the identity binding (the
// same certificate takes its session over on another node; another
// certificate with the same UID does not), and a node killed (SIGKILL)
// mid-stream: the others lose nothing and keep the order, its clients are
// closed without an SMQ refusal and are back on another node, and counts
// converge.
func TestClusterThreeNodes(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	nodes := startClusterNodes(t, ca)
	a, b, c := nodes[0], nodes[1], nodes[2]

	// Pub/sub both ways.
	pub := a.raw(t, "publisher-a")
	subB := b.raw(t, "subscriber-b")
	subC := c.ws(t, "subscriber-c")
	tidB := subB.Subscribe("plant/line-1")
	tidC := subC.Subscribe("plant/line-1")
	tidA := pub.Create("plant/line-1")
	const n = 1000
	for i := range n {
		pub.Publish(tidA, 0, numbered(i))
	}
	for i := range n {
		subB.Expect(smqtest.PublishMsg(tidB, pub.ETID, 0, numbered(i)))
		subC.Expect(smqtest.PublishMsg(tidC, pub.ETID, 0, numbered(i)))
	}
	back := pub.Subscribe("plant/commands")
	cmd := subC.Create("plant/commands")
	subC.Publish(cmd, 0, []byte("stop line 1"))
	pub.Expect(smqtest.PublishMsg(back, subC.ETID, 0, []byte("stop line 1")))

	// One-to-one across nodes, and the reply to the ptid.
	subB.Publish(subC.ETID, 0, []byte("ping from b"))
	got := subC.Expect(smqtest.PublishMsg(subC.ETID, subB.ETID, 0, []byte("ping from b")))
	subC.Publish(smq.PTID(got), 0, []byte("pong from c"))
	subB.Expect(smqtest.PublishMsg(subB.ETID, subC.ETID, 0, []byte("pong from c")))

	// Counts are the cluster's.
	obs := a.raw(t, "observer-a")
	otid := obs.Create("plant/line-1")
	obs.Send(smq.Observe{ID: otid})
	obs.ExpectRaw(smqtest.ChangeRaw(otid, 2))
	extra := b.ws(t, "subscriber-b2")
	extra.Subscribe("plant/line-1")
	obs.ExpectRaw(smqtest.ChangeRaw(otid, 3))
	extra.Send(smq.Disconnect{})
	obs.ExpectRaw(smqtest.ChangeRaw(otid, 2))

	// Takeover across nodes, identity binding kept.
	dev1, dev2 := ca.Client(t, "device-1"), ca.Client(t, "device-2")
	first := b.device(t, ca, dev1, "sensor-0001")
	impostor := a.device(t, ca, dev2, "sensor-0001")
	if impostor.ETID == first.ETID {
		t.Fatalf("another certificate with the device's UID got its ETID %#x on another node", first.ETID)
	}
	first.Barrier() // undisturbed
	second := c.device(t, ca, dev1, "sensor-0001")
	if second.ETID != first.ETID {
		t.Errorf("the device on another node got ETID %#x, want its %#x", second.ETID, first.ETID)
	}
	first.ExpectDisconnect("reconnect")
	pub.Publish(second.ETID, 0, []byte("for the device"))
	second.Expect(smqtest.PublishMsg(second.ETID, pub.ETID, 0, []byte("for the device")))
	impostor.Barrier()

	// Node c killed mid-stream.
	obs.Send(smq.Observe{ID: subC.ETID})
	obs.Barrier()
	const m = 3000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range m {
			subB.Expect(smqtest.PublishMsg(tidB, pub.ETID, 0, numbered(i)))
		}
	})
	for i := range m {
		pub.Publish(tidA, 0, numbered(i))
		if i == m/3 {
			c.Kill()
		}
	}
	wg.Wait()
	for { // what reached node c's client before, then the end: no refusal
		f, err := subC.ReadFrame(smqtest.WaitFor)
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				t.Fatalf("node c's client was closed with %v, not cut off", err)
			}
			break
		}
		if smq.Type(f.Msg[0]) != smq.TypePublish {
			t.Fatalf("node c's client got %s as its node died", smqtest.Describe(f.Msg))
		}
	}
	expectChangesAnyOrder(t, obs, smqtest.ChangeRaw(otid, 1), smqtest.ChangeRaw(subC.ETID, 0))
	a.waitMetric(t, "smqgw_cluster_peers", 1)
	b.waitMetric(t, "smqgw_cluster_peers", 1)

	// Its clients come back on another node.
	again := b.ws(t, "subscriber-c")
	again.Subscribe("plant/line-1")
	obs.ExpectRaw(smqtest.ChangeRaw(otid, 2))
	pub.Publish(tidA, 0, []byte("after"))
	subB.Expect(smqtest.PublishMsg(tidB, pub.ETID, 0, []byte("after")))
	dev := a.device(t, ca, dev1, "sensor-0001")
	if dev.ETID == 0 {
		t.Fatal("the device got no ETID back on another node")
	}
	dev.Barrier()
}

// expectChangesAnyOrder expects the raw Change frames want, in any order.
func expectChangesAnyOrder(t *testing.T, c *smqtest.Conn, want ...[]byte) {
	t.Helper()
	for range want {
		f := c.ReadFull()
		found := -1
		for i, w := range want {
			if string(w) == string(f.Raw) {
				found = i
			}
		}
		if found < 0 {
			t.Fatalf("got %s, want one of %d Changes", smqtest.Describe(f.Msg), len(want))
		}
		want = append(want[:found], want[found+1:]...)
	}
}
