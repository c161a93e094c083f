package smq

import (
	"errors"
	"fmt"
)

// Error classes of malformed input. Every error the codec returns for bad
// input wraps exactly one of these, so callers can classify with errors.Is.
var (
	// ErrShortFrame: a raw frame whose length field is below MinRawFrame, or
	// an empty WebSocket message (no type byte).
	ErrShortFrame = errors.New("smq: short frame")
	// ErrTooBig: a frame or message over the size limit in force.
	ErrTooBig = errors.New("smq: message too big")
	// ErrUnknownType: a reserved message type.
	ErrUnknownType = errors.New("smq: unknown message type")
	// ErrShortMessage: a body shorter than its message type requires.
	ErrShortMessage = errors.New("smq: short message")
	// ErrBadField: a field with a value the protocol does not allow.
	ErrBadField = errors.New("smq: bad field")
	// ErrBadBootstrap: an HTTP bootstrap request or answer that is not SMQ.
	ErrBadBootstrap = errors.New("smq: bad bootstrap")
)

// MessageError describes one malformed frame or message.
type MessageError struct {
	Type   Type   // message type, or 0 when the frame is too short to have one
	Len    int    // length of the frame or message as received
	Detail string // what exactly was wrong
	Err    error  // one of the Err* classes above
}

func (e *MessageError) Error() string {
	if e.Type != 0 {
		return fmt.Sprintf("%v: %v: %s", e.Err, e.Type, e.Detail)
	}
	return fmt.Sprintf("%v: %s", e.Err, e.Detail)
}

func (e *MessageError) Unwrap() error { return e.Err }

func shortErr(t Type, n, need int) error {
	return &MessageError{Type: t, Len: n, Err: ErrShortMessage,
		Detail: fmt.Sprintf("body is %d bytes, need at least %d", n, need)}
}

func fieldErr(t Type, n int, format string, args ...any) error {
	return &MessageError{Type: t, Len: n, Err: ErrBadField, Detail: fmt.Sprintf(format, args...)}
}
