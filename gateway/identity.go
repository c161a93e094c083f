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

// hopHeaders are never forwarded upstream: hop-by-hop headers, the
// WebSocket handshake, the bootstrap's own, and anything that would let a
// client pose as someone else.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true,
	"Sec-Websocket-Key": true, "Sec-Websocket-Version": true, "Sec-Websocket-Extensions": true,
	"Sec-Websocket-Protocol": true, "Simplemq": true, "Sendsmqhttpresponse": true,
	"X-Forwarded-For": true, "Forwarded": true, "X-Real-Ip": true, HeaderSession: true,
}

// upstreamHeader is the bootstrap header set for the upstream: the client's
// own headers less hop-by-hop ones and any X-SMQ-Client-* copies, plus the
// verified identity, if any, and the session's ID. upstream adds
// X-Forwarded-For.
func upstreamHeader(client http.Header, id *tlsterm.Identity, session string) http.Header {
	h := make(http.Header, len(client)+5)
	for k, v := range client {
		ck := http.CanonicalHeaderKey(k)
		if hopHeaders[ck] || strings.HasPrefix(ck, "X-Smq-Client-") {
			continue
		}
		h[ck] = v
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
