package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/internal/memconn"
	"github.com/smqgw/smqgw/smqdial"
	"github.com/smqgw/smqgw/wire"
)

// EmbeddedName is the name of every Embedded upstream.
const EmbeddedName = "embedded"

// Embedded is an Upstream in the same process: each Dial connects to Broker
// over an in-memory pipe (no socket, no bootstrap request) and runs the
// broker's side of the session on a goroutine, which ends with the session:
// when the returned Conn is closed, or the broker ends it.
type Embedded struct {
	Broker *broker.Broker
}

// Name returns EmbeddedName.
func (Embedded) Name() string { return EmbeddedName }

// Dial starts a session with the broker and waits until its Init is on the
// way (a broker that has shut down makes Dial fail). The broker sees
// req.ClientIP as the client's address (the Init IP) and req.Header, as a
// bootstrap request would carry it, X-Forwarded-For included, as the
// session's headers.
func (e Embedded) Dial(ctx context.Context, req Request) (wire.Conn, error) {
	if e.Broker == nil {
		return nil, embeddedErr(errors.New("no broker"), false)
	}
	if ctx.Err() != nil {
		return nil, embeddedErr(context.Cause(ctx), true)
	}
	ours, theirs := memconn.Pipe(0)
	peer := broker.Peer{IP: req.ClientIP, Header: bootstrapHeader(req)}
	go func() { _ = e.Broker.ServeConn(theirs, peer) }()

	br := bufio.NewReaderSize(ours, 4096)
	stop := smqdial.Guard(ctx, ours)
	_, err := br.Peek(1) // the first byte of Init, which stays unread
	if !stop() {
		_ = ours.Close()
		return nil, embeddedErr(context.Cause(ctx), true)
	}
	if err != nil {
		_ = ours.Close()
		if err == io.EOF {
			err = errors.New("broker closed the session at once (shut down?)")
		}
		return nil, embeddedErr(err, false)
	}
	_ = ours.SetDeadline(time.Time{})
	return wire.NewRaw(ours, br), nil
}

func embeddedErr(err error, aborted bool) error {
	return &Error{Upstream: EmbeddedName, Aborted: aborted, Attempts: []Attempt{{URL: EmbeddedName,
		Err: &net.OpError{Op: "dial", Net: memconn.Network, Addr: memconn.Addr(EmbeddedName), Err: err}}}}
}
