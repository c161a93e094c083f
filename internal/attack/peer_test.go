package attack

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/smqgw/smqgw/smq"
)

// The attackers' tools: connections from a chosen loopback address that
// speak just enough TLS, HTTP, raw SMQ and WebSocket to misbehave, and
// never fail the test (errors are what attacks expect).

// peer is one attacker's connection.
type peer struct {
	net.Conn
	br   *bufio.Reader
	host string // the gateway's host:port, for Host headers
	ws   bool   // WebSocket framing after the upgrade
}

// attackerAddr is the i-th attacker address: 127.0.0.2 and up, never the
// well-behaved client's.
func attackerAddr(i int) string {
	if i < 0 || i >= 190 {
		panic("attack: attacker address out of range")
	}
	return fmt.Sprintf("127.0.0.%d", 2+i)
}

// dialTCP connects from local to listener, tracked by the arena.
func (a *arena) dialTCP(local, listener string) (*peer, error) {
	addr := a.gw.addrs[listener]
	d := dialer(local)
	if a.rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, a.rcvbuf)
			})
			return cmp.Or(err, serr)
		}
	}
	c, err := d.DialContext(a.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if !a.track(c) {
		return nil, net.ErrClosed
	}
	return &peer{Conn: c, br: bufio.NewReaderSize(c, 16<<10), host: addr}, nil
}

// tlsConfig is an attacker's TLS configuration: it does not verify the
// gateway's certificate (it costs the attacker, not the gateway); cert, if
// not nil, is offered as a client certificate.
func (a *arena) tlsConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// dialTLS connects from local to listener and completes a TLS handshake.
func (a *arena) dialTLS(local, listener string, cert *tls.Certificate) (*peer, error) {
	p, err := a.dialTCP(local, listener)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(p.Conn, a.tlsConfig(cert))
	ctx, cancel := context.WithTimeout(a.ctx, waitShort)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		a.drop(p.Conn)
		return nil, err
	}
	a.mu.Lock()
	if a.conns != nil {
		delete(a.conns, p.Conn)
		a.conns[tc] = struct{}{}
	}
	a.mu.Unlock()
	p.Conn = tc
	p.br = bufio.NewReaderSize(tc, 16<<10)
	return p, nil
}

// dial is dialTLS or dialTCP, by listener ("lan" is plain).
func (a *arena) dial(local, listener string) (*peer, error) {
	if listener == "lan" {
		return a.dialTCP(local, listener)
	}
	return a.dialTLS(local, listener, nil)
}

// rawSession dials listener, bootstraps raw SMQ and reads Init.
func (a *arena) rawSession(local, listener string, cert *tls.Certificate) (*peer, error) {
	var p *peer
	var err error
	if cert != nil || listener != "lan" {
		p, err = a.dialTLS(local, listener, cert)
	} else {
		p, err = a.dialTCP(local, listener)
	}
	if err != nil {
		return nil, err
	}
	req := smq.Request{Path: "/smq", Host: p.host}
	if err := p.write(req.Append(nil)); err != nil {
		a.drop(p.Conn)
		return nil, err
	}
	if _, err := p.expect(smq.TypeInit); err != nil {
		a.drop(p.Conn)
		return nil, err
	}
	return p, nil
}

// wsSession dials listener, upgrades to WebSocket with a request of its
// own, and reads Init.
func (a *arena) wsSession(local, listener string) (*peer, error) {
	p, err := a.dial(local, listener)
	if err != nil {
		return nil, err
	}
	if err := p.upgrade(); err != nil {
		a.drop(p.Conn)
		return nil, err
	}
	if _, err := p.expect(smq.TypeInit); err != nil {
		a.drop(p.Conn)
		return nil, err
	}
	return p, nil
}

// upgrade sends a WebSocket upgrade and reads the 101.
func (p *peer) upgrade() error {
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := fmt.Sprintf("GET /smq HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", p.host, base64.StdEncoding.EncodeToString(key[:]))
	if err := p.write([]byte(req)); err != nil {
		return err
	}
	_ = p.SetReadDeadline(time.Now().Add(waitShort))
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("upgrade: %s", resp.Status)
	}
	p.ws = true
	return nil
}

// login sends Connect with uid and returns the ETID of Connack 0x00, or
// an error with the refusal.
func (p *peer) login(uid string) (uint32, error) {
	if err := p.send(smq.Connect{Version: 1, UID: uid}); err != nil {
		return 0, err
	}
	msg, err := p.expect(smq.TypeConnack)
	if err != nil {
		return 0, err
	}
	m, err := smq.Decode(msg)
	if err != nil {
		return 0, err
	}
	if ack := m.(smq.Connack); ack.Code != smq.CodeAccepted {
		return 0, fmt.Errorf("Connack %v %q", ack.Code, ack.Reason)
	} else {
		return ack.ETID, nil
	}
}

// write writes b within waitShort.
func (p *peer) write(b []byte) error {
	_ = p.SetWriteDeadline(time.Now().Add(waitShort))
	_, err := p.Write(b)
	return err
}

// send sends m in the peer's framing.
func (p *peer) send(m smq.Message) error { return p.sendMsg(m.Append(nil)) }

// sendMsg sends msg (type + body) in the peer's framing.
func (p *peer) sendMsg(msg []byte) error {
	if p.ws {
		return p.write(wsFrame(0x80|opBinary, msg))
	}
	b, err := smq.AppendRaw(nil, msg)
	if err != nil {
		return err
	}
	return p.write(b)
}

// read returns the next SMQ message within d. On WebSocket, control
// frames are skipped but a close frame ends reading with a *closeFrame.
func (p *peer) read(d time.Duration) ([]byte, error) {
	_ = p.SetReadDeadline(time.Now().Add(d))
	if !p.ws {
		hdr, err := p.br.Peek(2)
		if err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr))
		if n < smq.MinRawFrame {
			return nil, fmt.Errorf("raw frame of length %d", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(p.br, b); err != nil {
			return nil, err
		}
		return b[2:], nil
	}
	for {
		op, payload, err := p.readFrame()
		if err != nil {
			return nil, err
		}
		switch op {
		case opBinary, opText:
			if len(payload) == 0 {
				return nil, errors.New("empty WebSocket message")
			}
			return payload, nil
		case opClose:
			cf := &closeFrame{code: 1005}
			if len(payload) >= 2 {
				cf.code = int(binary.BigEndian.Uint16(payload))
				cf.reason = string(payload[2:])
			}
			return nil, cf
		}
	}
}

// expect reads the next message within waitShort and checks its type.
func (p *peer) expect(t smq.Type) ([]byte, error) {
	msg, err := p.read(waitShort)
	if err != nil {
		return nil, err
	}
	if smq.Type(msg[0]) != t {
		if smq.Type(msg[0]) == smq.TypeDisconnect {
			return nil, &disconnect{string(msg[1:])}
		}
		return nil, fmt.Errorf("got %v, want %v", smq.Type(msg[0]), t)
	}
	return msg, nil
}

// disconnect is a Disconnect read where something else was expected.
type disconnect struct{ reason string }

func (d *disconnect) Error() string { return fmt.Sprintf("Disconnect %q", d.reason) }

// closeFrame is a WebSocket close frame read.
type closeFrame struct {
	code   int
	reason string
}

func (c *closeFrame) Error() string { return fmt.Sprintf("WebSocket close %d %q", c.code, c.reason) }

// ending reads until the gateway ends the connection, within d, and
// names how: "close 1009", "Disconnect \"...\"" or "Connack 0x01" (the
// last one before the end), "eof", "reset", or "open" when it has not
// ended by then.
func (p *peer) ending(d time.Duration) string {
	deadline := time.Now().Add(d)
	said := ""
	for {
		msg, err := p.read(time.Until(deadline))
		var cf *closeFrame
		switch {
		case err == nil:
			switch smq.Type(msg[0]) {
			case smq.TypeDisconnect:
				said = fmt.Sprintf("Disconnect %q", msg[1:])
			case smq.TypeConnack:
				if len(msg) > 1 {
					said = fmt.Sprintf("Connack %#02x", msg[1])
				}
			}
			continue
		case errors.As(err, &cf):
			if said != "" {
				return fmt.Sprintf("%s then close %d", said, cf.code)
			}
			return fmt.Sprintf("close %d", cf.code)
		case said != "" && !isTimeout(err):
			return said
		case isTimeout(err):
			return "open"
		case errors.Is(err, syscall.ECONNRESET):
			return "reset"
		default:
			return "eof"
		}
	}
}

// isTimeout reports whether err is a passed deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// WebSocket opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// wsFrame returns a masked client frame: first is FIN, RSV and the opcode.
// The mask key is zero, which leaves the payload as it is (a server must
// accept any key).
func wsFrame(first byte, payload []byte) []byte {
	return append(wsHeader(first, uint64(len(payload))), payload...)
}

// wsHeader is a masked frame's header announcing n payload bytes.
func wsHeader(first byte, n uint64) []byte {
	b := []byte{first, 0}
	switch {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, n)
	}
	b[1] |= 0x80
	return append(b, 0, 0, 0, 0)
}

// readFrame reads one server frame (unmasked).
func (p *peer) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err := io.ReadFull(p.br, x[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		if _, err := io.ReadFull(p.br, x[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(x[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("server frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(p.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}
