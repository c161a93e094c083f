package smq

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Reader reads raw SMQ frames (2-byte total length, type, body) from a
// buffered stream. The zero value is not usable; use NewReader.
//
// Read returns the message (type + body) without its length field. The slice
// is valid until the next call to Read; in steady state Read does not
// allocate.
type Reader struct {
	br Buffer
	// big holds the last frame too big for br's buffer, from framePool,
	// until the next Read: an idle connection does not keep it.
	big *[]byte
	// Max is the largest message (type + body) Read accepts; a larger frame
	// fails with ErrTooBig before any of its body is read. Zero means
	// MaxRawMessage, the most a raw frame can hold.
	Max int
}

// Buffer is a buffered stream frames are read from: a *bufio.Reader, or
// another reader with its methods. Peek(n) must succeed for any n up to
// Size().
type Buffer interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
	Size() int
}

var _ Buffer = (*bufio.Reader)(nil)

// NewReader returns a Reader on br. A buffer of at least 4 KiB lets small
// messages be returned without copying.
func NewReader(br Buffer) *Reader { return &Reader{br: br} }

// Buffered returns the buffer the frames are read from.
func (r *Reader) Buffered() Buffer { return r.br }

// Read reads one frame. At a clean end of stream it returns io.EOF; a stream
// cut inside a frame gives io.ErrUnexpectedEOF. Malformed frames give a
// *MessageError wrapping ErrShortFrame or ErrTooBig; the stream cannot be
// resynchronised after that.
func (r *Reader) Read() ([]byte, error) {
	if r.big != nil {
		framePool.Put(r.big)
		r.big = nil
	}
	hdr, err := r.br.Peek(2)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr))
	if n < MinRawFrame {
		return nil, &MessageError{Len: n, Err: ErrShortFrame,
			Detail: fmt.Sprintf("frame length %d, the least is %d", n, MinRawFrame)}
	}
	max := r.Max
	if max <= 0 || max > MaxRawMessage {
		max = MaxRawMessage
	}
	if n-2 > max {
		t := Type(0)
		if p, err := r.br.Peek(3); err == nil {
			t = Type(p[2])
		}
		return nil, &MessageError{Type: t, Len: n - 2, Err: ErrTooBig,
			Detail: fmt.Sprintf("message is %d bytes, the limit is %d", n-2, max)}
	}
	if n <= r.br.Size() {
		// The whole frame fits the bufio buffer: hand out a view of it.
		p, err := r.br.Peek(n)
		if err != nil {
			return nil, unexpected(err)
		}
		_, _ = r.br.Discard(n)
		return p[2:n:n], nil
	}
	_, _ = r.br.Discard(2)
	r.big = framePool.Get().(*[]byte)
	msg := (*r.big)[:n-2]
	if _, err := io.ReadFull(r.br, msg); err != nil {
		return nil, unexpected(err)
	}
	return msg, nil
}

// framePool holds buffers for the frames too big for a Reader's buffer.
var framePool = sync.Pool{New: func() any { b := make([]byte, MaxRawMessage); return &b }}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendRaw appends msg (type + body) to dst as one raw frame. It returns
// ErrTooBig, and dst unchanged, when msg cannot fit a raw frame: its length
// field would wrap.
func AppendRaw(dst, msg []byte) ([]byte, error) {
	if len(msg) > MaxRawMessage {
		return dst, tooBigForRaw(msg)
	}
	if len(msg) == 0 {
		return dst, &MessageError{Err: ErrShortFrame, Detail: "message has no type byte"}
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)+2))
	return append(dst, msg...), nil
}

// AppendRawMessage encodes m as one raw frame onto dst. It returns ErrTooBig,
// and dst unchanged, when the encoded message cannot fit a raw frame.
func AppendRawMessage(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	dst = m.Append(append(dst, 0, 0))
	n := len(dst) - start
	if n > MaxRawFrame {
		return dst[:start], tooBigForRaw(dst[start+2:])
	}
	binary.BigEndian.PutUint16(dst[start:], uint16(n))
	return dst, nil
}

func tooBigForRaw(msg []byte) error {
	return &MessageError{Type: Type(msg[0]), Len: len(msg), Err: ErrTooBig,
		Detail: fmt.Sprintf("message is %d bytes, a raw frame holds at most %d", len(msg), MaxRawMessage)}
}

// ReadWS reads one whole WebSocket message (type + body) from r, for example
// the reader a WebSocket library hands out for one message, into buf, which it
// grows as needed and returns for reuse. A message over max bytes fails with
// ErrTooBig as soon as max+1 bytes have been seen, without reading the rest.
// Empty messages fail with ErrShortFrame.
func ReadWS(r io.Reader, buf []byte, max int) ([]byte, error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			if len(buf) > max {
				break
			}
			grow := 2 * cap(buf)
			if grow < 512 {
				grow = 512
			}
			if grow > max+1 {
				grow = max + 1
			}
			nb := make([]byte, len(buf), grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	if len(buf) > max {
		return buf[:0], &MessageError{Type: Type(buf[0]), Len: len(buf), Err: ErrTooBig,
			Detail: fmt.Sprintf("message is over the limit of %d bytes", max)}
	}
	if len(buf) == 0 {
		return buf, &MessageError{Err: ErrShortFrame, Detail: "empty WebSocket message"}
	}
	return buf, nil
}
