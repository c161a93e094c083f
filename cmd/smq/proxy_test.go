package main

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// TestPubThroughProxy runs `smq pub -proxy ...` through the real tinyproxy
// and microsocks, with and without authentication, to a TLS broker, and
// checks a subscriber connected directly gets the message; a wrong password
// is an error that says so.
func TestPubThroughProxy(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	addr := startBroker(t, broker.Config{}, ca)
	brokerURL := "wss://" + addr + "/smq"
	auth := proxytest.Options{User: "dev", Password: "pa55"}
	for _, tc := range []struct {
		name  string
		proxy *proxytest.Proxy
	}{
		{"tinyproxy", proxytest.StartTinyproxy(t, proxytest.Options{})},
		{"tinyproxy-auth", proxytest.StartTinyproxy(t, auth)},
		{"microsocks", proxytest.StartMicrosocks(t, proxytest.Options{})},
		{"microsocks-auth", proxytest.StartMicrosocks(t, auth)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			sub, err := client.Dial(ctx, brokerURL, client.Options{RootCAs: ca.Pool})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			got := make(chan string, 1)
			topic := "proxy/" + tc.name
			if _, err := sub.Subscribe(ctx, topic, func(m *client.Message) {
				select {
				case got <- string(m.Payload):
				default:
				}
			}); err != nil {
				t.Fatal(err)
			}
			pub := cli(ctx, "", "pub", "-url", brokerURL, "-ca", ca.CertFile, "-proxy", tc.proxy.URL.String(),
				"-topic", topic, "-m", "via "+tc.name)
			if pub.code != 0 {
				t.Fatalf("smq pub -proxy: %+v\nproxy log:\n%s", pub, tc.proxy.Log())
			}
			if m := recv(t, got, "the message"); m != "via "+tc.name {
				t.Errorf("received %q", m)
			}
			if !strings.Contains(tc.proxy.Log(), portOf(addr)) {
				t.Errorf("the proxy's log does not show the tunnel:\n%s", tc.proxy.Log())
			}
			if tc.proxy.URL.User == nil {
				return
			}
			bad := *tc.proxy.URL
			bad.User = url.UserPassword("dev", "wrong")
			pub = cli(ctx, "", "pub", "-url", brokerURL, "-ca", ca.CertFile, "-proxy", bad.String(), "-topic", topic, "-m", "x")
			if pub.code == 0 || !strings.Contains(pub.stderr, "proxy authentication required (credentials rejected)") {
				t.Errorf("wrong proxy password: %+v", pub)
			}
			if strings.Contains(pub.stderr, "wrong") {
				t.Errorf("the password is shown: %s", pub.stderr)
			}
		})
	}
	if r := cli(context.Background(), "", "pub", "-proxy", "ftp://x", "-topic", "t", "-m", "x"); r.code != 2 || !strings.Contains(r.stderr, "-proxy") {
		t.Errorf("bad -proxy: %+v", r)
	}
}

func portOf(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	return addr[i+1:]
}
