package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/smq"
)

// chunks is a reader that returns its script one read at a time (each
// read gives at most the next chunk), then io.EOF.
type chunks struct {
	script [][]byte
	sizes  []int // the space each read was given
}

func (c *chunks) Read(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	if len(c.script) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.script[0])
	if n == len(c.script[0]) {
		c.script = c.script[1:]
	} else {
		c.script[0] = c.script[0][n:]
	}
	return n, nil
}

// TestElasticFrames: frames of every size, cut at random points, come out
// of smq.Reader over an Elastic buffer whole and in order.
func TestElasticFrames(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	var stream []byte
	var want [][]byte
	for i := range 300 {
		n := r.IntN(200)
		if i%30 == 0 {
			n = r.IntN(smq.MaxRawMessage - 13)
		}
		msg := (&smq.Publish{TID: uint32(i), PTID: 1, Payload: bytes.Repeat([]byte{byte(i)}, n)}).Append(nil)
		want = append(want, msg)
		stream, _ = smq.AppendRaw(stream, msg)
	}
	src := &chunks{}
	for len(stream) > 0 {
		n := min(len(stream), 1+r.IntN(3000))
		src.script = append(src.script, stream[:n])
		stream = stream[n:]
	}
	rd := smq.NewReader(NewElastic(src, nil))
	for i, w := range want {
		got, err := rd.Read()
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("message %d: %d bytes, %v; want %d bytes", i, len(got), err, len(w))
		}
	}
	if _, err := rd.Read(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// TestElasticSize: quiet reads use the small buffer, a read that fills it
// brings the big one, and a short read with nothing left brings the small
// one back before the next (blocking) read.
func TestElasticSize(t *testing.T) {
	t.Parallel()
	src := &chunks{script: [][]byte{
		[]byte("ab"),                           // quiet
		bytes.Repeat([]byte("c"), quietBuffer), // fills the small buffer
		bytes.Repeat([]byte("d"), 5000),        // read into the big one
		[]byte("e"),                            // after the lull: small again
	}}
	e := NewElastic(src, nil)
	read := func(n int) { // in small pieces, as frames are read
		t.Helper()
		for n > 0 {
			k := min(n, 100)
			if _, err := io.ReadFull(e, make([]byte, k)); err != nil {
				t.Fatal(err)
			}
			n -= k
		}
	}
	read(2)
	read(quietBuffer)
	read(5000)
	read(1)
	want := []int{quietBuffer, quietBuffer, busyBuffer, quietBuffer}
	if len(src.sizes) < 4 || !equal(src.sizes[:4], want) {
		t.Fatalf("read sizes %v, want %v", src.sizes, want)
	}
	if e.Size() != quietBuffer || e.big != nil {
		t.Errorf("after the lull: size %d, big held %v", e.Size(), e.big != nil)
	}
}

// TestElasticBigMessageThenIdle: a frame bigger than the buffer is read
// straight past it; the read that then waits for the next frame waits
// with the small buffer (it waited with a big one for the session's life:
// issue 16, 62 → 325 KiB per idle session after one 64 KB message).
func TestElasticBigMessageThenIdle(t *testing.T) {
	t.Parallel()
	big := make([]byte, 60000)
	frame, err := smq.AppendRaw(nil, (&smq.Publish{TID: 1, PTID: 2, Payload: big}).Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	src := &chunks{script: [][]byte{frame[:quietBuffer], frame[quietBuffer:]}}
	r := smq.NewReader(NewElastic(src, nil))
	if msg, err := r.Read(); err != nil || len(msg) != len(frame)-2 {
		t.Fatalf("Read: %d bytes, %v", len(msg), err)
	}
	if _, err := r.Read(); err != io.EOF { // the wait for the next frame
		t.Fatalf("Read at the end: %v", err)
	}
	last := src.sizes[len(src.sizes)-1]
	if last != quietBuffer {
		t.Errorf("the waiting read was given %d bytes, want the small buffer's %d (read sizes %v)", last, quietBuffer, src.sizes)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestElasticLeftover: what a bootstrap's reader buffered comes first,
// small or big.
func TestElasticLeftover(t *testing.T) {
	t.Parallel()
	for _, n := range []int{10, 3000} {
		head := "HTTP/1.1 200 OK\r\n\r\n"
		rest := strings.Repeat("x", n)
		br := bufio.NewReaderSize(strings.NewReader(head+rest+"tail"), 16<<10)
		if _, err := br.Peek(len(head) + n + 4); err != nil {
			t.Fatal(err)
		}
		if _, err := br.Discard(len(head)); err != nil {
			t.Fatal(err)
		}
		e := NewElastic(strings.NewReader("-more"), br)
		got, err := io.ReadAll(e)
		if err != nil || string(got) != rest+"tail-more" {
			t.Fatalf("leftover %d: %d bytes, %v", n, len(got), err)
		}
	}
}

// TestElasticErrors: a stream cut inside a frame is ErrUnexpectedEOF, and
// a read error comes once, after the data before it.
func TestElasticErrors(t *testing.T) {
	t.Parallel()
	frame, _ := smq.AppendRaw(nil, smq.Ping{}.Append(nil))
	rd := smq.NewReader(NewElastic(bytes.NewReader(append(frame, frame[:2]...)), nil))
	if _, err := rd.Read(); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Read(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut frame: %v", err)
	}
	boom := errors.New("boom")
	e := NewElastic(io.MultiReader(strings.NewReader("ok"), &failing{boom}), nil)
	p, err := e.Peek(4)
	if string(p) != "ok" || !errors.Is(err, boom) {
		t.Fatalf("Peek: %q %v", p, err)
	}
	if b, err := io.ReadAll(e); string(b) != "ok" || err != nil && !errors.Is(err, boom) {
		t.Fatalf("ReadAll: %q %v", b, err)
	}
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }

// FuzzElastic: smq.Reader reads the same frames and the same errors
// through an Elastic buffer as through a bufio.Reader, whatever the bytes
// and however the stream is cut.
func FuzzElastic(f *testing.F) {
	one, _ := smq.AppendRaw(nil, (&smq.Publish{TID: 1, PTID: 2, Payload: make([]byte, 3000)}).Append(nil))
	f.Add(one, uint8(7))
	f.Add([]byte{0, 1, 0, 3, 12}, uint8(1))
	f.Add(append(one, one[:100]...), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		chunked := func() io.Reader {
			c := &chunks{}
			step := int(cut) + 1
			for i := 0; i < len(data); i += step {
				c.script = append(c.script, data[i:min(i+step*(1+i%3), len(data))])
				i += step * (i % 3)
			}
			return c
		}
		ref := smq.NewReader(bufio.NewReaderSize(chunked(), 4096))
		got := smq.NewReader(NewElastic(chunked(), nil))
		for i := 0; i < 10000; i++ {
			a, errA := ref.Read()
			b, errB := got.Read()
			if !bytes.Equal(a, b) || (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
				t.Fatalf("read %d: bufio %d bytes %v, elastic %d bytes %v", i, len(a), errA, len(b), errB)
			}
			if errA != nil {
				return
			}
		}
	})
}
