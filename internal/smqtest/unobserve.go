package smqtest

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// UnobserveBug serves, on a loopback port, a raw SMQ broker with the
// reference broker's Unobserve bug (SMQ-WIRE §4): each connection is
// relayed to the broker at brokerAddr (raw SMQ, plain), and the relay
// reproduces what the bug does. After the only observer of a topic
// unobserves it, that topic's subscribers stop receiving its messages, and
// a later Subscribe to it ends the subscriber's connection without a word
// (the reference broker's session crashes). It returns its address; it
// stops when the test ends.
func UnobserveBug(tb testing.TB, brokerAddr string) string {
	tb.Helper()
	h := &hub{topics: map[string]uint32{}, observers: map[uint32]int{}, broken: map[uint32]bool{}}
	l := Listen(tb)
	Serve(tb, l, func(c net.Conn) {
		up, err := net.DialTimeout("tcp", brokerAddr, DefaultTimeout)
		if err != nil {
			return
		}
		defer up.Close()
		h.relay(c, up)
	})
	return l.Addr().String()
}

// hub is the state the bug corrupts: the broker's, shared by every
// connection.
type hub struct {
	mu        sync.Mutex
	topics    map[string]uint32 // name → tid, from the broker's acks
	observers map[uint32]int    // tid → observing connections
	broken    map[uint32]bool   // topics whose table entry the bug removed
}

// relay runs one connection: the bootstrap as is, then frames both ways.
func (h *hub) relay(c, up net.Conn) {
	cr := bufio.NewReaderSize(c, 64<<10)
	req, err := readHead(cr)
	if err != nil {
		return
	}
	if _, err := up.Write(req); err != nil {
		return
	}
	ur := bufio.NewReaderSize(up, 64<<10)
	if bytes.Contains(bytes.ToLower(req), []byte("sendsmqhttpresponse: true")) {
		resp, err := readHead(ur)
		if err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
	observed := map[uint32]bool{} // by this connection
	defer func() {
		h.mu.Lock()
		for id := range observed {
			h.observers[id]--
		}
		h.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		r := smq.NewReader(ur)
		for {
			msg, err := r.Read()
			if err != nil {
				return
			}
			if !h.toClient(msg) {
				continue
			}
			if write(c, msg) != nil {
				return
			}
		}
	}()
	defer func() { up.Close(); <-done }()
	r := smq.NewReader(cr)
	for {
		msg, err := r.Read()
		if err != nil {
			return
		}
		if !h.toBroker(msg, observed) {
			return // crashed
		}
		if write(up, msg) != nil {
			return
		}
	}
}

// toClient learns topic IDs from the broker's acks and reports whether msg
// reaches the client: a Publish to a broken topic does not.
func (h *hub) toClient(msg []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch m, _ := smq.Decode(msg); m := m.(type) {
	case smq.Suback:
		h.topics[m.Topic] = m.ID
	case smq.Createack:
		h.topics[m.Topic] = m.ID
	case *smq.Publish:
		return !h.broken[m.TID]
	}
	return true
}

// toBroker applies the bug to one client message and reports whether the
// connection goes on: a Subscribe to a broken topic crashes it.
func (h *hub) toBroker(msg []byte, observed map[uint32]bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch m, _ := smq.Decode(msg); m := m.(type) {
	case smq.Subscribe:
		if id, ok := h.topics[m.Topic]; ok && h.broken[id] {
			return false
		}
	case smq.Observe:
		if !observed[m.ID] {
			observed[m.ID] = true
			h.observers[m.ID]++
		}
	case smq.Unobserve:
		if observed[m.ID] {
			delete(observed, m.ID)
			if h.observers[m.ID]--; h.observers[m.ID] == 0 && h.isTopic(m.ID) {
				h.broken[m.ID] = true // the wrong table entry goes
			}
		}
	}
	return true
}

func (h *hub) isTopic(id uint32) bool {
	for _, tid := range h.topics {
		if tid == id {
			return true
		}
	}
	return false
}

// readHead reads an HTTP head, up to and with its blank line.
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		head = append(head, line...)
		if strings.TrimRight(string(line), "\r\n") == "" {
			return head, nil
		}
		if len(head) > 16<<10 {
			return nil, http.ErrHeaderTooLong
		}
	}
}

// write writes msg as one raw frame.
func write(w net.Conn, msg []byte) error {
	f, err := smq.AppendRaw(nil, msg)
	if err != nil {
		return err
	}
	_ = w.SetWriteDeadline(time.Now().Add(DefaultTimeout))
	_, err = w.Write(f)
	return err
}
