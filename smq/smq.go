// Package smq is the wire codec of SMQ (Simple Message Queues): the messages,
// their two framings (raw with a 2-byte length, WebSocket with one message per
// WebSocket message), the HTTP bootstrap of the raw transport, and the size
// limits. It does no I/O policy of its own: no timeouts, no goroutines.
//
// All integers on the wire are unsigned big-endian; strings are raw bytes.
package smq

import "fmt"

// Type is the message type, the first byte of every SMQ message.
type Type uint8

// The message types. 0, 10 and 20–255 are reserved.
const (
	TypeInit         Type = 1
	TypeConnect      Type = 2
	TypeConnack      Type = 3
	TypeSubscribe    Type = 4
	TypeSuback       Type = 5
	TypeCreate       Type = 6
	TypeCreateack    Type = 7
	TypePublish      Type = 8
	TypeUnsubscribe  Type = 9
	TypeDisconnect   Type = 11
	TypePing         Type = 12
	TypePong         Type = 13
	TypeObserve      Type = 14
	TypeUnobserve    Type = 15
	TypeChange       Type = 16
	TypeCreatesub    Type = 17
	TypeCreatesuback Type = 18
	TypePubFrag      Type = 19
)

var typeNames = [...]string{
	TypeInit:         "Init",
	TypeConnect:      "Connect",
	TypeConnack:      "Connack",
	TypeSubscribe:    "Subscribe",
	TypeSuback:       "Suback",
	TypeCreate:       "Create",
	TypeCreateack:    "Createack",
	TypePublish:      "Publish",
	TypeUnsubscribe:  "Unsubscribe",
	TypeDisconnect:   "Disconnect",
	TypePing:         "Ping",
	TypePong:         "Pong",
	TypeObserve:      "Observe",
	TypeUnobserve:    "Unobserve",
	TypeChange:       "Change",
	TypeCreatesub:    "Createsub",
	TypeCreatesuback: "Createsuback",
	TypePubFrag:      "PubFrag",
}

// Valid reports whether t is a defined (non-reserved) message type.
func (t Type) Valid() bool {
	return int(t) < len(typeNames) && typeNames[t] != ""
}

// String returns the message type's name, or "type N" for a reserved one.
func (t Type) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Size limits of the protocol.
const (
	// MaxRawFrame is the largest raw frame, its 2-byte length field included.
	MaxRawFrame = 65535
	// MaxRawMessage is the largest message (type byte + body) that fits one raw
	// frame, and so the largest that may ever be sent to a raw peer.
	MaxRawMessage = MaxRawFrame - 2
	// MaxPayload is the documented maximum payload size.
	MaxPayload = 0xFFF0
	// MaxName is the longest topic or sub-topic name whose ack (Suback,
	// Createack, Createsuback: type, status, ID and the name echoed) fits
	// one raw frame.
	MaxName = MaxRawMessage - 6
	// PublishHeaderLen is the size of a Publish/PubFrag body before its payload:
	// tid, ptid and subtid.
	PublishHeaderLen = 12
	// MaxPubFragPayload is the largest payload a reassembled PubFrag message may
	// carry: the reassembled Publish (type, header, payload) must not exceed
	// MaxPayload.
	MaxPubFragPayload = MaxPayload - 1 - PublishHeaderLen
	// MinRawFrame is the smallest valid raw frame: length field and type.
	MinRawFrame = 3
)

// ConnackCode is the result code of a Connack message.
type ConnackCode uint8

// Connack codes. Codes 0x03–0x06 come from the broker's application; 0x04 and
// 0x05 exist for a TLS front end.
const (
	CodeAccepted          ConnackCode = 0x00
	CodeBadVersion        ConnackCode = 0x01
	CodeServerUnavailable ConnackCode = 0x02
	CodeBadCredentials    ConnackCode = 0x03
	CodeCertRequired      ConnackCode = 0x04
	CodeCertNotAccepted   ConnackCode = 0x05
	CodeAccessDenied      ConnackCode = 0x06
)

var codeText = [...]string{
	CodeAccepted:          "accepted",
	CodeBadVersion:        "bad protocol version",
	CodeServerUnavailable: "server unavailable",
	CodeBadCredentials:    "incorrect credentials",
	CodeCertRequired:      "client certificate required",
	CodeCertNotAccepted:   "client certificate not accepted",
	CodeAccessDenied:      "access denied",
}

// Text returns the code's human meaning ("client certificate required"), or
// "unknown code" for a code the protocol does not define.
func (c ConnackCode) Text() string {
	if int(c) < len(codeText) {
		return codeText[c]
	}
	return "unknown code"
}

// String returns the code in hex with its meaning: "0x04 client certificate required".
func (c ConnackCode) String() string {
	return fmt.Sprintf("0x%02x %s", uint8(c), c.Text())
}

// AckStatus is the status byte of Suback, Createack and Createsuback.
type AckStatus uint8

// Ack statuses. A denied ack carries ID 0.
const (
	AckOK     AckStatus = 0
	AckDenied AckStatus = 1
)
