package broker

import "sync"

// outQueue is a client's bounded queue of outgoing messages (type + body,
// shared and never modified once queued). The writer goroutine takes
// everything queued at once and writes it as one batch, so messages coalesce
// under load.
type outQueue struct {
	mu       sync.Mutex
	msgs     [][]byte
	spare    [][]byte // the previous batch's slice, reused
	bytes    int
	maxBytes int
	maxMsgs  int
	final    bool // no more pushes; close after the queued messages
	wsCode   int  // WebSocket close code to end with, once final
	wake     chan struct{}
}

func (q *outQueue) init(maxBytes, maxMsgs int) {
	q.maxBytes, q.maxMsgs = maxBytes, maxMsgs
	q.wake = make(chan struct{}, 1)
}

// pushResult says what push did.
type pushResult int

const (
	pushed   pushResult = iota
	overflow            // the queue is full: the client is too slow
	closing             // the queue is final: the message was discarded
)

func (q *outQueue) push(m []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.final {
		return closing
	}
	if len(q.msgs) >= q.maxMsgs || q.bytes+len(m) > q.maxBytes {
		return overflow
	}
	q.msgs = append(q.msgs, m)
	q.bytes += len(m)
	q.signal()
	return pushed
}

// finish queues a last message (nil for none) and marks the queue final; a
// WebSocket client then gets a close frame with wsCode. With discard,
// whatever is still queued is dropped first. It reports false if the queue
// was already final.
func (q *outQueue) finish(last []byte, discard bool, wsCode int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.final {
		return false
	}
	q.final, q.wsCode = true, wsCode
	if discard {
		clear(q.msgs)
		q.msgs = q.msgs[:0]
		q.bytes = 0
	}
	if last != nil {
		q.msgs = append(q.msgs, last)
	}
	q.signal()
	return true
}

func (q *outQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns everything queued and whether the queue is final. The slice
// is valid until the next take.
func (q *outQueue) take() (batch [][]byte, final bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch = q.msgs
	clear(q.spare)
	q.msgs, q.spare = q.spare[:0], batch
	q.bytes = 0
	return batch, q.final
}

// closeCode returns the WebSocket close code given to finish.
func (q *outQueue) closeCode() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wsCode
}
