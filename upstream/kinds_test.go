package upstream_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/proxytest"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smqdial"
	"github.com/smqgw/smqgw/upstream"
)

// TestAttemptKinds: each attempt's error is a *smqdial.Error, so a caller
// learns what failed, and how to word it for a client, without looking
// into the proxy dialer's errors.
func TestAttemptKinds(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, nil)
	proxy := proxytest.StartTinyproxy(t, proxytest.Options{User: "gw", Password: "s3cret"})
	wrong := *proxy.URL
	wrong.User = url.UserPassword("gw", "wrong")
	refusing, err := proxyclient.FromURL(&wrong, proxyclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cfg    upstream.Config
		kind   smqdial.Kind
		reason string
	}{
		{"connect", upstream.Config{URLs: []string{"http://" + deadAddr(t) + "/smq"}},
			smqdial.Connect, "connect: connection refused"},
		{"proxy refused", upstream.Config{URLs: []string{"ws://" + tb.Addr + "/smq"}, Dialer: refusing},
			smqdial.ProxyRefused, "proxy authentication required (credentials rejected)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name = "lan"
			_, err := newDialer(t, tc.cfg).Dial(context.Background(), upstream.Request{})
			var e *smqdial.Error
			if !errors.As(err, &e) || e.Kind != tc.kind {
				t.Fatalf("%v, want a %v *smqdial.Error", err, tc.kind)
			}
			if r := smqdial.Reason(err); r != tc.reason {
				t.Errorf("reason %q, want %q", r, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), "upstream lan unreachable: "+tc.cfg.URLs[0]+": ") {
				t.Errorf("error %q", err)
			}
		})
	}
}
