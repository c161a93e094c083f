package smq_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/smqgw/smqgw/smq"
)

// The seed corpora live in testdata/fuzz/<FuzzName>: one meaningful input per
// message type, framing edge case or client bootstrap.

// FuzzDecode: whatever Decode accepts re-encodes to bytes that decode to the
// same message, and re-encoding is stable. Whatever it refuses is refused
// with exactly one error class.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := smq.Decode(data)
		cerr := smq.Check(data)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned %#v with error %v", m, err)
			}
			var me *smq.MessageError
			if !errors.As(err, &me) {
				t.Fatalf("error %v is not a *MessageError", err)
			}
			classes := 0
			for _, class := range errClasses {
				if errors.Is(err, class) {
					classes++
				}
			}
			if classes != 1 {
				t.Fatalf("error %q is in %d classes", err, classes)
			}
			if cerr != nil && cerr.Error() != err.Error() {
				t.Fatalf("Check = %v, Decode = %v", cerr, err)
			}
			if cerr == nil && (len(data) == 0 || smq.Type(data[0]) != smq.TypeConnect) {
				t.Fatalf("Check accepted what Decode refused: %v", err)
			}
			return
		}
		if cerr != nil {
			t.Fatalf("Decode accepted what Check refused: %v", cerr)
		}
		if m.Type() != smq.Type(data[0]) {
			t.Fatalf("decoded %v from a type %d message", m.Type(), data[0])
		}
		enc := m.Append(nil)
		if enc[0] != data[0] || len(enc) > len(data) {
			t.Fatalf("re-encoding of % x is % x", data, enc)
		}
		m2, err := smq.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Append(Decode(% x))) = %v", data, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n %#v\n %#v", m, m2)
		}
		if enc2 := m2.Append(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: % x then % x", enc, enc2)
		}
		// Encodings that lose nothing reproduce the input exactly.
		switch m.(type) {
		case smq.Ping, smq.Pong, smq.Unsubscribe, smq.Observe, smq.Unobserve, smq.Change:
		default:
			if !bytes.Equal(enc, data) {
				t.Fatalf("Append(Decode(% x)) = % x", data, enc)
			}
		}
		if typ := m.Type(); typ == smq.TypePublish || typ == smq.TypePubFrag {
			p, err := smq.DecodePublish(data)
			if err != nil || p.TID != smq.ID(data) || p.PTID != smq.PTID(data) ||
				!bytes.Equal(p.Payload, data[1+smq.PublishHeaderLen:]) {
				t.Fatalf("DecodePublish = %+v, %v; Decode = %#v", p, err, m)
			}
		}
		// And the raw framing carries it.
		raw, err := smq.AppendRawMessage(nil, m)
		if len(enc) > smq.MaxRawMessage {
			if !errors.Is(err, smq.ErrTooBig) {
				t.Fatalf("AppendRawMessage of %d bytes: %v", len(enc), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := smq.NewReader(bufio.NewReader(bytes.NewReader(raw))).Read()
		if err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("raw frame read back as % x, %v", got, err)
		}
	})
}

// readEvent is one result of Reader.Read: a message or an error.
type readEvent struct {
	msg []byte
	err string
}

// readEvents reads until the first error (the stream cannot be resynchronised
// after one), at most limit messages.
func readEvents(r *smq.Reader, limit int) []readEvent {
	var ev []readEvent
	for range limit {
		msg, err := r.Read()
		if err != nil {
			return append(ev, readEvent{err: err.Error()})
		}
		ev = append(ev, readEvent{msg: bytes.Clone(msg)})
	}
	return append(ev, readEvent{err: "limit"})
}

// FuzzReaderSplit: a stream of raw frames read whole, cut into two or three
// chunks at fuzzer-chosen points, or one byte at a time, with buffers of
// several sizes (so both the in-buffer and the copying paths of Read run),
// gives the same messages and the same final error.
func FuzzReaderSplit(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2, maxLen uint16) {
		limit := len(data)/smq.MinRawFrame + 2
		read := func(in io.Reader, bufSize int) []readEvent {
			r := smq.NewReader(bufio.NewReaderSize(in, bufSize))
			r.Max = int(maxLen)
			return readEvents(r, limit)
		}
		// Whole: every frame the stream can hold fits the buffer.
		want := read(bytes.NewReader(data), max(len(data), 16))

		c1 := int(cut1) % (len(data) + 1)
		c2 := c1 + int(cut2)%(len(data)-c1+1)
		chunks := func() io.Reader {
			return &chunkReader{chunks: [][]byte{data[:c1], data[c1:c2], data[c2:]}}
		}
		feeds := []struct {
			name string
			in   func() io.Reader
			size int
		}{
			{"two-chunks", func() io.Reader { return &chunkReader{chunks: [][]byte{data[:c1], data[c1:]}} }, 4096},
			{"three-chunks", chunks, 4096},
			{"three-chunks-small-buffer", chunks, 16},
			{"one-byte", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) }, 4096},
			{"one-byte-small-buffer", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) }, 16},
			{"data-with-eof", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) }, 64},
		}
		for _, feed := range feeds {
			got := read(feed.in(), feed.size)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s (cuts %d, %d, max %d): got %d events, last %q; want %d, last %q",
					feed.name, c1, c2, maxLen, len(got), got[len(got)-1].err, len(want), want[len(want)-1].err)
			}
		}
		// Whatever was read is exactly what was framed.
		var again []byte
		for _, ev := range want {
			if ev.err == "" {
				again = append(again, frame(ev.msg)...)
			}
		}
		if !bytes.HasPrefix(data, again) {
			t.Fatal("messages read are not the stream's frames")
		}
		if last := want[len(want)-1].err; last == io.EOF.Error() && len(again) != len(data) {
			t.Fatal("io.EOF before the end of the stream")
		}
	})
}

// FuzzReadRequest: ReadRequest never panics, never reads past the head, never
// accepts a head over MaxHeadSize, and says SMQ only if a header line did.
func FuzzReadRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.NewReader(data)
		br := bufio.NewReaderSize(in, 64<<10)
		req, bs, err := smq.ReadRequest(br)
		if err != nil {
			if req != nil || bs != (smq.Bootstrap{}) {
				t.Fatalf("result with error %v", err)
			}
			if !errors.Is(err, smq.ErrBadBootstrap) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		consumed := len(data) - in.Len() - br.Buffered()
		head := data[:consumed]
		if consumed > smq.MaxHeadSize {
			t.Fatalf("accepted a %d-byte head", consumed)
		}
		if !bytes.HasSuffix(head, s("\n\n")) && !bytes.HasSuffix(head, s("\n\r\n")) {
			t.Fatalf("consumed %q, not a whole head", head)
		}
		if end := firstEmptyLine(data); consumed != end {
			t.Fatalf("consumed %d bytes, the head ends after %d: %q", consumed, end, head)
		}
		if bs != smq.Classify(req.Header) {
			t.Fatalf("ReadRequest = %+v, Classify = %+v", bs, smq.Classify(req.Header))
		}
		if bs.SMQ != (rawHeaderLine(head, "simplemq") || rawHeaderLine(head, "sec-websocket-key")) {
			t.Fatalf("SMQ = %v for head %q", bs.SMQ, head)
		}
		if bs.WebSocket && !rawHeaderLine(head, "upgrade") {
			t.Fatalf("WebSocket without an Upgrade line in %q", head)
		}
		if bs.SendHTTPResponse && !rawHeaderLine(head, "sendsmqhttpresponse") {
			t.Fatalf("SendHTTPResponse without a header line in %q", head)
		}
	})
}

// firstEmptyLine returns the offset just past the first empty line of data,
// where a line ends with "\n" or "\r\n", or -1.
func firstEmptyLine(data []byte) int {
	start := 0
	for {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			return -1
		}
		if line := data[start : start+i]; start > 0 && (len(line) == 0 || string(line) == "\r") {
			return start + i + 1
		}
		start += i + 1
	}
}

// rawHeaderLine reports whether one of the head's header lines (after the
// request line) starts with name and a colon, in any case. It reads the raw
// bytes, independently of net/textproto.
func rawHeaderLine(head []byte, name string) bool {
	lines := strings.Split(string(head), "\n")
	for _, line := range lines[1:] {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			return false
		}
		if len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(line[:len(name)], name) {
			return true
		}
	}
	return false
}

// TestClassifyAgreesWithHTTP runs the raw-line check of FuzzReadRequest on
// the bootstrap requests of the real clients.
func TestClassifyAgreesWithHTTP(t *testing.T) {
	for _, req := range []string{reqC, reqPython, reqLua, reqJava, reqWS, reqPlain} {
		_, bs, err := smq.ReadRequest(bufio.NewReader(strings.NewReader(req)))
		if err != nil {
			t.Fatal(err)
		}
		h := s(req)
		if bs.SMQ != (rawHeaderLine(h, "simplemq") || rawHeaderLine(h, "sec-websocket-key")) {
			t.Errorf("SMQ = %v for %q", bs.SMQ, req)
		}
	}
	if _, err := http.ReadRequest(bufio.NewReader(strings.NewReader(reqPlain))); err != nil {
		t.Fatal(err)
	}
}
