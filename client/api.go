package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// Create returns the TID of topic, creating the topic on the broker if it
// does not exist. IDs are cached per session: asking again does not go to
// the broker.
func (c *Client) Create(ctx context.Context, topic string) (uint32, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return 0, err
	}
	return cn.request(ctx, smq.TypeCreate, topic)
}

// Createsub returns the ID of the sub-topic name, creating it on the broker
// if needed. Sub-topic IDs are cached per session like topic IDs; received
// messages carry the names of the sub-topics created this way.
func (c *Client) Createsub(ctx context.Context, name string) (uint32, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return 0, err
	}
	return cn.request(ctx, smq.TypeCreatesub, name)
}

// Subscribe subscribes to topic and returns its TID. h is called with every
// message published to the topic, on the client's handler goroutine, one
// message at a time; it replaces the handler of an earlier Subscribe to the
// same topic, without going to the broker again. Subscribe to Self receives
// the messages published to this client's ETID.
//
// Handlers may call any Client method. Keep them short: while 1024 messages
// wait for handlers the client stops reading, and a method that waits for
// the broker (Subscribe, Create, Ping) then waits for its context.
func (c *Client) Subscribe(ctx context.Context, topic string, h func(*Message)) (uint32, error) {
	if h == nil {
		return 0, errNilHandler
	}
	s := &subscription{h: h}
	c.mu.Lock()
	if c.closing {
		err := c.closedErrLocked()
		c.mu.Unlock()
		return 0, err
	}
	prev := c.subs[topic]
	c.subs[topic] = s // before the ack: messages may follow it at once
	c.mu.Unlock()
	if topic == Self {
		return c.ETID(), nil
	}
	cn, err := c.current(ctx)
	var tid uint32
	if err == nil {
		tid, err = cn.request(ctx, smq.TypeSubscribe, topic)
	}
	if err != nil {
		c.mu.Lock()
		if c.subs[topic] == s {
			if prev != nil {
				c.subs[topic] = prev
			} else {
				delete(c.subs, topic)
			}
		}
		c.mu.Unlock()
		return 0, err
	}
	return tid, nil
}

// Unsubscribe stops the messages of topic. The broker does not answer it;
// messages already on their way are dropped.
func (c *Client) Unsubscribe(ctx context.Context, topic string) error {
	c.mu.Lock()
	delete(c.subs, topic)
	cn := c.cn
	c.mu.Unlock()
	if topic == Self || cn == nil {
		return nil
	}
	cn.mu.Lock()
	tid, known := cn.topics[topic]
	_, subscribed := cn.subscribed[tid]
	delete(cn.subscribed, tid)
	cn.mu.Unlock()
	if !known || !subscribed {
		return nil
	}
	return cn.write(ctx, smq.Unsubscribe{TID: tid})
}

// Publish sends payload to topic's subscribers. The topic's TID is looked up
// (Create) the first time. A payload over MaxPayload bytes is refused with
// an error wrapping smq.ErrTooBig.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte) error {
	return c.publish(ctx, topic, 0, "", payload)
}

// PublishBatch sends each payload to topic's subscribers, in order, with
// one flush: under load, many messages leave in one write instead of one
// each. A payload over MaxPayload bytes fails the batch before anything is
// sent.
func (c *Client) PublishBatch(ctx context.Context, topic string, payloads [][]byte) error {
	for _, p := range payloads {
		if len(p) > MaxPayload {
			return fmt.Errorf("client: payload is %d bytes, at most %d fit one message: %w",
				len(p), MaxPayload, smq.ErrTooBig)
		}
	}
	cn, err := c.current(ctx)
	if err != nil {
		return err
	}
	tid, err := cn.request(ctx, smq.TypeCreate, topic)
	if err != nil {
		return err
	}
	ms := make([]smq.Message, len(payloads))
	pubs := make([]smq.Publish, len(payloads))
	for i, p := range payloads {
		pubs[i] = smq.Publish{TID: tid, PTID: cn.etid, Payload: p}
		ms[i] = &pubs[i]
	}
	return cn.writeAll(ctx, ms)
}

// PublishSub is Publish with a sub-topic, created (Createsub) the first time.
func (c *Client) PublishSub(ctx context.Context, topic, subtopic string, payload []byte) error {
	return c.publish(ctx, topic, 0, subtopic, payload)
}

// PublishTo sends payload to the one client with ETID etid (the PTID of a
// message it sent, for example). It arrives there as a message of Self.
func (c *Client) PublishTo(ctx context.Context, etid uint32, payload []byte) error {
	return c.publish(ctx, "", etid, "", payload)
}

// PublishToSub is PublishTo with a sub-topic.
func (c *Client) PublishToSub(ctx context.Context, etid uint32, subtopic string, payload []byte) error {
	return c.publish(ctx, "", etid, subtopic, payload)
}

func (c *Client) publish(ctx context.Context, topic string, tid uint32, subtopic string, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("client: payload is %d bytes, at most %d fit one message: %w",
			len(payload), MaxPayload, smq.ErrTooBig)
	}
	cn, err := c.current(ctx)
	if err != nil {
		return err
	}
	if tid == 0 {
		if tid, err = cn.request(ctx, smq.TypeCreate, topic); err != nil {
			return err
		}
	}
	var sub uint32
	if subtopic != "" {
		if sub, err = cn.request(ctx, smq.TypeCreatesub, subtopic); err != nil {
			return err
		}
	}
	return cn.write(ctx, &smq.Publish{TID: tid, PTID: cn.etid, SubTID: sub, Payload: payload})
}

// Observe calls fn(tid, count) with the number of subscribers of topic now
// and after every change, on the handler goroutine. A second Observe of the
// same topic replaces fn.
func (c *Client) Observe(ctx context.Context, topic string, fn func(tid, count uint32)) error {
	return c.observe(ctx, obsKey{topic: topic}, fn)
}

// ObserveETID calls fn(etid, 0) when the client with that ETID disconnects.
// Observing oneself is ignored by the broker.
func (c *Client) ObserveETID(ctx context.Context, etid uint32, fn func(etid, count uint32)) error {
	if etid == 0 {
		return errors.New("client: observe: etid 0")
	}
	return c.observe(ctx, obsKey{etid: etid}, fn)
}

func (c *Client) observe(ctx context.Context, k obsKey, fn func(id, count uint32)) error {
	if fn == nil {
		return errNilHandler
	}
	o := &observer{fn: fn}
	c.mu.Lock()
	if c.closing {
		err := c.closedErrLocked()
		c.mu.Unlock()
		return err
	}
	prev := c.observers[k]
	c.observers[k] = o
	c.mu.Unlock()
	cn, err := c.current(ctx)
	if err == nil {
		err = c.observeOn(ctx, cn, k)
	}
	if err != nil {
		c.mu.Lock()
		if c.observers[k] == o {
			if prev != nil {
				c.observers[k] = prev
			} else {
				delete(c.observers, k)
			}
		}
		c.mu.Unlock()
	}
	return err
}

// observeOn sends Observe for k in session cn, unless already sent there.
func (c *Client) observeOn(ctx context.Context, cn *conn, k obsKey) error {
	id := k.etid
	if id == 0 {
		tid, err := cn.request(ctx, smq.TypeCreate, k.topic)
		if err != nil {
			return err
		}
		id = tid
	}
	cn.mu.Lock()
	old, dup := cn.observed[id]
	cn.observed[id] = k // before Observe: the first Change follows at once
	cn.mu.Unlock()
	if dup && old == k {
		return nil
	}
	return cn.write(ctx, smq.Observe{ID: id})
}

// Unobserve stops the Change notifications of topic.
//
// The reference broker (the Barracuda App Server / Mako Server hub) mishandles
// Unobserve: after the only observer of a topic unobserves, the topic's
// subscribers stop receiving. The embedded broker does not, and the smqgw
// gateway shields such a broker; connected to it directly, prefer leaving the
// observation in place and ignoring its Changes.
func (c *Client) Unobserve(ctx context.Context, topic string) error {
	return c.unobserve(ctx, obsKey{topic: topic})
}

// UnobserveETID stops watching the client with ETID etid.
func (c *Client) UnobserveETID(ctx context.Context, etid uint32) error {
	return c.unobserve(ctx, obsKey{etid: etid})
}

func (c *Client) unobserve(ctx context.Context, k obsKey) error {
	c.mu.Lock()
	delete(c.observers, k)
	cn := c.cn
	c.mu.Unlock()
	if cn == nil {
		return nil
	}
	cn.mu.Lock()
	id := k.etid
	if id == 0 {
		id = cn.topics[k.topic]
	}
	ok := id != 0 && cn.observed[id] == k
	if ok {
		delete(cn.observed, id)
	}
	cn.mu.Unlock()
	if !ok {
		return nil
	}
	return cn.write(ctx, smq.Unobserve{ID: id})
}

// Ping sends a Ping and returns the time until the broker's Pong.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return 0, err
	}
	return cn.ping(ctx)
}

// closedErrLocked is the error of calls on a finished client.
func (c *Client) closedErrLocked() error {
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}
