package wire

import (
	"io"
	"sync"
)

// Outgoing frames collect in a buffer from outPool until Flush writes them
// with one Write call (one TLS record and one system call for a burst of
// small messages, instead of one each), and the buffer goes back to the
// pool: an idle connection holds no write buffer.
const (
	// flushAt makes Write flush on its own once this much is queued.
	flushAt = 64 << 10
	// maxPooled is the largest buffer given back to the pool.
	maxPooled = 256 << 10
)

var outPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// outBuf is a connection's queue of outgoing bytes. Not safe for
// concurrent use.
type outBuf struct{ p *[]byte }

// bytes returns the queue to append to; set stores the result.
func (o *outBuf) bytes() []byte {
	if o.p == nil {
		o.p = outPool.Get().(*[]byte)
	}
	return *o.p
}

func (o *outBuf) set(b []byte) { *o.p = b }

func (o *outBuf) len() int {
	if o.p == nil {
		return 0
	}
	return len(*o.p)
}

// flush writes the queue to w in one call and gives the buffer back. On
// error what was queued is lost: the connection is broken.
func (o *outBuf) flush(w io.Writer) error {
	if o.p == nil {
		return nil
	}
	var err error
	if b := *o.p; len(b) > 0 {
		_, err = w.Write(b)
	}
	if cap(*o.p) <= maxPooled {
		*o.p = (*o.p)[:0]
		outPool.Put(o.p)
	}
	o.p = nil
	return err
}
