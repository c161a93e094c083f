package smq_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/smqgw/smqgw/smq"
)

// frame wraps msg (type + body) in raw framing by hand: a big-endian u16 total
// length that counts its own 2 bytes.
func frame(msg []byte) []byte {
	n := len(msg) + 2
	return join(b(byte(n>>8), byte(n)), msg)
}

// publishMsg is a Publish message (type + body) with an n-byte payload.
func publishMsg(tid uint32, n int) []byte {
	msg := b(8, byte(tid>>24), byte(tid>>16), byte(tid>>8), byte(tid), 0, 0, 0, 2, 0, 0, 0, 0)
	for i := range n {
		msg = append(msg, byte(i*7))
	}
	return msg
}

// readAll reads messages until an error, copying each one, and returns them
// with the final error.
func readAll(t *testing.T, r *smq.Reader) ([][]byte, error) {
	t.Helper()
	var out [][]byte
	for {
		msg, err := r.Read()
		if err != nil {
			if msg != nil {
				t.Errorf("Read returned %d bytes with error %v", len(msg), err)
			}
			return out, err
		}
		out = append(out, bytes.Clone(msg))
	}
}

func sameMessages(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d: got %d bytes % .20x, want %d bytes % .20x",
				i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
}

// someMessages is a mix of every message of the encoding table plus a few
// Publishes of growing size.
func someMessages() [][]byte {
	var msgs [][]byte
	for _, tc := range messageCases {
		msgs = append(msgs, tc.wire)
	}
	for _, n := range []int{0, 1, 64, 1000, 5000} {
		msgs = append(msgs, publishMsg(uint32(n), n))
	}
	return msgs
}

func stream(msgs [][]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = append(out, frame(m)...)
	}
	return out
}

func TestReaderStreams(t *testing.T) {
	msgs := someMessages()
	big := publishMsg(1, 60000)
	largest := publishMsg(2, smq.MaxRawMessage-1-smq.PublishHeaderLen)
	var many [][]byte
	for i := range 2000 {
		many = append(many, publishMsg(uint32(i), i%300), b(12), b(16, 0, 0, 0, byte(i), 0, 0, 0, 1))
	}
	tests := []struct {
		name    string
		msgs    [][]byte
		bufSize int
		wrap    func(io.Reader) io.Reader
	}{
		{"whole", msgs, 4096, nil},
		{"one-byte-at-a-time", msgs, 4096, iotest.OneByteReader},
		{"half-reads", msgs, 4096, iotest.HalfReader},
		{"data-with-eof", msgs, 4096, iotest.DataErrReader},
		{"back-to-back", many, 4096, nil},
		{"back-to-back-small-buffer", many, 16, nil},
		{"larger-than-buffer", [][]byte{b(12), big, b(13), big[:100], big}, 4096, nil},
		{"larger-than-buffer-one-byte", [][]byte{b(12), big, b(13)}, 4096, iotest.OneByteReader},
		{"largest", [][]byte{largest, b(12), largest}, 4096, nil},
		{"largest-fits-buffer", [][]byte{largest, b(12), largest}, 70000, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var in io.Reader = bytes.NewReader(stream(tc.msgs))
			if tc.wrap != nil {
				in = tc.wrap(in)
			}
			br := bufio.NewReaderSize(in, tc.bufSize)
			r := smq.NewReader(br)
			if r.Buffered() != br {
				t.Error("Buffered() is not the bufio.Reader given")
			}
			got, err := readAll(t, r)
			if err != io.EOF {
				t.Errorf("final error = %v, want exactly io.EOF", err)
			}
			sameMessages(t, got, tc.msgs)
		})
	}
}

func TestReaderLargestFrame(t *testing.T) {
	msg := publishMsg(1, smq.MaxRawMessage-1-smq.PublishHeaderLen)
	if len(msg) != 65533 {
		t.Fatalf("test message is %d bytes", len(msg))
	}
	f := frame(msg)
	if f[0] != 0xff || f[1] != 0xff {
		t.Fatalf("length field % x, want ff ff", f[:2])
	}
	r := smq.NewReader(bufio.NewReader(bytes.NewReader(f)))
	got, err := r.Read()
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Read = %d bytes, %v", len(got), err)
	}
	p, err := smq.DecodePublish(got)
	if err != nil || p.TID != 1 || len(p.Payload) != 65520 {
		t.Errorf("DecodePublish = TID %d, %d-byte payload, %v", p.TID, len(p.Payload), err)
	}
}

// trapReader fails the test if anything reads from it.
type trapReader struct{ t *testing.T }

func (r trapReader) Read([]byte) (int, error) {
	r.t.Error("the frame body was read")
	return 0, io.ErrUnexpectedEOF
}

func TestReaderMax(t *testing.T) {
	t.Run("over-max-body-not-read", func(t *testing.T) {
		msg := publishMsg(1, 188) // 201 bytes
		// Only the length and type byte are available; reading on trips.
		in := io.MultiReader(bytes.NewReader(frame(msg)[:3]), trapReader{t})
		r := smq.NewReader(bufio.NewReader(in))
		r.Max = 200
		_, err := r.Read()
		checkMessageError(t, err, smq.ErrTooBig, smq.TypePublish, 201,
			"smq: message too big: Publish: message is 201 bytes, the limit is 200")
	})
	t.Run("at-max", func(t *testing.T) {
		msg := publishMsg(1, 187) // 200 bytes
		r := smq.NewReader(bufio.NewReader(bytes.NewReader(frame(msg))))
		r.Max = 200
		if got, err := r.Read(); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("Read = %d bytes, %v", len(got), err)
		}
	})
	t.Run("max-above-raw-limit", func(t *testing.T) {
		msg := publishMsg(1, 65520)
		r := smq.NewReader(bufio.NewReader(bytes.NewReader(frame(msg))))
		r.Max = 1 << 20
		if got, err := r.Read(); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("Read = %d bytes, %v", len(got), err)
		}
	})
	t.Run("length-only", func(t *testing.T) {
		// The type byte never comes: the error still says how big.
		r := smq.NewReader(bufio.NewReader(bytes.NewReader(b(0x10, 0x00))))
		r.Max = 100
		_, err := r.Read()
		checkMessageError(t, err, smq.ErrTooBig, 0, 0x1000-2,
			"smq: message too big: message is 4094 bytes, the limit is 100")
	})
}

func TestReaderMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		err  error // io.EOF, io.ErrUnexpectedEOF, or a class
		n    int
		text string
	}{
		{"length-0", b(0, 0, 8, 0, 0, 0), smq.ErrShortFrame, 0, "smq: short frame: frame length 0, the least is 3"},
		{"length-1", b(0, 1, 8), smq.ErrShortFrame, 1, "smq: short frame: frame length 1, the least is 3"},
		{"length-2", b(0, 2), smq.ErrShortFrame, 2, "smq: short frame: frame length 2, the least is 3"},
		{"clean-eof", nil, io.EOF, 0, ""},
		{"eof-in-length", b(0), io.ErrUnexpectedEOF, 0, ""},
		{"eof-after-length", b(0, 5), io.ErrUnexpectedEOF, 0, ""},
		{"eof-in-body", b(0, 5, 12, 0), io.ErrUnexpectedEOF, 0, ""},
		{"eof-in-big-body", frame(publishMsg(1, 10000))[:9000], io.ErrUnexpectedEOF, 0, ""},
		{"eof-just-before-end", frame(publishMsg(1, 10000))[:10014], io.ErrUnexpectedEOF, 0, ""},
	}
	for _, tc := range tests {
		for _, wrap := range []struct {
			name string
			f    func(io.Reader) io.Reader
		}{{"whole", nil}, {"one-byte", iotest.OneByteReader}} {
			t.Run(tc.name+"/"+wrap.name, func(t *testing.T) {
				// A good frame first: errors must not depend on position.
				var in io.Reader = bytes.NewReader(join(frame(b(12)), tc.in))
				if wrap.f != nil {
					in = wrap.f(in)
				}
				r := smq.NewReader(bufio.NewReaderSize(in, 4096))
				got, err := readAll(t, r)
				sameMessages(t, got, [][]byte{b(12)})
				if tc.err == io.EOF || tc.err == io.ErrUnexpectedEOF {
					if err != tc.err {
						t.Fatalf("err = %v, want exactly %v", err, tc.err)
					}
					return
				}
				checkMessageError(t, err, tc.err, 0, tc.n, tc.text)
			})
		}
	}
}

// A read error other than EOF is returned as is.
func TestReaderPassesErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, in := range [][]byte{nil, b(0), b(0, 10, 8, 0)} {
		r := smq.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(in), iotest.ErrReader(boom))))
		if _, err := r.Read(); err != boom {
			t.Errorf("after % x: err = %v, want boom", in, err)
		}
	}
}

// The Reader frames only: it hands out reserved types for Check to refuse.
func TestReaderDoesNotCheckTypes(t *testing.T) {
	r := smq.NewReader(bufio.NewReader(bytes.NewReader(frame(b(20, 1, 2)))))
	msg, err := r.Read()
	if err != nil || !bytes.Equal(msg, b(20, 1, 2)) {
		t.Fatalf("Read = % x, %v", msg, err)
	}
	if err := smq.Check(msg); !errors.Is(err, smq.ErrUnknownType) {
		t.Errorf("Check = %v, want ErrUnknownType", err)
	}
}

func TestAppendRaw(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		got, err := smq.AppendRaw(s("pre"), b(16, 0, 0, 0, 1, 0, 0, 0, 2))
		if want := join(s("pre"), b(0, 11, 16, 0, 0, 0, 1, 0, 0, 0, 2)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("AppendRaw = % x, %v; want % x", got, err, want)
		}
	})
	t.Run("largest", func(t *testing.T) {
		msg := publishMsg(1, 65520)
		got, err := smq.AppendRaw(nil, msg)
		if err != nil || len(got) != 65535 || got[0] != 0xff || got[1] != 0xff || !bytes.Equal(got[2:], msg) {
			t.Errorf("AppendRaw(65533 bytes) = %d bytes % x..., %v", len(got), got[:min(4, len(got))], err)
		}
	})
	t.Run("too-big", func(t *testing.T) {
		dst := append(make([]byte, 0, 100), "pre"...)
		got, err := smq.AppendRaw(dst, publishMsg(1, 65521))
		checkMessageError(t, err, smq.ErrTooBig, smq.TypePublish, 65534,
			"smq: message too big: Publish: message is 65534 bytes, a raw frame holds at most 65533")
		if string(got) != "pre" || &got[0] != &dst[0] {
			t.Errorf("dst changed: %q", got[:min(10, len(got))])
		}
	})
	t.Run("empty", func(t *testing.T) {
		got, err := smq.AppendRaw(s("pre"), nil)
		checkMessageError(t, err, smq.ErrShortFrame, 0, 0, "smq: short frame: message has no type byte")
		if string(got) != "pre" {
			t.Errorf("dst changed: %q", got)
		}
	})
}

func TestAppendRawMessage(t *testing.T) {
	t.Run("largest", func(t *testing.T) {
		p := &smq.Publish{TID: 1, PTID: 2, Payload: make([]byte, 65520)}
		got, err := smq.AppendRawMessage(s("pre"), p)
		if err != nil || len(got) != 3+65535 || got[3] != 0xff || got[4] != 0xff || got[5] != 8 {
			t.Fatalf("AppendRawMessage = %d bytes, %v", len(got), err)
		}
	})
	for _, tc := range []struct {
		name string
		m    smq.Message
		typ  smq.Type
	}{
		{"Publish", &smq.Publish{TID: 1, Payload: make([]byte, 65521)}, smq.TypePublish},
		{"PubFrag", &smq.PubFrag{Payload: make([]byte, 70000)}, smq.TypePubFrag},
		{"Disconnect", smq.Disconnect{Reason: strings.Repeat("r", 65533)}, smq.TypeDisconnect},
		{"Subscribe", smq.Subscribe{Topic: strings.Repeat("t", 65533)}, smq.TypeSubscribe},
	} {
		t.Run("too-big-"+tc.name, func(t *testing.T) {
			n := len(tc.m.Append(nil))
			for _, dst := range [][]byte{nil, s("pre"), append(make([]byte, 0, 1<<17), "pre"...)} {
				orig := bytes.Clone(dst)
				got, err := smq.AppendRawMessage(dst, tc.m)
				checkMessageError(t, err, smq.ErrTooBig, tc.typ, n, fmt.Sprintf(
					"smq: message too big: %v: message is %d bytes, a raw frame holds at most 65533", tc.typ, n))
				if !bytes.Equal(got, orig) || len(got) != len(dst) {
					t.Errorf("dst changed: %d bytes, want %q", len(got), orig)
				}
				if !bytes.Equal(dst, orig) {
					t.Errorf("caller's dst contents changed")
				}
			}
		})
	}
}

// chunkReader returns its chunks one Read at a time (or less, if p is short).
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadWS(t *testing.T) {
	const max = 1000
	msg := publishMsg(1, max-13)
	tests := []struct {
		name string
		in   []byte
		err  error
		text string
	}{
		{"exact-max", msg, nil, ""},
		{"small", b(12), nil, ""},
		{"max+1", publishMsg(1, max-12), smq.ErrTooBig,
			"smq: message too big: Publish: message is over the limit of 1000 bytes"},
		{"much-bigger", publishMsg(1, 100000), smq.ErrTooBig,
			"smq: message too big: Publish: message is over the limit of 1000 bytes"},
		{"empty", nil, smq.ErrShortFrame, "smq: short frame: empty WebSocket message"},
	}
	for _, tc := range tests {
		for _, wrap := range []struct {
			name string
			f    func(io.Reader) io.Reader
		}{{"whole", nil}, {"one-byte", iotest.OneByteReader}, {"data-eof", iotest.DataErrReader}} {
			t.Run(tc.name+"/"+wrap.name, func(t *testing.T) {
				var in io.Reader = bytes.NewReader(tc.in)
				if wrap.f != nil {
					in = wrap.f(in)
				}
				cr := &countingReader{r: in}
				got, err := smq.ReadWS(cr, nil, max)
				if tc.err == nil {
					if err != nil || !bytes.Equal(got, tc.in) {
						t.Fatalf("ReadWS = %d bytes, %v; want %d bytes", len(got), err, len(tc.in))
					}
					return
				}
				if !errors.Is(err, tc.err) || err.Error() != tc.text {
					t.Fatalf("ReadWS error %q, want %q", err, tc.text)
				}
				if len(got) != 0 {
					t.Errorf("ReadWS returned %d bytes with the error", len(got))
				}
				if cr.n > max+1 {
					t.Errorf("read %d bytes of an oversized message, want at most %d", cr.n, max+1)
				}
			})
		}
	}
}

func TestReadWSReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 2048)
	msgs := [][]byte{publishMsg(1, 500), b(12), publishMsg(2, 1000)}
	for _, m := range msgs {
		got, err := smq.ReadWS(bytes.NewReader(m), buf, 1500)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("ReadWS = %d bytes, %v", len(got), err)
		}
		if &got[:1][0] != &buf[:1][0] {
			t.Error("ReadWS did not reuse the buffer it was given")
		}
		buf = got
	}
	// A too-small buffer is grown and the bigger one handed back for reuse.
	small := make([]byte, 0, 16)
	got, err := smq.ReadWS(bytes.NewReader(msgs[2]), small, 1500)
	if err != nil || !bytes.Equal(got, msgs[2]) {
		t.Fatalf("ReadWS = %d bytes, %v", len(got), err)
	}
	again, err := smq.ReadWS(bytes.NewReader(msgs[0]), got, 1500)
	if err != nil || &again[0] != &got[:1][0] {
		t.Errorf("grown buffer not reused: %v", err)
	}
	// An error returns the buffer too, emptied.
	got, err = smq.ReadWS(bytes.NewReader(publishMsg(1, 2000)), buf, 1500)
	if !errors.Is(err, smq.ErrTooBig) || len(got) != 0 || cap(got) < 1500 {
		t.Errorf("ReadWS(too big) = len %d cap %d, %v", len(got), cap(got), err)
	}
}

func TestReadWSPassesErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := smq.ReadWS(io.MultiReader(bytes.NewReader(b(12, 1)), iotest.ErrReader(boom)), nil, 100)
	if err != boom {
		t.Errorf("err = %v, want boom", err)
	}
}
