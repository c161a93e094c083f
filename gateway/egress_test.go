package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

// cloudGateway is a second smqgw standing in for a cloud broker: TLS,
// client certificates of clientCA required, the embedded broker behind.
func cloudGateway(t *testing.T, ca, clientCA *testpki.CA) string {
	t.Helper()
	server := ca.Server(t, "127.0.0.1", "cloud.test")
	cloud := apptest.Start(t, t.TempDir(), fmt.Sprintf(`
[[listener]]
name = "cloud"
address = "127.0.0.1:0"
tls = "files"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
  client_auth = "require"
  client_ca = [%q]
  allow_cn = ["gateway-*"]
`, clientCA.CertFile)+apptest.CertFiles(server))
	return cloud.GW.Addr("cloud").String()
}

// TestTLSUpstreamWithClientCertificate is the egress path without a
// proxy: a plaintext device, a gateway that goes out over TLS with its own
// client certificate, and a cloud endpoint that requires it.
func TestTLSUpstreamWithClientCertificate(t *testing.T) {
	t.Parallel()
	ca, clientCA := testpki.NewCA(t), testpki.NewCA(t)
	cloudAddr := cloudGateway(t, ca, clientCA)
	gwCert := clientCA.Client(t, "gateway-1")
	strangerCert := testpki.NewCA(t).Client(t, "gateway-2")

	// A TLS endpoint that refuses certificates in the handshake, as a
	// broker with TLS client authentication does.
	strict, err := tls.Listen("tcp", "127.0.0.1:0", ca.Server(t, "127.0.0.1").ServerConfig(clientCA.Pool))
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	go func() {
		for {
			c, err := strict.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()

	edge := apptest.Start(t, t.TempDir(), fmt.Sprintf(`
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/good"
  upstream = "cloud"
  [[listener.route]]
  path = "/nocert"
  upstream = "nocert"
  [[listener.route]]
  path = "/stranger"
  upstream = "stranger"
  [[listener.route]]
  path = "/strict"
  upstream = "strict"
[upstream.cloud]
urls = ["wss://127.0.0.1:%[2]s/smq"]
server_name = "cloud.test"
ca_file = %[1]q
cert_file = %[3]q
key_file = %[4]q
[upstream.nocert]
urls = ["https://127.0.0.1:%[2]s/smq"]
ca_file = %[1]q
[upstream.stranger]
urls = ["https://127.0.0.1:%[2]s/smq"]
ca_file = %[1]q
cert_file = %[5]q
key_file = %[6]q
[upstream.strict]
urls = ["https://%[7]s/smq"]
ca_file = %[1]q
`, ca.CertFile, portOf(cloudAddr), gwCert.CertFile, gwCert.KeyFile, strangerCert.CertFile, strangerCert.KeyFile, strict.Addr()))
	lan := edge.GW.Addr("lan").String()

	dial := func(path string) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		c, err := client.Dial(ctx, "http://"+lan+path, client.Options{})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	// Two plaintext devices meet through the edge and the cloud.
	a, err := dial("/good")
	if err != nil {
		t.Fatalf("through a TLS upstream with the gateway's certificate: %v", err)
	}
	b, err := dial("/good")
	if err != nil {
		t.Fatal(err)
	}
	apptest.PubSub(t, a, b)
	// The cloud gateway answers Connect with 0x04/0x05: that Connack is
	// the upstream's, relayed unchanged. A TLS alert is the gateway's
	// certificate refused: 0x02.
	for _, tc := range []struct {
		path   string
		code   smq.ConnackCode
		reason string
	}{
		{"/nocert", smq.CodeCertRequired, "client certificate required"},
		{"/stranger", smq.CodeCertNotAccepted, "certificate signed by an unknown authority"},
		{"/strict", smq.CodeServerUnavailable, "upstream strict refused the gateway's certificate"},
	} {
		_, err := dial(tc.path)
		var re *client.RefusedError
		if !errors.As(err, &re) || re.Code != tc.code || !strings.HasPrefix(re.Reason, tc.reason) {
			t.Errorf("%s: %v, want %v %q", tc.path, err, tc.code, tc.reason)
		}
	}
	smqtest.WaitUntil(t, "a log line naming the refusal", func() bool {
		return strings.Contains(edge.Logs.String(), "reason=gateway_cert_refused")
	})
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestEgressThroughProxies is issue 5's deployment: a plaintext device, the
// gateway's plain listener, an HTTP CONNECT or SOCKS5 proxy (the real
// tinyproxy and microsocks), and a TLS endpoint that requires the
// gateway's client certificate.
func TestEgressThroughProxies(t *testing.T) {
	t.Parallel()
	ca, clientCA := testpki.NewCA(t), testpki.NewCA(t)
	cloudAddr := cloudGateway(t, ca, clientCA)
	gwCert := clientCA.Client(t, "gateway-1")
	type proxyCase struct {
		name  string
		proxy *proxytest.Proxy
	}
	auth := proxytest.Options{User: "gw", Password: "s3cret"}
	proxies := []proxyCase{
		{"tinyproxy", proxytest.StartTinyproxy(t, proxytest.Options{})},
		{"tinyproxy-auth", proxytest.StartTinyproxy(t, auth)},
		{"microsocks", proxytest.StartMicrosocks(t, proxytest.Options{})},
		{"microsocks-auth", proxytest.StartMicrosocks(t, auth)},
	}
	var cfg, upstreams strings.Builder
	cfg.WriteString("[[listener]]\nname = \"lan\"\naddress = \"127.0.0.1:0\"\n")
	upstreamBlock := func(name, scheme, proxy string) {
		fmt.Fprintf(&cfg, "  [[listener.route]]\n  path = \"/%s\"\n  upstream = %q\n  temporary_failures = \"refuse\"\n", name, name)
		fmt.Fprintf(&upstreams, "[upstream.%s]\nurls = [\"%s://127.0.0.1:%s/smq\"]\nproxy = %q\nca_file = %q\ncert_file = %q\nkey_file = %q\ndial_timeout = \"5s\"\n",
			name, scheme, portOf(cloudAddr), proxy, ca.CertFile, gwCert.CertFile, gwCert.KeyFile)
	}
	for i, p := range proxies {
		scheme := []string{"https", "wss"}[i%2]
		upstreamBlock(p.name, scheme, p.proxy.URL.String())
		if p.proxy.URL.User != nil {
			bad := *p.proxy.URL
			bad.User = url.UserPassword("gw", "wrong")
			upstreamBlock(p.name+"-wrong", scheme, bad.String())
		}
	}
	cfg.WriteString(upstreams.String())

	edge := apptest.Start(t, t.TempDir(), cfg.String())
	lan := edge.GW.Addr("lan").String()
	dialAs := func(scheme, path string) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
		defer cancel()
		c, err := client.Dial(ctx, scheme+"://"+lan+path, client.Options{})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	dial := func(path string) (*client.Client, error) { return dialAs("http", path) }
	for _, p := range proxies {
		t.Run(p.name, func(t *testing.T) {
			// A raw device and a WebSocket one meet in the cloud.
			a, err := dial("/" + p.name)
			if err != nil {
				t.Fatalf("device through %s: %v\nproxy log:\n%s", p.name, err, p.proxy.Log())
			}
			b, err := dialAs("ws", "/"+p.name)
			if err != nil {
				t.Fatal(err)
			}
			apptest.PubSub(t, a, b)
			if log := p.proxy.Log(); !strings.Contains(log, portOf(cloudAddr)) {
				t.Errorf("the proxy's log does not show the tunnel to port %s:\n%s", portOf(cloudAddr), log)
			}
			if p.proxy.URL.User == nil {
				return
			}
			_, err = dial("/" + p.name + "-wrong")
			var re *client.RefusedError
			want := "upstream " + p.name + "-wrong unavailable: proxy authentication required (credentials rejected)"
			if !errors.As(err, &re) || re.Code != smq.CodeServerUnavailable || re.Reason != want {
				t.Errorf("wrong proxy password: %v, want 0x02 %q", err, want)
			}
		})
	}
}

// TestEgressNoProxy: an upstream with proxy = "env" takes its proxy from
// the environment, which names one that is not there, and NO_PROXY exempts
// the cloud's address from it.
func TestEgressNoProxy(t *testing.T) {
	ca, clientCA := testpki.NewCA(t), testpki.NewCA(t)
	cloudAddr := cloudGateway(t, ca, clientCA)
	gwCert := clientCA.Client(t, "gateway-1")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("NO_PROXY", "localhost,127.0.0.0/8")
	edge := apptest.Start(t, t.TempDir(), fmt.Sprintf(`
[[listener]]
name = "lan"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/"
  upstream = "noproxy"
[upstream.noproxy]
urls = ["https://127.0.0.1:%s/smq"]
proxy = "env"
ca_file = %q
cert_file = %q
key_file = %q
`, portOf(cloudAddr), ca.CertFile, gwCert.CertFile, gwCert.KeyFile))
	ctx, cancel := context.WithTimeout(context.Background(), smqtest.WaitFor)
	defer cancel()
	c, err := client.Dial(ctx, "http://"+edge.GW.Addr("lan").String()+"/", client.Options{})
	if err != nil {
		t.Fatalf("NO_PROXY bypass: %v", err)
	}
	defer c.Close()
	apptest.PubSub(t, c, c)
}
