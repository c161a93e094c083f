package upstream_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/upstream"
)

func TestCertificateRefused(t *testing.T) {
	t.Parallel()
	ca, clientCA := testpki.NewCA(t), testpki.NewCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.Server(t, "127.0.0.1").ServerConfig(clientCA.Pool))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	closedAddr := deadAddr(t)

	for _, tc := range []struct {
		name string
		url  string
		cert *tls.Certificate
		want bool
	}{
		{"no certificate", "https://" + ln.Addr().String() + "/smq", nil, true},
		{"unknown CA", "wss://" + ln.Addr().String() + "/smq", &testpki.NewCA(t).Client(t, "gw").TLS, true},
		{"connection refused", "https://" + closedAddr + "/smq", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: ca.Pool}
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			d, err := upstream.New(upstream.Config{Name: "cloud", URLs: []string{tc.url}, DialTimeout: 5 * time.Second, TLS: cfg})
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Dial(context.Background(), upstream.Request{})
			if err == nil {
				t.Fatal("dial succeeded")
			}
			if got := upstream.CertificateRefused(err); got != tc.want {
				t.Errorf("CertificateRefused(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}
