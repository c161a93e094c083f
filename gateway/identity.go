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

// hopHeaders are never forwarded upstream: hop-by-hop headers, the
// WebSocket handshake, the bootstrap's own, and anything that would let a
// client pose as someone else.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true,
	"Sec-Websocket-Key": true, "Sec-Websocket-Version": true, "Sec-Websocket-Extensions": true,
	"Sec-Websocket-Protocol": true, "Simplemq": true, "Sendsmqhttpresponse": true,
	"X-Forwarded-For": true, "Forwarded": true, "X-Real-Ip": true,
}

// upstreamHeader is the bootstrap header set for the upstream: the client's
// own headers less hop-by-hop ones and any X-SMQ-Client-* copies, plus the
// verified identity, if any. upstream adds X-Forwarded-For.
func upstreamHeader(client http.Header, id *tlsterm.Identity) http.Header {
	h := make(http.Header, len(client)+4)
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
	return h
}
