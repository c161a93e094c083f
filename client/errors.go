package client

import (
	"errors"

	"github.com/smqgw/smqgw/smq"
)

// ErrClosed is returned by calls on a Client that was closed, and by Err
// after Close.
var ErrClosed = errors.New("client: closed")

// ErrDenied is wrapped by the error of a Subscribe, Create or Createsub that
// the broker answered with a denied ack.
var ErrDenied = errors.New("client: request denied by broker")

// ErrNoPong is wrapped by the error that ends a connection whose broker did
// not answer a keepalive Ping within Options.PongTimeout.
var ErrNoPong = errors.New("client: no pong from broker")

// RefusedError is a Connack refusal: the broker (or a gateway in front of
// it) answered Connect with a code other than 0x00. Dial returns it as is.
type RefusedError struct {
	Code   smq.ConnackCode
	Reason string // the broker's human-readable reason; may be empty
}

// Error reads "connection refused by broker: 0x04 client certificate
// required: <reason>", without ": <reason>" when the reason is empty.
func (e *RefusedError) Error() string {
	s := "connection refused by broker: " + e.Code.String()
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// DisconnectError ends a session the broker closed with a Disconnect
// message. Reason is what the broker said: "shutdown", "reconnect" (another
// connection with the same UID took over), "corrupt frame", "slow consumer".
type DisconnectError struct {
	Reason string
}

func (e *DisconnectError) Error() string {
	if e.Reason == "" {
		return "client: disconnected by broker"
	}
	return "client: disconnected by broker: " + e.Reason
}

// takenOver reports whether err says another connection with our UID took
// the session over; reconnecting would only kick that one in turn.
func takenOver(err error) bool {
	var de *DisconnectError
	return errors.As(err, &de) && de.Reason == "reconnect"
}

// permanent reports whether a refusal will not go away by retrying.
func permanent(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) && re.Code != smq.CodeServerUnavailable
}
