package smq

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// TestReaderReleasesBigFrames: a frame bigger than the stream's buffer is
// read into a pooled buffer that the Reader gives back when the next Read
// starts, so a connection waiting for its next frame keeps none (it kept
// the biggest frame's buffer for life).
func TestReaderReleasesBigFrames(t *testing.T) {
	big, err := AppendRaw(nil, (&Publish{TID: 1, PTID: 2, Payload: make([]byte, 60000)}).Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	r := NewReader(bufio.NewReaderSize(bytes.NewReader(big), 4096))
	if msg, err := r.Read(); err != nil || len(msg) != len(big)-2 {
		t.Fatalf("Read: %d bytes, %v", len(msg), err)
	}
	if r.big == nil {
		t.Fatal("the big frame was not read into a pooled buffer")
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("Read at the end: %v", err)
	}
	if r.big != nil {
		t.Error("the big frame's buffer is still held while waiting for the next frame")
	}
}
