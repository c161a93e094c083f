package broker

import (
	"context"
	"net"
	"testing"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/smq"
)

// TestWrittenBatchReleased: once a batch is written, the queue keeps no
// reference to its messages, so an idle client holds none of the last
// big message it got (it held it until its next message, for life if
// none came).
func TestWrittenBatchReleased(t *testing.T) {
	t.Parallel()
	br := New(Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go br.Serve(l)
	t.Cleanup(func() { br.Shutdown(context.Background()) })
	c := smqtest.DialFast(t, l.Addr().String(), nil, "big-to-itself")
	c.Send(t, &smq.Publish{TID: c.ETID, PTID: c.ETID, Payload: make([]byte, 60000)})
	if msg := c.Expect(t, smq.TypePublish); len(msg) != 13+60000 {
		t.Fatalf("got %d bytes", len(msg))
	}
	br.reg.mu.RLock()
	s := br.reg.clients[c.ETID]
	br.reg.mu.RUnlock()
	smqtest.WaitUntil(t, "the written batch released", func() bool {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		for _, m := range s.q.spare[:cap(s.q.spare)] {
			if m != nil {
				return false
			}
		}
		return true
	})
}
