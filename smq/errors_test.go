package smq_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/smq"
)

var errClasses = []error{
	smq.ErrShortFrame, smq.ErrTooBig, smq.ErrUnknownType,
	smq.ErrShortMessage, smq.ErrBadField, smq.ErrBadBootstrap,
}

// checkMessageError asserts that err wraps exactly the class want, is a
// *MessageError with the given type and length, and has the exact text.
func checkMessageError(t *testing.T, err, want error, typ smq.Type, n int, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", want)
	}
	for _, class := range errClasses {
		if got := errors.Is(err, class); got != (class == want) {
			t.Errorf("errors.Is(%q, %v) = %v", err, class, got)
		}
	}
	var me *smq.MessageError
	if !errors.As(err, &me) {
		t.Fatalf("%q is not a *smq.MessageError", err)
	}
	if me.Type != typ || me.Len != n {
		t.Errorf("MessageError{Type: %v, Len: %d}, want {Type: %v, Len: %d}", me.Type, me.Len, typ, n)
	}
	if err.Error() != text {
		t.Errorf("error text\n got %q\nwant %q", err, text)
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		err  error
		typ  smq.Type
		n    int
		text string
	}{
		{"empty", nil, smq.ErrShortFrame, 0, 0,
			"smq: short frame: message has no type byte"},
		{"type-0", b(0), smq.ErrUnknownType, 0, 1,
			"smq: unknown message type: reserved message type"},
		{"type-10", b(10, 1, 2, 3, 4), smq.ErrUnknownType, 10, 5,
			"smq: unknown message type: type 10: reserved message type"},
		{"type-20", b(20), smq.ErrUnknownType, 20, 1,
			"smq: unknown message type: type 20: reserved message type"},
		{"type-255", b(255, 0), smq.ErrUnknownType, 255, 2,
			"smq: unknown message type: type 255: reserved message type"},
		{"Init-short", b(1, 1, 0, 0, 0), smq.ErrShortMessage, smq.TypeInit, 4,
			"smq: short message: Init: body is 4 bytes, need at least 5"},
		{"Connect-empty", b(2), smq.ErrShortMessage, smq.TypeConnect, 0,
			"smq: short message: Connect: body is 0 bytes, need at least 3"},
		{"Connect-short", b(2, 1, 0), smq.ErrShortMessage, smq.TypeConnect, 2,
			"smq: short message: Connect: body is 2 bytes, need at least 3"},
		{"Connect-v0", b(2, 0, 0, 0), smq.ErrBadField, smq.TypeConnect, 3,
			"smq: bad field: Connect: protocol version 0, want 1 or 2"},
		{"Connect-v3", join(b(2, 3, 6), s("abcdef"), b(0)), smq.ErrBadField, smq.TypeConnect, 9,
			"smq: bad field: Connect: protocol version 3, want 1 or 2"},
		{"Connect-v1-uid-overrun", b(2, 1, 10, 'a', 'b'), smq.ErrBadField, smq.TypeConnect, 4,
			"smq: bad field: Connect: uid length 10 runs past the end of the message"},
		{"Connect-v1-uid-overrun-by-one", join(b(2, 1, 7), s("abcdef")), smq.ErrBadField, smq.TypeConnect, 8,
			"smq: bad field: Connect: uid length 7 runs past the end of the message"},
		{"Connect-v1-no-credlen", join(b(2, 1, 2), s("ab")), smq.ErrBadField, smq.TypeConnect, 4,
			"smq: bad field: Connect: credentials length missing"},
		{"Connect-v1-cred-overrun", b(2, 1, 1, 'a', 5, 'x'), smq.ErrBadField, smq.TypeConnect, 5,
			"smq: bad field: Connect: credentials length 5 runs past the end of the message"},
		{"Connect-v2-short", b(2, 2, 0xff, 0xf0), smq.ErrShortMessage, smq.TypeConnect, 3,
			"smq: short message: Connect: body is 3 bytes, need at least 5"},
		{"Connect-v2-uid-overrun", b(2, 2, 0, 0, 9, 'a'), smq.ErrBadField, smq.TypeConnect, 5,
			"smq: bad field: Connect: uid length 9 runs past the end of the message"},
		{"Connect-v2-no-credlen-after-uid", b(2, 2, 0, 0, 1, 'a'), smq.ErrBadField, smq.TypeConnect, 5,
			"smq: bad field: Connect: credentials length missing"},
		{"Connack-short", b(3, 0, 0, 0, 0), smq.ErrShortMessage, smq.TypeConnack, 4,
			"smq: short message: Connack: body is 4 bytes, need at least 5"},
		{"Suback-short", b(5, 0), smq.ErrShortMessage, smq.TypeSuback, 1,
			"smq: short message: Suback: body is 1 bytes, need at least 5"},
		{"Createack-short", b(7), smq.ErrShortMessage, smq.TypeCreateack, 0,
			"smq: short message: Createack: body is 0 bytes, need at least 5"},
		{"Createsuback-short", b(18, 0, 0, 0, 0), smq.ErrShortMessage, smq.TypeCreatesuback, 4,
			"smq: short message: Createsuback: body is 4 bytes, need at least 5"},
		{"Publish-empty", b(8), smq.ErrShortMessage, smq.TypePublish, 0,
			"smq: short message: Publish: body is 0 bytes, need at least 12"},
		{"Publish-short", b(8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0), smq.ErrShortMessage, smq.TypePublish, 11,
			"smq: short message: Publish: body is 11 bytes, need at least 12"},
		{"PubFrag-short", b(19, 0, 0, 0, 0), smq.ErrShortMessage, smq.TypePubFrag, 4,
			"smq: short message: PubFrag: body is 4 bytes, need at least 12"},
		{"Unsubscribe-empty", b(9), smq.ErrShortMessage, smq.TypeUnsubscribe, 0,
			"smq: short message: Unsubscribe: body is 0 bytes, need at least 4"},
		{"Unsubscribe-short", b(9, 0, 0, 1), smq.ErrShortMessage, smq.TypeUnsubscribe, 3,
			"smq: short message: Unsubscribe: body is 3 bytes, need at least 4"},
		{"Observe-short", b(14, 1), smq.ErrShortMessage, smq.TypeObserve, 1,
			"smq: short message: Observe: body is 1 bytes, need at least 4"},
		{"Unobserve-short", b(15, 1, 2), smq.ErrShortMessage, smq.TypeUnobserve, 2,
			"smq: short message: Unobserve: body is 2 bytes, need at least 4"},
		{"Change-short", b(16, 0, 0, 0, 1, 0, 0, 0), smq.ErrShortMessage, smq.TypeChange, 7,
			"smq: short message: Change: body is 7 bytes, need at least 8"},
		{"Change-id-only", b(16, 0, 0, 0, 1), smq.ErrShortMessage, smq.TypeChange, 4,
			"smq: short message: Change: body is 4 bytes, need at least 8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := smq.Decode(tc.msg)
			if m != nil {
				t.Errorf("Decode returned a message with the error: %#v", m)
			}
			checkMessageError(t, err, tc.err, tc.typ, tc.n, tc.text)
			// Check agrees with Decode, except that it leaves Connect's
			// version-dependent fields (and length) to Decode.
			connectFields := tc.typ == smq.TypeConnect && len(tc.msg) >= 4
			if cerr := smq.Check(tc.msg); !connectFields {
				if cerr == nil || cerr.Error() != err.Error() {
					t.Errorf("Check = %v, Decode = %v", cerr, err)
				}
			} else if cerr != nil {
				t.Errorf("Check = %v, want nil (Connect fields are Decode's)", cerr)
			}
			// DecodePublish classifies foreign and short messages the same way.
			if len(tc.msg) > 0 && (smq.Type(tc.msg[0]) == smq.TypePublish || smq.Type(tc.msg[0]) == smq.TypePubFrag ||
				!smq.Type(tc.msg[0]).Valid()) {
				_, perr := smq.DecodePublish(tc.msg)
				checkMessageError(t, perr, tc.err, tc.typ, tc.n, tc.text)
			}
		})
	}
}

// A v2 Connect whose body has maxsize and two empty lengths is the smallest
// valid v2 Connect.
func TestDecodeConnectV2Minimal(t *testing.T) {
	m, err := smq.Decode(b(2, 2, 0xff, 0xf0, 0, 0))
	if err != nil || m != (smq.Connect{Version: 2, MaxSize: 0xfff0}) {
		t.Fatalf("Decode = %#v, %v", m, err)
	}
	// With a uid length but neither uid bytes nor a credentials length.
	_, err = smq.Decode(b(2, 2, 0xff, 0xf0, 0, 1))
	checkMessageError(t, err, smq.ErrBadField, smq.TypeConnect, 5,
		"smq: bad field: Connect: credentials length 1 runs past the end of the message")
}

func TestDecodePublishWrongType(t *testing.T) {
	_, err := smq.DecodePublish(join(b(4), s("topic")))
	checkMessageError(t, err, smq.ErrBadField, smq.TypeSubscribe, 6,
		"smq: bad field: Subscribe: not a Publish")
	_, err = smq.DecodePublish(nil)
	checkMessageError(t, err, smq.ErrShortFrame, 0, 0, "smq: short frame: message has no type byte")
	_, err = smq.DecodePublish(b(1, 1))
	checkMessageError(t, err, smq.ErrShortMessage, smq.TypeInit, 1,
		"smq: short message: Init: body is 1 bytes, need at least 5")
}

// TestDecodeNeverPanics decodes every prefix of every valid message and of a
// few hostile ones, and every single-byte message.
func TestDecodeNeverPanics(t *testing.T) {
	var inputs [][]byte
	for _, tc := range messageCases {
		inputs = append(inputs, tc.wire)
	}
	inputs = append(inputs,
		b(2, 1, 255, 255), b(2, 2, 0, 0, 255), b(2, 2, 0, 0, 0, 255), b(2, 1, 0, 255),
		join(b(2, 1, 0, 0), []byte(strings.Repeat("\xff", 600))))
	for _, in := range inputs {
		for i := 0; i <= len(in); i++ {
			if m, err := smq.Decode(in[:i]); (m == nil) == (err == nil) {
				t.Errorf("Decode(% x) = %v, %v: want exactly one of message and error", in[:i], m, err)
			}
			_ = smq.Check(in[:i])
			_, _ = smq.DecodePublish(in[:i])
		}
	}
	for i := 0; i < 256; i++ {
		_, _ = smq.Decode(b(byte(i)))
	}
}

func TestMessageErrorText(t *testing.T) {
	err := &smq.MessageError{Type: smq.TypePublish, Len: 70000, Err: smq.ErrTooBig, Detail: "detail"}
	if got, want := err.Error(), "smq: message too big: Publish: detail"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !strings.HasPrefix((&smq.MessageError{Err: smq.ErrShortFrame, Detail: "x"}).Error(), "smq: short frame: x") {
		t.Error("typeless MessageError text")
	}
}
