package gateway

import (
	"net/http"
	"strings"

	"github.com/smqgw/smqgw/tlsterm"
)

// Identity headers sent upstream for an accepted client certificate.
const (
	HeaderSubject     = "X-Smq-Client-Subject"
	HeaderCN          = "X-Smq-Client-Cn"
	HeaderSANURI      = "X-Smq-Client-San-Uri"
	HeaderFingerprint = "X-Smq-Client-Fingerprint"
)

// HeaderSession carries the session's ID to the upstream, the one in the
// gateway's log lines for the session, so that the broker's logs can be
// joined to them.
const HeaderSession = "X-Smq-Session"

// Forwarding headers the gateway sets itself (upstream adds
// X-Forwarded-For).
const (
	HeaderForwardedProto = "X-Forwarded-Proto"
	HeaderForwardedHost  = "X-Forwarded-Host"
)

// hopHeaders are never forwarded upstream, by normalised name (see
// normHeader): hop-by-hop headers, the WebSocket handshake, the
// bootstrap's own, and every header that names a client address, so that
// no client can pose as another. Headers with the prefixes in hopPrefixes
// neither: those the gateway sets (X-SMQ-*) and every X-Forwarded-*.
var hopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "proxy-authorization": true,
	"te": true, "trailer": true, "transfer-encoding": true, "upgrade": true, "host": true,
	"sec-websocket-key": true, "sec-websocket-version": true, "sec-websocket-extensions": true,
	"sec-websocket-protocol": true, "simplemq": true, "sendsmqhttpresponse": true,
	"forwarded": true, "x-real-ip": true, "client-ip": true, "x-client-ip": true,
	"true-client-ip": true, "x-cluster-client-ip": true, "cf-connecting-ip": true,
	"fastly-client-ip": true, "x-original-forwarded-for": true,
}

var hopPrefixes = []string{"x-smq-", "x-forwarded-"}

// normHeader is a header name as a proxy or an application may read it:
// lower case, '_' as '-' (CGI-style servers and some frameworks take
// X_Smq_Client_Cn for X-Smq-Client-Cn).
func normHeader(name string) string { return strings.ReplaceAll(strings.ToLower(name), "_", "-") }

// passes reports whether a client's header of this name goes upstream.
func passes(name string) bool {
	n := normHeader(name)
	if hopHeaders[n] {
		return false
	}
	for _, p := range hopPrefixes {
		if strings.HasPrefix(n, p) {
			return false
		}
	}
	return true
}

// upstreamHeader is the bootstrap header set for the upstream: the client's
// own headers less those that do not pass, plus X-Forwarded-Proto ("https"
// for a client over TLS, else "http") and X-Forwarded-Host (the host the
// client asked for), the verified identity, if any, and the session's ID.
// upstream adds X-Forwarded-For.
func upstreamHeader(client http.Header, host string, overTLS bool, id *tlsterm.Identity, session string) http.Header {
	h := make(http.Header, len(client)+7)
	for k, v := range client {
		if !passes(k) {
			continue
		}
		h[http.CanonicalHeaderKey(k)] = v
	}
	proto := "http"
	if overTLS {
		proto = "https"
	}
	h.Set(HeaderForwardedProto, proto)
	if host != "" {
		h.Set(HeaderForwardedHost, host)
	}
	if id != nil {
		h.Set(HeaderSubject, id.Subject)
		h.Set(HeaderCN, id.CN)
		for _, u := range id.URIs {
			h.Add(HeaderSANURI, u)
		}
		h.Set(HeaderFingerprint, id.Fingerprint)
	}
	h.Set(HeaderSession, session)
	return h
}

// The UID a client sends is bound to its identity on the way upstream
// (SMQ-WIRE §4: a second connection with a UID takes its session over,
// Disconnect "reconnect" to the first). The broker sees
// NAMESPACE:UID, where NAMESPACE is "x509-" and the first 32 hex digits of
// the SHA-256 of the client's accepted certificate, or "anon" for a client
// without one. A client can so take over only a session of its own
// identity: a device that reconnects with its certificate gets its old
// session (and ETID) back; a client with another certificate, or none,
// reaching the same broker by another route, gets a session of its own.
const (
	uidAnonymous = "anon"
	uidX509      = "x509-"
	uidHexDigits = 32
)

// MaxClientUID is the longest UID a client may send through the gateway:
// what a Connect carries (255 bytes) less the longest namespace.
const MaxClientUID = 255 - len(uidX509) - uidHexDigits - 1

// MinClientUID is the shortest UID the gateway relays: the reference
// broker refuses UIDs of 5 bytes or fewer (SMQ-WIRE §4), and so does the
// gateway, as the namespace would otherwise hide them from it.
const MinClientUID = 6

// upstreamUID is the UID the upstream sees for uid, sent by a client of
// identity id (nil: no accepted certificate).
func upstreamUID(id *tlsterm.Identity, uid string) string {
	if id == nil {
		return uidAnonymous + ":" + uid
	}
	hexfp := strings.TrimPrefix(id.Fingerprint, "sha256:")
	return uidX509 + hexfp[:min(uidHexDigits, len(hexfp))] + ":" + uid
}
