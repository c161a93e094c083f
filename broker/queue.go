package broker

import (
	"sync"
	"sync/atomic"
)

// outQueue is a client's bounded queue of outgoing messages (type + body,
// shared and never modified once queued). The writer goroutine takes
// everything queued at once and writes it as one batch, so messages coalesce
// under load.
//
// The bytes a queue holds — queued, and taken by the writer but not yet
// written — count against the broker's budget (budget, the Broker's count of
// them all): the sender reserves a message's bytes before push, and the
// queue gives them back once they are written or discarded.
type outQueue struct {
	mu       sync.Mutex
	msgs     [][]byte
	spare    [][]byte // the previous batch's slice, reused
	bytes    int      // queued
	maxBytes int
	maxMsgs  int
	final    bool // no more pushes; close after the queued messages
	wsCode   int  // WebSocket close code to end with, once final
	wake     chan struct{}

	budget   *atomic.Int64 // the broker's bytes held by all queues
	inflight atomic.Int64  // taken by the writer, not yet written
	held     atomic.Int64  // bytes + inflight, read without mu to pick victims
}

func (q *outQueue) init(maxBytes, maxMsgs int, budget *atomic.Int64) {
	q.maxBytes, q.maxMsgs = maxBytes, maxMsgs
	q.budget = budget
	q.wake = make(chan struct{}, 1)
}

// pushResult says what push did.
type pushResult int

const (
	pushed           pushResult = iota
	overflowBytes               // the queue is full (QueueBytes): the client is too slow
	overflowMessages            // the queue is full (QueueMessages)
	closing                     // the queue is final: the message was discarded
)

// push queues m, whose bytes the caller has reserved in the budget; unless
// it returns pushed, the caller gives them back.
func (q *outQueue) push(m []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.final:
		return closing
	case len(q.msgs) >= q.maxMsgs:
		return overflowMessages
	case q.bytes+len(m) > q.maxBytes:
		return overflowBytes
	}
	q.msgs = append(q.msgs, m)
	q.bytes += len(m)
	q.held.Add(int64(len(m)))
	q.signal()
	return pushed
}

// finish queues a last message (nil for none) and marks the queue final; a
// WebSocket client then gets a close frame with wsCode. With discard,
// whatever is still queued is dropped first, and the batch being written
// stops counting against the budget. It reports false if the queue was
// already final, when only discard has effect. dropped is the number of
// messages discarded.
func (q *outQueue) finish(last []byte, discard bool, wsCode int) (ok bool, dropped int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if discard {
		dropped = len(q.msgs)
		q.release(q.bytes + int(q.inflight.Swap(0)))
		clear(q.msgs)
		q.msgs = q.msgs[:0]
		q.bytes = 0
	}
	if q.final {
		return false, dropped
	}
	q.final, q.wsCode = true, wsCode
	if last != nil {
		q.msgs = append(q.msgs, last)
		q.bytes += len(last)
		q.held.Add(int64(len(last)))
		q.budget.Add(int64(len(last)))
	}
	q.signal()
	return true, dropped
}

// release gives n bytes back to the budget.
func (q *outQueue) release(n int) {
	if n != 0 {
		q.held.Add(-int64(n))
		q.budget.Add(-int64(n))
	}
}

func (q *outQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns everything queued and whether the queue is final. The slice
// is valid until the next take. Its bytes still count against the budget
// until written gives them back.
func (q *outQueue) take() (batch [][]byte, final bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch = q.msgs
	clear(q.spare)
	q.msgs, q.spare = q.spare[:0], batch
	q.inflight.Add(int64(q.bytes))
	q.bytes = 0
	return batch, q.final
}

// written gives back the bytes of the batch take returned last, now
// written (unless finish discarded them meanwhile). Only the writer takes
// and writes, in turn, so what is in flight is that batch.
func (q *outQueue) written() {
	q.release(int(q.inflight.Swap(0)))
}

// close marks the queue final and gives back everything it holds: the
// writer is gone.
func (q *outQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.final = true
	q.release(q.bytes + int(q.inflight.Swap(0)))
	clear(q.msgs)
	q.msgs = q.msgs[:0]
	q.bytes = 0
}

// closeCode returns the WebSocket close code given to finish.
func (q *outQueue) closeCode() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wsCode
}
