package gateway

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
)

// Route sends the SMQ sessions of one path to one upstream.
type Route struct {
	// Path is a net/http ServeMux pattern path: "/" matches every path, a
	// path ending in "/" its subtree, any other exactly.
	Path     string
	Upstream upstream.Upstream
	// Policy decides client certificates; nil means off (no certificate
	// is looked at). SetPolicy replaces it while serving.
	Policy *tlsterm.Policy
	// AllowedOrigins lists the Origin values ("https://app.example.com")
	// allowed to open a WebSocket; "*" allows any. Empty allows only the
	// gateway's own host (Origin host equal to the request's Host). Requests
	// without Origin (not from a browser) are allowed.
	AllowedOrigins []string
	// Console serves the web console (package web) on GET requests to
	// the route that are not an SMQ bootstrap.
	Console bool
	// RefuseTemporary answers passing conditions — the upstream
	// unreachable or silent, the listener or the client's address busy,
	// the gateway shutting down — inside SMQ: Connack 0x02 with the
	// reason, Disconnect "shutdown". False (the zero value) ends the
	// connection without an SMQ refusal instead (the end of the stream; a
	// WebSocket close frame with 1013 or 1001 and the reason), because the
	// reference clients smq.js and the C client take any Connack refusal
	// or Disconnect as final and would not come back (SMQ-WIRE §5).
	RefuseTemporary bool
	// Access is the route's topic permissions, enforced on every session
	// (see package access); nil allows everything. AccessName names it in
	// logs.
	Access     *access.Policy
	AccessName string

	swapped atomic.Pointer[policyBox] // set by SetPolicy
}

type policyBox struct{ p *tlsterm.Policy }

// SetPolicy replaces the route's client-certificate policy for sessions
// that start from now on (a reloaded CA bundle or CRL); sessions already
// admitted are not judged again. Safe while the gateway serves.
func (r *Route) SetPolicy(p *tlsterm.Policy) { r.swapped.Store(&policyBox{p}) }

// policy returns the policy in force.
func (r *Route) policy() *tlsterm.Policy {
	if b := r.swapped.Load(); b != nil {
		return b.p
	}
	return r.Policy
}

// Listener is one address the gateway accepts clients on.
type Listener struct {
	Name string
	Addr string // host:port; ignored when Listener is set
	// Certs, when not nil, makes this a TLS listener serving its
	// certificates, with the hardened settings of tlsterm.ServerConfig. An
	// ACME source (certs.ACMESource) also gets its TLS-ALPN-01 probes
	// answered: they complete the handshake and are closed, never reaching
	// a session.
	Certs  certs.Source
	Routes []*Route
	// Handler, when not nil, makes this a plain HTTP listener serving it
	// instead of SMQ routes: the ACME HTTP-01 answerer and redirect to
	// https. Such a listener has no Routes and no Certs.
	Handler http.Handler
	// Listener, when not nil, is used instead of listening on Addr.
	Listener net.Listener
	// ProxyProtocolFrom, when not empty, makes the listener take the
	// client's address from a PROXY protocol header (v1 or v2), which every
	// connection from these sources must send; connections from elsewhere
	// are refused. For smqgw behind an L4 load balancer.
	ProxyProtocolFrom []netip.Prefix
}

// Config configures a Gateway.
type Config struct {
	Logger    *slog.Logger  // nil discards
	Limits    limits.Limits // zero fields take their defaults
	Listeners []Listener
	// Metrics receives the gateway's metrics; nil makes new ones.
	Metrics *Metrics
	// Certs are the certificate sets the gateway presents, for the expiry
	// metric and the readiness check.
	Certs []CertSet
	// SessionTicketKeys seal and open the TLS session tickets of every
	// TLS listener: the first seals, all open. Gateways behind one load
	// balancer share them, so that a client resumes on any. Nil: random
	// keys of the gateway's own, a new one every day, the last seven
	// kept, across reloads.
	SessionTicketKeys [][32]byte
}
