package smq_test

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/smq"
)

// join concatenates byte fragments; tests spell messages out field by field.
func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// b is shorthand for a literal byte sequence.
func b(v ...byte) []byte { return v }

// s is shorthand for the bytes of a string field.
func s(v string) []byte { return []byte(v) }

// messageCases lists one or more messages of every type of SMQ-WIRE.md §3,
// with the bytes the spec prescribes, written out by hand (WebSocket framing:
// type byte + body).
var messageCases = []struct {
	name string
	msg  smq.Message
	wire []byte
}{
	{"Init", smq.Init{Version: 1, Seed: 0x01020304, IP: "10.0.0.1"},
		join(b(1, 1, 0x01, 0x02, 0x03, 0x04), s("10.0.0.1"))},
	{"Init/empty-ip", smq.Init{Version: 1, Seed: 0xfffffffe},
		b(1, 1, 0xff, 0xff, 0xff, 0xfe)},
	{"Connect/v1", smq.Connect{Version: 1, UID: "client-1", Credentials: "pw", Info: "info"},
		join(b(2, 1, 8), s("client-1"), b(2), s("pw"), s("info"))},
	{"Connect/v1-no-credentials", smq.Connect{Version: 1, UID: "abcdef"},
		join(b(2, 1, 6), s("abcdef"), b(0))},
	{"Connect/v2", smq.Connect{Version: 2, MaxSize: 0x1234, UID: "abcdef", Credentials: "\x00\xff", Info: "i"},
		join(b(2, 2, 0x12, 0x34, 6), s("abcdef"), b(2, 0x00, 0xff), s("i"))},
	{"Connect/v2-empty", smq.Connect{Version: 2, MaxSize: 0xfff0},
		b(2, 2, 0xff, 0xf0, 0, 0)},
	{"Connack/accepted", smq.Connack{Code: smq.CodeAccepted, ETID: 0xdeadbeef},
		b(3, 0x00, 0xde, 0xad, 0xbe, 0xef)},
	{"Connack/refused", smq.Connack{Code: smq.CodeCertRequired, Reason: "no client certificate"},
		join(b(3, 0x04, 0, 0, 0, 0), s("no client certificate"))},
	{"Subscribe", smq.Subscribe{Topic: "a/b"}, join(b(4), s("a/b"))},
	{"Subscribe/empty", smq.Subscribe{}, b(4)},
	{"Suback/ok", smq.Suback{Status: smq.AckOK, ID: 0x0a0b0c0d, Topic: "a/b"},
		join(b(5, 0, 0x0a, 0x0b, 0x0c, 0x0d), s("a/b"))},
	{"Suback/denied", smq.Suback{Status: smq.AckDenied, Topic: "secret"},
		join(b(5, 1, 0, 0, 0, 0), s("secret"))},
	{"Create", smq.Create{Topic: "t"}, b(6, 't')},
	{"Createack", smq.Createack{Status: smq.AckOK, ID: 0x01000001, Topic: "t"},
		b(7, 0, 0x01, 0x00, 0x00, 0x01, 't')},
	{"Publish", &smq.Publish{TID: 1, PTID: 0x02030405, SubTID: 3, Payload: []byte("hi")},
		b(8, 0, 0, 0, 1, 0x02, 0x03, 0x04, 0x05, 0, 0, 0, 3, 'h', 'i')},
	{"Publish/empty-payload", &smq.Publish{TID: 0xffffffff, PTID: 1, Payload: []byte{}},
		b(8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0)},
	{"Unsubscribe", smq.Unsubscribe{TID: 0x11223344}, b(9, 0x11, 0x22, 0x33, 0x44)},
	{"Disconnect", smq.Disconnect{Reason: "reconnect"}, join(b(11), s("reconnect"))},
	{"Disconnect/no-reason", smq.Disconnect{}, b(11)},
	{"Ping", smq.Ping{}, b(12)},
	{"Pong", smq.Pong{}, b(13)},
	{"Observe", smq.Observe{ID: 5}, b(14, 0, 0, 0, 5)},
	{"Unobserve", smq.Unobserve{ID: 0x80000000}, b(15, 0x80, 0, 0, 0)},
	{"Change", smq.Change{ID: 7, Count: 0x0100}, b(16, 0, 0, 0, 7, 0, 0, 1, 0)},
	{"Createsub", smq.Createsub{Topic: "sub"}, join(b(17), s("sub"))},
	{"Createsuback", smq.Createsuback{Status: smq.AckOK, ID: 9, Topic: "sub"},
		join(b(18, 0, 0, 0, 0, 9), s("sub"))},
	{"PubFrag/intermediate", &smq.PubFrag{TID: 0, PTID: 2, SubTID: 0, Payload: []byte{0xaa}},
		b(19, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0xaa)},
	{"PubFrag/last", &smq.PubFrag{TID: 4, PTID: 2, SubTID: 5, Payload: []byte{0xbb, 0xcc}},
		b(19, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 5, 0xbb, 0xcc)},
}

func TestMessageEncodeDecode(t *testing.T) {
	seen := map[smq.Type]bool{}
	for _, tc := range messageCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.msg.Type(); got != smq.Type(tc.wire[0]) {
				t.Errorf("Type() = %v, want %v", got, smq.Type(tc.wire[0]))
			}
			if got := tc.msg.Append(nil); !bytes.Equal(got, tc.wire) {
				t.Errorf("Append(nil) = % x\nwant          % x", got, tc.wire)
			}
			prefix := []byte("keep")
			if got := tc.msg.Append(prefix); !bytes.Equal(got, join(prefix, tc.wire)) {
				t.Errorf("Append(prefix) = % x, want prefix kept", got)
			}
			if err := smq.Check(tc.wire); err != nil {
				t.Errorf("Check: %v", err)
			}
			got, err := smq.Decode(tc.wire)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.msg) {
				t.Errorf("Decode = %#v\nwant     %#v", got, tc.msg)
			}
		})
		seen[tc.msg.Type()] = true
	}
	for typ := smq.Type(0); typ < 255; typ++ {
		if typ.Valid() && !seen[typ] {
			t.Errorf("no encoding case for %v", typ)
		}
	}
}

// TestRawEncoding checks the raw framing: the 2-byte length counts itself.
func TestRawEncoding(t *testing.T) {
	for _, tc := range messageCases {
		t.Run(tc.name, func(t *testing.T) {
			n := len(tc.wire) + 2
			want := join(b(byte(n>>8), byte(n)), tc.wire)
			got, err := smq.AppendRawMessage(nil, tc.msg)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("AppendRawMessage = % x, %v\nwant                % x", got, err, want)
			}
			got, err = smq.AppendRaw(nil, tc.wire)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("AppendRaw = % x, %v\nwant         % x", got, err, want)
			}
		})
	}
}

// TestCClientRawLengths pins the raw sizes the C client insists on
// (SMQ-WIRE.md §5): Ping and Pong of exactly 3 bytes, Change of exactly 11.
func TestCClientRawLengths(t *testing.T) {
	tests := []struct {
		msg  smq.Message
		want []byte
	}{
		{smq.Ping{}, b(0x00, 0x03, 0x0c)},
		{smq.Pong{}, b(0x00, 0x03, 0x0d)},
		{smq.Change{ID: 0x01020304, Count: 2}, b(0x00, 0x0b, 0x10, 1, 2, 3, 4, 0, 0, 0, 2)},
	}
	for _, tc := range tests {
		t.Run(tc.msg.Type().String(), func(t *testing.T) {
			got, err := smq.AppendRawMessage(nil, tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) || len(got) != len(tc.want) {
				t.Errorf("raw %v = % x (%d bytes), want % x (%d bytes)",
					tc.msg.Type(), got, len(got), tc.want, len(tc.want))
			}
		})
	}
	// Ping with trailing bytes decodes (the broker answers it) but is always
	// re-encoded empty.
	m, err := smq.Decode(b(12, 'x', 'y'))
	if err != nil || m != (smq.Ping{}) {
		t.Fatalf("Decode(ping+junk) = %#v, %v", m, err)
	}
	if got := m.Append(nil); !bytes.Equal(got, b(12)) {
		t.Errorf("re-encoded Ping = % x, want 0c", got)
	}
}

func TestConnectTruncatesLongFields(t *testing.T) {
	long := strings.Repeat("u", 300)
	c := smq.Connect{Version: 1, UID: long, Credentials: long}
	if err := c.Check(); !errors.Is(err, smq.ErrBadField) || !strings.Contains(err.Error(), "uid is 300 bytes") {
		t.Errorf("Check = %v, want ErrBadField about the 300-byte uid", err)
	}
	want := join(b(2, 1, 255), s(long[:255]), b(255), s(long[:255]))
	if got := c.Append(nil); !bytes.Equal(got, want) {
		t.Errorf("Append did not cut uid and credentials to 255 bytes: got %d bytes", len(got))
	}
}

func TestConnectCheck(t *testing.T) {
	long := strings.Repeat("c", 256)
	tests := []struct {
		name string
		c    smq.Connect
		want string // "" for ok
	}{
		{"v1", smq.Connect{Version: 1, UID: "abcdef"}, ""},
		{"v2", smq.Connect{Version: 2, UID: strings.Repeat("u", 255), Credentials: long[:255]}, ""},
		{"v0", smq.Connect{Version: 0, UID: "abcdef"}, "smq: bad field: Connect: version 0, want 1 or 2"},
		{"v3", smq.Connect{Version: 3, UID: "abcdef"}, "smq: bad field: Connect: version 3, want 1 or 2"},
		{"uid", smq.Connect{Version: 1, UID: long}, "smq: bad field: Connect: uid is 256 bytes, at most 255"},
		{"credentials", smq.Connect{Version: 2, UID: "abcdef", Credentials: long},
			"smq: bad field: Connect: credentials are 256 bytes, at most 255"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Check()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, smq.ErrBadField) {
				t.Fatalf("Check = %v, want ErrBadField", err)
			}
			if err.Error() != tc.want {
				t.Errorf("Check = %q, want %q", err, tc.want)
			}
		})
	}
}

func TestConnackCode(t *testing.T) {
	tests := []struct {
		code      smq.ConnackCode
		text, str string
	}{
		{smq.CodeAccepted, "accepted", "0x00 accepted"},
		{smq.CodeBadVersion, "bad protocol version", "0x01 bad protocol version"},
		{smq.CodeServerUnavailable, "server unavailable", "0x02 server unavailable"},
		{smq.CodeBadCredentials, "incorrect credentials", "0x03 incorrect credentials"},
		{smq.CodeCertRequired, "client certificate required", "0x04 client certificate required"},
		{smq.CodeCertNotAccepted, "client certificate not accepted", "0x05 client certificate not accepted"},
		{smq.CodeAccessDenied, "access denied", "0x06 access denied"},
		{7, "unknown code", "0x07 unknown code"},
		{0xff, "unknown code", "0xff unknown code"},
	}
	for _, tc := range tests {
		t.Run(tc.str, func(t *testing.T) {
			if got := tc.code.Text(); got != tc.text {
				t.Errorf("Text() = %q, want %q", got, tc.text)
			}
			if got := tc.code.String(); got != tc.str {
				t.Errorf("String() = %q, want %q", got, tc.str)
			}
		})
	}
	// The wire values are the spec's, not just the names.
	for i, c := range []smq.ConnackCode{smq.CodeAccepted, smq.CodeBadVersion, smq.CodeServerUnavailable,
		smq.CodeBadCredentials, smq.CodeCertRequired, smq.CodeCertNotAccepted, smq.CodeAccessDenied} {
		if int(c) != i {
			t.Errorf("%v has value %d, want %d", c, c, i)
		}
	}
}

func TestTypeString(t *testing.T) {
	names := map[smq.Type]string{
		1: "Init", 2: "Connect", 3: "Connack", 4: "Subscribe", 5: "Suback", 6: "Create",
		7: "Createack", 8: "Publish", 9: "Unsubscribe", 11: "Disconnect", 12: "Ping",
		13: "Pong", 14: "Observe", 15: "Unobserve", 16: "Change", 17: "Createsub",
		18: "Createsuback", 19: "PubFrag",
	}
	consts := map[smq.Type]smq.Type{
		1: smq.TypeInit, 2: smq.TypeConnect, 3: smq.TypeConnack, 4: smq.TypeSubscribe,
		5: smq.TypeSuback, 6: smq.TypeCreate, 7: smq.TypeCreateack, 8: smq.TypePublish,
		9: smq.TypeUnsubscribe, 11: smq.TypeDisconnect, 12: smq.TypePing, 13: smq.TypePong,
		14: smq.TypeObserve, 15: smq.TypeUnobserve, 16: smq.TypeChange, 17: smq.TypeCreatesub,
		18: smq.TypeCreatesuback, 19: smq.TypePubFrag,
	}
	for i := 0; i <= 255; i++ {
		typ := smq.Type(i)
		want, ok := names[typ]
		if !ok {
			want = "type " + strconv.Itoa(i)
		}
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", i, got, want)
		}
		if typ.Valid() != ok {
			t.Errorf("Type(%d).Valid() = %v, want %v", i, typ.Valid(), ok)
		}
		if ok && consts[typ] != typ {
			t.Errorf("constant for %s is %d, want %d", want, consts[typ], i)
		}
	}
}

func TestIDAndPTID(t *testing.T) {
	pub := b(8, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 'x')
	if got := smq.ID(pub); got != 7 {
		t.Errorf("ID(Publish) = %d, want 7", got)
	}
	if got := smq.PTID(pub); got != 9 {
		t.Errorf("PTID(Publish) = %d, want 9", got)
	}
	for _, msg := range [][]byte{b(9, 0, 0, 1, 2), b(14, 0, 0, 1, 2), b(15, 0, 0, 1, 2), b(16, 0, 0, 1, 2, 0, 0, 0, 0)} {
		if got := smq.ID(msg); got != 0x0102 {
			t.Errorf("ID(%v) = %#x, want 0x102", smq.Type(msg[0]), got)
		}
	}
}

func TestDecodePublish(t *testing.T) {
	msg := b(8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 'p', 'q')
	p, err := smq.DecodePublish(msg)
	if err != nil {
		t.Fatal(err)
	}
	if p.TID != 1 || p.PTID != 2 || p.SubTID != 3 || string(p.Payload) != "pq" {
		t.Errorf("DecodePublish = %+v", p)
	}
	msg[13] = 'z'
	if p.Payload[0] != 'z' {
		t.Error("payload does not alias the message")
	}
	// PubFrag decodes through the same path.
	frag := b(19, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0)
	if p, err := smq.DecodePublish(frag); err != nil || p.PTID != 2 || len(p.Payload) != 0 {
		t.Errorf("DecodePublish(PubFrag) = %+v, %v", p, err)
	}
}
