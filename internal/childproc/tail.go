// Package childproc is for tests that run programs of their own as
// children: a bounded buffer for their output (Tail), free loopback ports
// to hand them (Ports), and, on Unix, a child in a process group of its own
// that is stopped and reaped with the test (Process).
package childproc

import (
	"bytes"
	"sync"
)

// defaultTailMax is Tail's bound when Max is zero.
const defaultTailMax = 64 << 10

// Tail keeps the end of what is written to it: a child's output, which
// may be long. It is safe for concurrent use; the zero value keeps up to
// 64 KiB.
type Tail struct {
	// Max bounds what is kept: past Max bytes, all but the last Max/2 go.
	// Zero means 64 KiB.
	Max int

	mu  sync.Mutex
	buf []byte
	cut bool // some output went
}

func (b *Tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if m := b.max(); len(b.buf) > m {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-m/2:]...)
		b.cut = true
	}
	return len(p), nil
}

func (b *Tail) max() int {
	if b.Max > 0 {
		return b.Max
	}
	return defaultTailMax
}

// String returns what is kept, after a line "[...]" if some output went.
func (b *Tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cut {
		return "[...]\n" + string(b.buf)
	}
	return string(b.buf)
}

// Last returns about the last n bytes kept, from a line start when it can.
func (b *Tail) Last(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf
	if len(s) > n {
		s = s[len(s)-n:]
		if i := bytes.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return string(s)
}

// Contains reports whether what is kept holds sub.
func (b *Tail) Contains(sub string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf, []byte(sub))
}
