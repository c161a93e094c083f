package smq_test

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/smqgw/smqgw/smq"
)

// loopReader serves data over and over, without allocating.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

// publishStream is a Reader on an endless stream of one raw Publish with a
// 64-byte payload, and the frame's size.
func publishStream(bufSize int) (*smq.Reader, int) {
	f := frame(publishMsg(1, 64))
	return smq.NewReader(bufio.NewReaderSize(&loopReader{data: f}, bufSize)), len(f)
}

// readPublish is the steady-state receive path: one raw frame, decoded.
func readPublish(r *smq.Reader) (smq.Publish, error) {
	msg, err := r.Read()
	if err != nil {
		return smq.Publish{}, err
	}
	return smq.DecodePublish(msg)
}

// TestZeroAllocs makes an allocation on the per-message paths fail the suite.
func TestZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts in -short mode are not meaningful")
	}
	payload := bytes.Repeat(s("x"), 64)
	pub := &smq.Publish{TID: 1, PTID: 2, SubTID: 3, Payload: payload}
	msg := pub.Append(nil)
	buf := make([]byte, 0, 4096)
	r, _ := publishStream(4096)
	bigR := smq.NewReader(bufio.NewReaderSize(&loopReader{data: frame(publishMsg(1, 10000))}, 4096))
	_, _ = bigR.Read() // the first frame over the buffer size allocates the Reader's buffer
	wsBuf := make([]byte, 0, 1024)
	wsIn := bytes.NewReader(msg)

	tests := []struct {
		name string
		f    func()
	}{
		{"Reader.Read+DecodePublish", func() {
			if p, err := readPublish(r); err != nil || p.TID != 1 {
				t.Fatal(p, err)
			}
		}},
		{"Reader.Read-larger-than-buffer", func() {
			if _, err := bigR.Read(); err != nil {
				t.Fatal(err)
			}
		}},
		{"AppendRawMessage(*Publish)", func() {
			var err error
			if buf, err = smq.AppendRawMessage(buf[:0], pub); err != nil {
				t.Fatal(err)
			}
		}},
		{"AppendRawMessage(Ping)", func() {
			buf, _ = smq.AppendRawMessage(buf[:0], smq.Ping{})
		}},
		{"AppendRaw", func() {
			var err error
			if buf, err = smq.AppendRaw(buf[:0], msg); err != nil {
				t.Fatal(err)
			}
		}},
		{"Check", func() {
			if err := smq.Check(msg); err != nil {
				t.Fatal(err)
			}
		}},
		{"ReadWS", func() {
			wsIn.Reset(msg)
			var err error
			if wsBuf, err = smq.ReadWS(wsIn, wsBuf, smq.MaxRawMessage); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
				t.Errorf("%s: %v allocations per run, want 0", tc.name, n)
			}
		})
	}
}

func BenchmarkReadPublish(b *testing.B) {
	for _, size := range []int{4096, 64 << 10} {
		b.Run("bufio-"+map[int]string{4096: "4KiB", 64 << 10: "64KiB"}[size], func(b *testing.B) {
			r, n := publishStream(size)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				p, err := readPublish(r)
				if err != nil || len(p.Payload) != 64 {
					b.Fatal(p, err)
				}
			}
		})
	}
}

func BenchmarkWritePublish(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 64)
	buf := make([]byte, 0, 4096)
	b.Run("AppendRawMessage", func(b *testing.B) {
		pub := &smq.Publish{TID: 1, PTID: 2, SubTID: 3, Payload: payload}
		b.SetBytes(int64(2 + 1 + smq.PublishHeaderLen + len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			pub.TID++
			buf, _ = smq.AppendRawMessage(buf[:0], pub)
		}
	})
	// A Publish built per message and passed as &pub escapes: AppendRawMessage
	// is too big to inline (cost 140 > 80), so m.Append is not devirtualized
	// and m leaks. This costs one 48-byte allocation per message (a non-empty
	// value such as Change{} costs one too); reuse a *Publish, or encode once
	// and use AppendRaw, on hot paths.
	b.Run("AppendRawMessage-fresh-value-escapes", func(b *testing.B) {
		b.SetBytes(int64(2 + 1 + smq.PublishHeaderLen + len(payload)))
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			i++
			pub := smq.Publish{TID: i, PTID: 2, SubTID: 3, Payload: payload}
			buf, _ = smq.AppendRawMessage(buf[:0], &pub)
		}
	})
	b.Run("AppendRaw", func(b *testing.B) {
		msg := (&smq.Publish{TID: 1, PTID: 2, SubTID: 3, Payload: payload}).Append(nil)
		b.SetBytes(int64(2 + len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = smq.AppendRaw(buf[:0], msg)
		}
	})
}
