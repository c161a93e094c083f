package proxyclient_test

import (
	"context"
	"net"
	"testing"

	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/proxyclient"
)

// BenchmarkDial measures one tunnel set-up to a loopback target, directly
// and through the real proxies: the latency a proxy adds to each upstream
// dial of the gateway.
func BenchmarkDial(b *testing.B) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, bc := range []struct {
		name  string
		proxy func() string
	}{
		{"direct", func() string { return "" }},
		{"tinyproxy", func() string { return proxytest.StartTinyproxy(b, proxytest.Options{}).URL.String() }},
		{"tinyproxy-auth", func() string {
			return proxytest.StartTinyproxy(b, proxytest.Options{User: "u", Password: "p"}).URL.String()
		}},
		{"microsocks", func() string { return proxytest.StartMicrosocks(b, proxytest.Options{}).URL.String() }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d, err := proxyclient.Parse(bc.proxy(), proxyclient.Options{})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				c, err := d.DialContext(ctx, "tcp", target.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
