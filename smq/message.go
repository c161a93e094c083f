package smq

import (
	"encoding/binary"
)

// Message is one typed SMQ message.
//
// Append appends the message in WebSocket framing (type byte + body) to dst;
// AppendRaw adds the raw 2-byte length in front. Decode turns such bytes back
// into a Message.
type Message interface {
	Type() Type
	Append(dst []byte) []byte
}

// Init is the broker's first message: protocol version, a random seed for
// credential hashing, and the client's IP address as the broker sees it.
type Init struct {
	Version uint8 // always 1 today
	Seed    uint32
	IP      string
}

// Connect is the client's first message. Version is 1 or 2; MaxSize is
// present on the wire only in version 2. Info is the free-form rest.
type Connect struct {
	Version     uint8
	MaxSize     uint16 // version 2 only
	UID         string // at most 255 bytes
	Credentials string // at most 255 bytes, may be binary
	Info        string
}

// Connack answers Connect. A refusal carries ETID 0 and a reason.
type Connack struct {
	Code   ConnackCode
	ETID   uint32
	Reason string
}

// Subscribe asks for a topic's TID and for its messages.
type Subscribe struct{ Topic string }

// Create asks for a topic's TID without subscribing.
type Create struct{ Topic string }

// Createsub asks for a sub-topic's ID.
type Createsub struct{ Topic string }

// Suback answers Subscribe.
type Suback struct {
	Status AckStatus
	ID     uint32 // 0 when denied
	Topic  string
}

// Createack answers Create.
type Createack struct {
	Status AckStatus
	ID     uint32
	Topic  string
}

// Createsuback answers Createsub, with the sub-topic ID.
type Createsuback struct {
	Status AckStatus
	ID     uint32
	Topic  string
}

// Publish carries a payload to a topic (TID) or one client (its ETID). PTID is
// the sender's ETID; SubTID is an optional sub-topic ID. Payload aliases the
// bytes it was decoded from.
type Publish struct {
	TID, PTID, SubTID uint32
	Payload           []byte
}

// PubFrag is one fragment of a large Publish on the raw transport: TID is 0 on
// every fragment but the last.
type PubFrag struct {
	TID, PTID, SubTID uint32
	Payload           []byte
}

// Unsubscribe stops the messages of a topic. It has no ack.
type Unsubscribe struct{ TID uint32 }

// Disconnect ends a session, with an optional reason.
type Disconnect struct{ Reason string }

// Ping asks for a Pong. It is always encoded empty; trailing bytes are
// ignored on decode.
type Ping struct{}

// Pong answers Ping.
type Pong struct{}

// Observe asks for Change messages about a topic (TID) or a client (ETID).
type Observe struct{ ID uint32 }

// Unobserve stops Observe.
type Unobserve struct{ ID uint32 }

// Change reports the subscriber count of an observed topic, or 0 when an
// observed client has gone.
type Change struct{ ID, Count uint32 }

func (Init) Type() Type         { return TypeInit }
func (Connect) Type() Type      { return TypeConnect }
func (Connack) Type() Type      { return TypeConnack }
func (Subscribe) Type() Type    { return TypeSubscribe }
func (Create) Type() Type       { return TypeCreate }
func (Createsub) Type() Type    { return TypeCreatesub }
func (Suback) Type() Type       { return TypeSuback }
func (Createack) Type() Type    { return TypeCreateack }
func (Createsuback) Type() Type { return TypeCreatesuback }
func (Publish) Type() Type      { return TypePublish }
func (PubFrag) Type() Type      { return TypePubFrag }
func (Unsubscribe) Type() Type  { return TypeUnsubscribe }
func (Disconnect) Type() Type   { return TypeDisconnect }
func (Ping) Type() Type         { return TypePing }
func (Pong) Type() Type         { return TypePong }
func (Observe) Type() Type      { return TypeObserve }
func (Unobserve) Type() Type    { return TypeUnobserve }
func (Change) Type() Type       { return TypeChange }

func (m Init) Append(b []byte) []byte {
	b = append(b, byte(TypeInit), m.Version)
	b = binary.BigEndian.AppendUint32(b, m.Seed)
	return append(b, m.IP...)
}

// Append encodes the Connect. UID and Credentials longer than 255 bytes are
// cut to 255; use Check to refuse them instead.
func (m Connect) Append(b []byte) []byte {
	b = append(b, byte(TypeConnect), m.Version)
	if m.Version >= 2 {
		b = binary.BigEndian.AppendUint16(b, m.MaxSize)
	}
	b = appendStr8(b, m.UID)
	b = appendStr8(b, m.Credentials)
	return append(b, m.Info...)
}

// Check reports a Connect that cannot be encoded faithfully.
func (m Connect) Check() error {
	if m.Version != 1 && m.Version != 2 {
		return fieldErr(TypeConnect, 0, "version %d, want 1 or 2", m.Version)
	}
	if len(m.UID) > 255 {
		return fieldErr(TypeConnect, 0, "uid is %d bytes, at most 255", len(m.UID))
	}
	if len(m.Credentials) > 255 {
		return fieldErr(TypeConnect, 0, "credentials are %d bytes, at most 255", len(m.Credentials))
	}
	return nil
}

func appendStr8(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func (m Connack) Append(b []byte) []byte {
	b = append(b, byte(TypeConnack), byte(m.Code))
	b = binary.BigEndian.AppendUint32(b, m.ETID)
	return append(b, m.Reason...)
}

func (m Subscribe) Append(b []byte) []byte { return append(append(b, byte(TypeSubscribe)), m.Topic...) }
func (m Create) Append(b []byte) []byte    { return append(append(b, byte(TypeCreate)), m.Topic...) }
func (m Createsub) Append(b []byte) []byte { return append(append(b, byte(TypeCreatesub)), m.Topic...) }

func appendAck(b []byte, t Type, s AckStatus, id uint32, topic string) []byte {
	b = append(b, byte(t), byte(s))
	b = binary.BigEndian.AppendUint32(b, id)
	return append(b, topic...)
}

func (m Suback) Append(b []byte) []byte { return appendAck(b, TypeSuback, m.Status, m.ID, m.Topic) }
func (m Createack) Append(b []byte) []byte {
	return appendAck(b, TypeCreateack, m.Status, m.ID, m.Topic)
}
func (m Createsuback) Append(b []byte) []byte {
	return appendAck(b, TypeCreatesuback, m.Status, m.ID, m.Topic)
}

func appendPub(b []byte, t Type, tid, ptid, sub uint32, payload []byte) []byte {
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint32(b, tid)
	b = binary.BigEndian.AppendUint32(b, ptid)
	b = binary.BigEndian.AppendUint32(b, sub)
	return append(b, payload...)
}

func (m *Publish) Append(b []byte) []byte {
	return appendPub(b, TypePublish, m.TID, m.PTID, m.SubTID, m.Payload)
}

func (m *PubFrag) Append(b []byte) []byte {
	return appendPub(b, TypePubFrag, m.TID, m.PTID, m.SubTID, m.Payload)
}

func appendU32(b []byte, t Type, v uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, byte(t)), v)
}

func (m Unsubscribe) Append(b []byte) []byte { return appendU32(b, TypeUnsubscribe, m.TID) }
func (m Observe) Append(b []byte) []byte     { return appendU32(b, TypeObserve, m.ID) }
func (m Unobserve) Append(b []byte) []byte   { return appendU32(b, TypeUnobserve, m.ID) }
func (m Disconnect) Append(b []byte) []byte {
	return append(append(b, byte(TypeDisconnect)), m.Reason...)
}
func (Ping) Append(b []byte) []byte { return append(b, byte(TypePing)) }
func (Pong) Append(b []byte) []byte { return append(b, byte(TypePong)) }

func (m Change) Append(b []byte) []byte {
	b = appendU32(b, TypeChange, m.ID)
	return binary.BigEndian.AppendUint32(b, m.Count)
}

// minBody is the smallest body each message type may have.
var minBody = [...]int{
	TypeInit:         5,
	TypeConnect:      3, // v1: version, uidlen, credlen
	TypeConnack:      5,
	TypeSuback:       5,
	TypeCreateack:    5,
	TypeCreatesuback: 5,
	TypePublish:      PublishHeaderLen,
	TypePubFrag:      PublishHeaderLen,
	TypeUnsubscribe:  4,
	TypeObserve:      4,
	TypeUnobserve:    4,
	TypeChange:       8,
}

// Check validates a message in WebSocket framing (type byte + body) without
// decoding it: it must have a type byte, a defined type, and a body long
// enough for that type. It does not allocate unless it returns an error.
func Check(msg []byte) error {
	if len(msg) == 0 {
		return &MessageError{Err: ErrShortFrame, Detail: "message has no type byte"}
	}
	t := Type(msg[0])
	if !t.Valid() {
		return &MessageError{Type: t, Len: len(msg), Err: ErrUnknownType,
			Detail: "reserved message type"}
	}
	if int(t) < len(minBody) && len(msg)-1 < minBody[t] {
		return shortErr(t, len(msg)-1, minBody[t])
	}
	return nil
}

// Decode decodes one message in WebSocket framing (type byte + body). Strings
// are copied; the payload of Publish and PubFrag aliases msg. Publish and
// PubFrag are returned as pointers, the others as values.
func Decode(msg []byte) (Message, error) {
	if err := Check(msg); err != nil {
		return nil, err
	}
	t, body := Type(msg[0]), msg[1:]
	be := binary.BigEndian
	switch t {
	case TypeInit:
		return Init{Version: body[0], Seed: be.Uint32(body[1:]), IP: string(body[5:])}, nil
	case TypeConnect:
		return decodeConnect(body)
	case TypeConnack:
		return Connack{Code: ConnackCode(body[0]), ETID: be.Uint32(body[1:]), Reason: string(body[5:])}, nil
	case TypeSubscribe:
		return Subscribe{Topic: string(body)}, nil
	case TypeCreate:
		return Create{Topic: string(body)}, nil
	case TypeCreatesub:
		return Createsub{Topic: string(body)}, nil
	case TypeSuback:
		return Suback{Status: AckStatus(body[0]), ID: be.Uint32(body[1:]), Topic: string(body[5:])}, nil
	case TypeCreateack:
		return Createack{Status: AckStatus(body[0]), ID: be.Uint32(body[1:]), Topic: string(body[5:])}, nil
	case TypeCreatesuback:
		return Createsuback{Status: AckStatus(body[0]), ID: be.Uint32(body[1:]), Topic: string(body[5:])}, nil
	case TypePublish:
		p, _ := DecodePublish(msg)
		return &p, nil
	case TypePubFrag:
		return &PubFrag{TID: be.Uint32(body), PTID: be.Uint32(body[4:]), SubTID: be.Uint32(body[8:]),
			Payload: body[12:]}, nil
	case TypeUnsubscribe:
		return Unsubscribe{TID: be.Uint32(body)}, nil
	case TypeDisconnect:
		return Disconnect{Reason: string(body)}, nil
	case TypePing:
		return Ping{}, nil
	case TypePong:
		return Pong{}, nil
	case TypeObserve:
		return Observe{ID: be.Uint32(body)}, nil
	case TypeUnobserve:
		return Unobserve{ID: be.Uint32(body)}, nil
	case TypeChange:
		return Change{ID: be.Uint32(body), Count: be.Uint32(body[4:])}, nil
	}
	// Unreachable: Check accepted only defined types.
	return nil, &MessageError{Type: t, Len: len(msg), Err: ErrUnknownType, Detail: "reserved message type"}
}

func decodeConnect(body []byte) (Message, error) {
	n := len(body)
	c := Connect{Version: body[0]}
	rest := body[1:]
	switch c.Version {
	case 1:
	case 2:
		if len(rest) < 4 {
			return nil, shortErr(TypeConnect, n, 5)
		}
		c.MaxSize = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
	default:
		return nil, fieldErr(TypeConnect, n, "protocol version %d, want 1 or 2", c.Version)
	}
	uid, rest, ok := cutStr8(rest)
	if !ok {
		return nil, fieldErr(TypeConnect, n, "uid length %d runs past the end of the message", rest[0])
	}
	cred, rest, ok := cutStr8(rest)
	if !ok {
		if len(rest) == 0 {
			return nil, fieldErr(TypeConnect, n, "credentials length missing")
		}
		return nil, fieldErr(TypeConnect, n, "credentials length %d runs past the end of the message", rest[0])
	}
	c.UID, c.Credentials, c.Info = string(uid), string(cred), string(rest)
	return c, nil
}

// cutStr8 splits a length-prefixed string off b. On failure it returns b
// itself as rest.
func cutStr8(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || len(b)-1 < int(b[0]) {
		return nil, b, false
	}
	n := int(b[0])
	return b[1 : 1+n], b[1+n:], true
}

// DecodePublish decodes a Publish or PubFrag message without allocating; the
// payload aliases msg.
func DecodePublish(msg []byte) (Publish, error) {
	if len(msg) == 0 || (Type(msg[0]) != TypePublish && Type(msg[0]) != TypePubFrag) {
		if err := Check(msg); err != nil {
			return Publish{}, err
		}
		return Publish{}, fieldErr(Type(msg[0]), len(msg), "not a Publish")
	}
	if len(msg)-1 < PublishHeaderLen {
		return Publish{}, shortErr(Type(msg[0]), len(msg)-1, PublishHeaderLen)
	}
	be := binary.BigEndian
	return Publish{TID: be.Uint32(msg[1:]), PTID: be.Uint32(msg[5:]), SubTID: be.Uint32(msg[9:]),
		Payload: msg[1+PublishHeaderLen:]}, nil
}

// ID returns the first u32 of a message body: the TID of Publish, PubFrag and
// Unsubscribe, the ID of Observe, Unobserve and Change. The message must have
// passed Check.
func ID(msg []byte) uint32 { return binary.BigEndian.Uint32(msg[1:]) }

// PTID returns the sender ETID of a Publish or PubFrag that passed Check.
func PTID(msg []byte) uint32 { return binary.BigEndian.Uint32(msg[5:]) }

// SubTID returns the sub-topic ID of a Publish or PubFrag that passed
// Check.
func SubTID(msg []byte) uint32 { return binary.BigEndian.Uint32(msg[9:]) }
