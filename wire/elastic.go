package wire

import (
	"bufio"
	"errors"
	"io"
	"sync"
)

// Sizes of an Elastic reader's buffer.
const (
	// quietBuffer is the buffer of a connection between bursts: what an
	// idle session holds while it waits.
	quietBuffer = 1 << 10
	// busyBuffer is the buffer, from busyPool, while reads come back full:
	// a relay then reads, and writes on, large batches.
	busyBuffer = 64 << 10
)

var busyPool = sync.Pool{New: func() any { b := make([]byte, busyBuffer); return &b }}

// Elastic is a buffered reader (the methods of bufio.Reader that
// smq.Reader uses) whose buffer follows the traffic: 1 KiB while the
// connection is quiet, so an idle session holds little, and a pooled 64
// KiB one once a read fills the buffer, so a busy one makes few system
// calls and its relay writes large batches. The big buffer goes back to
// the pool when a read comes back short with nothing left unread. Not safe
// for concurrent use.
type Elastic struct {
	r          io.Reader
	buf        []byte // buf[rpos:wpos] is unread
	rpos, wpos int
	small      []byte  // the quiet buffer, kept
	big        *[]byte // buf's pool entry while it is the big one
	full       bool    // the last read filled the space it was given
	empty      int     // reads in a row that returned nothing and no error
	err        error
}

// NewElastic returns an Elastic reader on r that first returns what br
// has buffered (the rest of a bootstrap's read), if br is not nil.
func NewElastic(r io.Reader, br *bufio.Reader) *Elastic {
	e := &Elastic{r: r, small: make([]byte, quietBuffer)}
	e.buf = e.small
	if br != nil && br.Buffered() > 0 {
		left, _ := br.Peek(br.Buffered())
		if len(left) > len(e.buf) {
			e.grow(len(left))
		}
		e.wpos = copy(e.buf, left)
	}
	return e
}

// Size returns the size of the buffer now.
func (e *Elastic) Size() int { return len(e.buf) }

// Buffered returns the number of unread bytes in the buffer.
func (e *Elastic) Buffered() int { return e.wpos - e.rpos }

// grow moves the unread bytes to a big buffer able to hold at least n.
func (e *Elastic) grow(n int) {
	if e.big != nil {
		return
	}
	p := busyPool.Get().(*[]byte)
	if len(*p) < n {
		*p = make([]byte, n)
	}
	m := copy(*p, e.buf[e.rpos:e.wpos])
	e.buf, e.big, e.rpos, e.wpos = *p, p, 0, m
}

// quiet goes back to the small buffer, when nothing is unread.
func (e *Elastic) quiet() {
	if e.big == nil || e.rpos != e.wpos {
		return
	}
	busyPool.Put(e.big)
	e.big = nil
	e.buf = e.small
	e.rpos, e.wpos = 0, 0
}

// fill reads once more into the buffer.
func (e *Elastic) fill() {
	if e.rpos == e.wpos {
		e.rpos, e.wpos = 0, 0
		if !e.full {
			e.quiet() // a lull: wait with the small buffer
		}
	}
	if e.full || e.wpos == len(e.buf) {
		e.grow(0)
	}
	if e.rpos > 0 {
		e.wpos = copy(e.buf, e.buf[e.rpos:e.wpos])
		e.rpos = 0
	}
	n, err := e.r.Read(e.buf[e.wpos:])
	if n < 0 {
		n, err = 0, errors.New("wire: reader returned a negative count")
	}
	if n == 0 && err == nil {
		if e.empty++; e.empty >= 100 {
			err = io.ErrNoProgress
		}
	} else {
		e.empty = 0
	}
	e.full = n == len(e.buf)-e.wpos
	e.wpos += n
	if err != nil {
		e.err = err
	}
}

func (e *Elastic) readErr() error {
	err := e.err
	e.err = nil
	return err
}

// Peek returns the next n bytes without consuming them. Unlike
// bufio.Reader, Peek grows the buffer when n is over its size.
func (e *Elastic) Peek(n int) ([]byte, error) {
	if n > len(e.buf) {
		e.grow(n)
		if n > len(e.buf) {
			return e.buf[e.rpos:e.wpos], bufio.ErrBufferFull
		}
	}
	for e.wpos-e.rpos < n && e.err == nil {
		e.fill()
	}
	if e.wpos-e.rpos < n {
		return e.buf[e.rpos:e.wpos], e.readErr()
	}
	return e.buf[e.rpos : e.rpos+n], nil
}

// Discard skips the next n bytes.
func (e *Elastic) Discard(n int) (int, error) {
	done := 0
	for done < n {
		if e.rpos == e.wpos {
			if e.err != nil {
				return done, e.readErr()
			}
			e.fill()
			continue
		}
		k := min(n-done, e.wpos-e.rpos)
		e.rpos += k
		done += k
	}
	return done, nil
}

// Read reads into p: what is buffered, else straight from the connection
// for a read as big as the buffer, else through the buffer.
func (e *Elastic) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if e.rpos == e.wpos {
		if e.err != nil {
			return 0, e.readErr()
		}
		if len(p) >= len(e.buf) {
			// Straight past the buffer: its last fill no longer says the
			// traffic is heavy (a big message is read this way), so the
			// next fill may wait with the small buffer.
			e.full = false
			return e.r.Read(p)
		}
		e.fill()
		if e.rpos == e.wpos {
			return 0, e.readErr()
		}
	}
	n := copy(p, e.buf[e.rpos:e.wpos])
	e.rpos += n
	return n, nil
}
