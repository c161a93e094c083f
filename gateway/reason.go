package gateway

import "github.com/gorilla/websocket"

// Reason is why a session ended. Every session ends with exactly one; it
// names the log line's reason and decides what the client is told.
type Reason int

// Close reasons.
const (
	ReasonNone             Reason = iota
	ReasonClientClosed            // the client closed or sent Disconnect
	ReasonUpstreamClosed          // the broker closed (after its Disconnect, if any)
	ReasonRefused                 // the gateway refused the client (certificate) with a Connack
	ReasonUpstreamDown            // no upstream could be reached: Connack 0x02
	ReasonConnackRefused          // the broker refused the client (its Connack, relayed)
	ReasonProtocolError           // malformed or out-of-place message from the client
	ReasonUpstreamProtocol        // malformed or out-of-place message from the broker
	ReasonTooBig                  // a client message over the size limit
	ReasonIdle                    // nothing either way for the idle timeout
	ReasonPingTimeout             // a WebSocket client did not answer pings
	ReasonConnectTimeout          // no Connect from the client in time
	ReasonShutdown                // the gateway is shutting down
	ReasonWriteError              // a write to either side failed (slow or gone peer)
	ReasonBusy                    // the listener or the client's address is at its session limit
	ReasonRateLimited             // the client sent more messages per second than allowed
	// ReasonGatewayCertRefused: the upstream refused the gateway's own
	// client certificate (a TLS alert, or a front end's Connack 0x04/0x05
	// before the client's Connect was relayed): Connack 0x02.
	ReasonGatewayCertRefused
	// ReasonAccessDenied: the client published where its permissions do
	// not let it (Disconnect "access denied").
	ReasonAccessDenied
	// ReasonInternal: a bug in smqgw ended the session (logged with its
	// stack); the client sees close 1011 or the end of the stream.
	ReasonInternal
)

var reasonInfo = [...]struct {
	name   string // log and metrics label
	text   string // SMQ Disconnect reason, "" for none
	wsCode int    // WebSocket close code
}{
	ReasonNone:               {"none", "", websocket.CloseNormalClosure},
	ReasonClientClosed:       {"client_closed", "", websocket.CloseNormalClosure},
	ReasonUpstreamClosed:     {"upstream_closed", "", websocket.CloseGoingAway},
	ReasonRefused:            {"refused", "", websocket.ClosePolicyViolation},
	ReasonUpstreamDown:       {"upstream_unavailable", "", websocket.CloseTryAgainLater},
	ReasonConnackRefused:     {"connack_refused", "", websocket.CloseNormalClosure},
	ReasonProtocolError:      {"protocol_error", "protocol error", websocket.CloseProtocolError},
	ReasonUpstreamProtocol:   {"upstream_protocol_error", "upstream protocol error", websocket.CloseInternalServerErr},
	ReasonTooBig:             {"too_big", "message too big", websocket.CloseMessageTooBig},
	ReasonIdle:               {"idle_timeout", "idle timeout", websocket.CloseGoingAway},
	ReasonPingTimeout:        {"ping_timeout", "", websocket.CloseGoingAway},
	ReasonConnectTimeout:     {"connect_timeout", "", websocket.CloseNormalClosure},
	ReasonShutdown:           {"shutdown", "shutdown", websocket.CloseGoingAway},
	ReasonWriteError:         {"write_error", "", websocket.CloseGoingAway},
	ReasonBusy:               {"busy", "", websocket.CloseTryAgainLater},
	ReasonRateLimited:        {"rate_limited", "rate limit exceeded", websocket.ClosePolicyViolation},
	ReasonGatewayCertRefused: {"gateway_cert_refused", "", websocket.ClosePolicyViolation},
	ReasonAccessDenied:       {"access_denied", "access denied", websocket.ClosePolicyViolation},
	ReasonInternal:           {"internal_error", "", websocket.CloseInternalServerErr},
}

// String is the reason's label in logs and metrics ("client_closed").
func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonInfo) {
		return reasonInfo[r].name
	}
	return "unknown"
}

// limit names the limit that ended a session for this reason, "" if none.
func (r Reason) limit() string {
	switch r {
	case ReasonRateLimited:
		return "message_rate"
	case ReasonTooBig:
		return "max_message_size"
	case ReasonIdle:
		return "idle_timeout"
	case ReasonPingTimeout:
		return "ws_ping_interval"
	case ReasonConnectTimeout:
		return "connect_timeout"
	}
	return ""
}

// passing reports whether r is a passing condition, after which a client
// should retry: unless its route says otherwise, such an end carries no SMQ
// refusal (no Connack, no Disconnect), which the reference clients would
// take as final.
func (r Reason) passing() bool {
	switch r {
	case ReasonUpstreamDown, ReasonBusy, ReasonShutdown, ReasonUpstreamClosed:
		return true
	}
	return false
}

// disconnectText is the SMQ Disconnect reason the client gets, "" for none.
func (r Reason) disconnectText() string { return reasonInfo[r].text }

// wsCode is the WebSocket close code the client gets.
func (r Reason) wsCode() int { return reasonInfo[r].wsCode }
