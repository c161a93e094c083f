package gateway

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyProtoListener makes ln expect a PROXY protocol header (v1 or v2)
// from every connection of a trusted source (trusted() is read per
// connection, so a reload changes it), and the client address it carries
// becomes the connection's remote address: in logs, limits, Init and
// X-Forwarded-For. A connection from any other source is refused (closed at
// once, logged, counted), so nobody else can claim an address. A trusted
// source that sends no header, or a malformed one, fails its first read and
// the connection ends. timeout(), read once here, bounds reading the
// header.
func proxyProtoListener(ln net.Listener, trusted func() []netip.Prefix, timeout func() time.Duration,
	log *slog.Logger, m *Metrics, listener string) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: timeout(),
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			ap, err := netip.ParseAddrPort(o.Upstream.String())
			if err == nil {
				a := ap.Addr().Unmap()
				for _, p := range trusted() {
					if p.Contains(a) {
						return proxyproto.REQUIRE, nil
					}
				}
			}
			log.Warn("PROXY protocol: connection refused: not from a trusted sender",
				"listener", listener, "peer", o.Upstream.String())
			m.proxyProto.WithLabelValues(listener).Inc()
			// ErrInvalidUpstream: the listener closes this connection and
			// keeps accepting.
			return proxyproto.REJECT, fmt.Errorf("%w: %s", proxyproto.ErrInvalidUpstream, o.Upstream)
		},
	}
}
