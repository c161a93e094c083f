package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
	"github.com/smqgw/smqgw/tlsterm"
	"github.com/smqgw/smqgw/upstream"
	"github.com/smqgw/smqgw/wire"
)

// A session's methods stand in this file in the order a session lives:
//
//	accept     the bootstrap: WebSocket upgrade or raw SMQ hijack (from
//	           handler.ServeHTTP, server.go)
//	serve      admission (listener and per-address slots), the
//	           client-certificate decision
//	run        refuse (the gateway answers Connack itself), or dial the
//	           upstream
//	handshake  Init, Connect, Connack between client and upstream
//	relay      two copiers and the liveness watchdog
//	end        the one close reason; close and logEnd

// allowMessage counts one message (or WebSocket control frame) of the
// client against message_rate and message_rate_per_ip, and reports
// whether both allow it. Only the goroutine reading the client calls it.
func (s *session) allowMessage() bool {
	if !s.rate.allow() {
		s.rateOver = "message_rate"
		return false
	}
	if s.ipRate != nil && !s.ipRate.allow(int64(s.lim.MessageRatePerIP)) {
		s.rateOver = "message_rate_per_ip"
		return false
	}
	return true
}

// rateDetail says which message rate the client passed.
func (s *session) rateDetail(control bool) string {
	d := fmt.Sprintf("more than %d messages per second", s.rate.max)
	if s.rateOver == "message_rate_per_ip" {
		d = fmt.Sprintf("more than %d messages per second from the client's address", s.lim.MessageRatePerIP)
	}
	if control {
		d += ", WebSocket pings and pongs included"
	}
	return d
}

// errControlRate ends reading a WebSocket client whose control frames
// (pings, pongs) put it over message_rate.
var errControlRate = errors.New("WebSocket control frames over message_rate")

// lingerTimeout bounds the end of a session: flushing a last message,
// waiting for the peers to see the close.
const lingerTimeout = 2 * time.Second

// session is one client relayed to one upstream broker.
type session struct {
	g        *Gateway
	lim      *limits.Limits // as when the session started
	listener string
	route    *Route
	client   wire.Conn
	// up is nil until dialled. The session's own goroutines use it freely
	// once set; others (end, abort from Shutdown) go through upstream().
	up       wire.Conn
	upMu     sync.Mutex
	upURL    string             // the URL up was dialled at, "" for an in-process broker
	dialed   time.Time          // when the upstream was dialled (its Connect timer runs)
	initSent time.Time          // when the upstream's Init reached the client
	ctx      context.Context    // ends with the session: aborts a dial in progress
	stop     context.CancelFunc // cancels ctx
	clientIP string
	// clientHeader is the client's bootstrap request header, host the host
	// it asked for; overTLS: it came over TLS.
	clientHeader http.Header
	host         string
	overTLS      bool
	// bareRefusals: the client bootstrapped like the reference C client,
	// which misreads the code of a Connack with a reason of 4 bytes or
	// more: the gateway's own refusals go without their reason text (the
	// log keeps it). The broker's Connacks are relayed unchanged.
	bareRefusals bool
	identity     *tlsterm.Identity
	start        time.Time
	// id names the session in its two log lines and, as X-Smq-Session,
	// to the upstream; remote is the client's address:port.
	id     string
	remote string
	// peerCert is the certificate the client presented, accepted or not.
	peerCert *x509.Certificate
	// uid is the UID the client sent, etid the one the broker gave it.
	uid  string
	etid uint32

	// wmu serialises writes to the client: the upstream copier relays,
	// while ending (from any goroutine) may add a Disconnect.
	wmu sync.Mutex

	// ending is set once, by the first end: the close reason and its
	// detail together.
	ending atomic.Pointer[ending]
	// lingerAt is the end's deadline (Unix nanoseconds), 0 before: any
	// deadline set after end started must not outlast it.
	lingerAt atomic.Int64

	// rate is the client's message_rate, data and WebSocket control frames;
	// the goroutine reading the client's owns it. ipRate is its address's
	// (message_rate_per_ip), shared with the address's other sessions, nil
	// for a client without one; rateOver names the limit passed.
	rate     msgRate
	ipRate   *sharedRate
	rateOver string
	// clientSeen counts messages and pongs from the client, for liveness.
	clientSeen atomic.Uint64
	watch      *time.Timer
	lastSeen   uint64    // watchdog-only state
	lastSeenAt time.Time // watchdog-only state
	pinged     bool      // watchdog-only state

	inMsgs, inBytes, outMsgs, outBytes atomic.Uint64 // in: client→upstream
	dropped                            atomic.Uint64 // broker messages too big for a raw client
	// frag reassembles a raw client's PubFrag for a WebSocket upstream
	// (clientToUpstream's); fragDropped counts reassembled messages too
	// big to deliver, dropped as the reference broker drops them.
	frag        []byte
	fragDropped atomic.Uint64
	// observing holds, for an upstream that may be the reference broker
	// (any but the embedded one), the IDs the client observes: true while
	// their Change messages are relayed, false once the client unobserved
	// them. The gateway answers Unobserve itself (SMQ-WIRE §4: the
	// reference broker's Unobserve breaks the topic); nil for the embedded
	// broker, which gets Unobserve. Guarded by obsMu.
	observing map[uint32]bool
	obsMu     sync.Mutex
	// guard enforces the route's topic permissions; nil without them.
	guard *guard
	// deniedCount counts the session's access denials.
	deniedCount atomic.Uint64
	// clientBye is set before the client's Disconnect goes upstream: the
	// broker's close that follows is the client's doing.
	clientBye atomic.Bool
	// connectDue is set by the handshake once the client's Connect is read
	// (or its read failed): an upstream message before it is no answer to
	// that Connect.
	connectDue atomic.Bool
	// answerRead, once the handshake reads the upstream's answer on a
	// goroutine of its own, is closed when that read has returned.
	answerRead chan struct{}

	// tracked: the gateway counts the session (Gateway.track), and its
	// Shutdown waits for teardown. undo holds what the session must give
	// back at its end (slots, gauges), in the order it took them:
	// teardown runs them last first.
	tracked bool
	undo    []func()
}

// ending is why a session ended.
type ending struct {
	reason Reason
	detail string // for the log
}

// accept completes the client's bootstrap: the WebSocket upgrade, or the
// hijack of a raw SMQ connection (with the HTTP answer if it asked for one).
func (s *session) accept(w http.ResponseWriter, r *http.Request, boot smq.Bootstrap) error {
	if boot.WebSocket {
		// gorilla only upgrades: wire reads and writes the frames from
		// then on, through its own small buffer, and the gorilla
		// connection (with net/http's hijacked reader) is dropped.
		up := websocket.Upgrader{
			HandshakeTimeout: s.lim.RequestTimeout,
			WriteBufferPool:  wsWritePool,
			CheckOrigin:      func(*http.Request) bool { return true }, // checked by the handler
			Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
				w.Header().Set("Connection", "close") // no session: no keep-alive
				w.Header().Set("Sec-Websocket-Version", "13")
				http.Error(w, "smqgw: "+reason.Error(), status)
			},
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return err
		}
		_ = conn.NetConn().SetDeadline(time.Time{}) // the session's from now on
		ws := wire.NewWS(conn, s.lim.MaxMessageSize)
		ws.SetPongHandler(func([]byte) { s.clientSeen.Add(1) })
		// Control frames count toward message_rate: a ping costs an answer.
		ws.SetControlHook(func() error {
			if !s.allowMessage() {
				return errControlRate
			}
			return nil
		})
		s.client = ws
		return nil
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "smqgw: raw SMQ needs HTTP/1.x", http.StatusHTTPVersionNotSupported)
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	if err := smq.WriteResponse(conn, boot); err != nil {
		conn.Close()
		return err
	}
	raw := wire.NewRaw(conn, brw.Reader) // net/http's 4 KiB reader
	raw.SetMaxRead(s.lim.MaxMessageSize)
	s.client = raw
	return nil
}

// wsWritePool is gorilla's write buffer pool: wire writes the frames, so
// with a pool gorilla never takes a buffer (without one it would keep
// net/http's hijacked 4 KiB writer per session).
var wsWritePool = &sync.Pool{}

// serve runs an accepted session: admission, the certificate decision,
// the dial and the handshake on this goroutine; then the relay on two
// goroutines of their own, and this one returns (see relay). The last of
// them to end tears the session down; a session that never gets to the
// relay is torn down here.
func (s *session) serve(ll *liveListener, state *tls.ConnectionState) {
	relaying := false
	defer func() {
		if !relaying {
			s.teardown()
		}
	}()
	defer s.recoverPanic()
	relaying = s.begin(ll, state)
}

// begin is serve up to the relay, and reports whether the relay started.
func (s *session) begin(ll *liveListener, state *tls.ConnectionState) bool {
	g, lim := s.g, s.lim
	s.tracked = g.track(s)
	if state != nil && len(state.PeerCertificates) > 0 {
		s.peerCert = state.PeerCertificates[0]
	}
	s.logStart()
	transport := transportName(s.client)
	g.m.sessionsTotal.WithLabelValues(ll.name, s.route.Path, transport).Inc()
	open := g.m.sessionsOpen.WithLabelValues(ll.name, s.route.Path, transport)
	open.Inc()
	s.undo = append(s.undo, open.Dec)
	if !s.tracked {
		s.end(ReasonShutdown, "")
		return false
	}
	s.undo = append(s.undo, func() { g.untrack(s) })
	// The client's own address is judged first, so that one address at
	// its limits never takes a listener slot another address needs; a
	// refusal holds no slot and answers at once (busy).
	if ip, err := netip.ParseAddr(s.clientIP); err == nil {
		if limit, why := g.perIP.admit(ip, time.Now()); limit != "" {
			g.m.limit(ll.name, limit)
			g.log.Warn("session refused: per-address limit", "listener", ll.name, "client", s.clientIP,
				"limit", limit, "why", why)
			s.busy(why)
			return false
		}
		s.undo = append(s.undo, func() { g.perIP.release(ip) })
		s.ipRate = g.rates.get(ip)
		s.undo = append(s.undo, func() { g.rates.put(ip) })
	}
	if n := ll.active.Add(1); n > int64(lim.MaxSessions) {
		ll.active.Add(-1)
		g.m.limit(ll.name, "max_sessions")
		g.log.Warn("session refused: listener at max_sessions", "listener", ll.name, "client", s.clientIP,
			"max_sessions", lim.MaxSessions)
		s.busy("server busy: too many sessions")
		return false
	}
	s.undo = append(s.undo, func() { ll.active.Add(-1) })

	decision := tlsterm.Decision{Code: smq.CodeAccepted}
	if p := s.route.policy(); p != nil {
		decision = p.Check(state, time.Now())
	}
	return s.run(decision)
}

// teardown ends the session, on whichever goroutine is last: it waits
// out the end and closes both connections (close), gives back what the
// session took (undo, last first), and logs the end.
//
// The session's log line comes last, after its counters and after every
// slot it held is released: whoever sees the line (an operator, a test)
// sees a gateway that has finished with the session.
func (s *session) teardown() {
	defer func() {
		s.logEnd()
		if s.tracked {
			s.g.wg.Done() // Shutdown waits for the log line too
		}
	}()
	defer s.stop()
	defer s.recoverPanic()
	defer func() {
		for i := len(s.undo) - 1; i >= 0; i-- {
			s.undo[i]()
		}
	}()
	s.close()
}

// run is the session from the certificate decision to the relay, and
// reports whether the relay started. The client's bootstrap is done: its
// next message would be Connect.
func (s *session) run(decision tlsterm.Decision) bool {
	if decision.Code != smq.CodeAccepted {
		s.refuse(decision.Code, decision.Reason, ReasonRefused, nil)
		return false
	}
	s.identity = decision.Identity
	if p := s.route.Access; p != nil {
		s.guard = newGuard(p.For(s.identity), s.route.AccessName)
	}
	lim := s.lim
	dctx, cancel := context.WithTimeout(s.ctx, lim.ConnectTimeout)
	up, err := s.route.Upstream.Dial(dctx, upstream.Request{ClientIP: s.clientIP, Header: upstreamHeader(s.clientHeader, s.host, s.overTLS, s.identity, s.id)})
	cancel()
	s.dialed = time.Now()
	s.clientHeader = nil // sent: not kept for the session's lifetime
	if err != nil && s.reasonOf() != ReasonNone {
		return false // ended (shut down) while dialling: nothing more to say
	}
	if err != nil {
		msg := "upstream unreachable"
		switch {
		case upstream.CertificateRefused(err):
			msg = "upstream refused the gateway's client certificate: check the upstream's cert_file and the broker's CA"
		case proxyRefusal(err) != "":
			msg = "upstream unreachable: the proxy refused"
		}
		s.g.log.Warn(msg, "route", s.route.Path, "upstream", s.route.Upstream.Name(),
			"client", s.clientIP, "err", err)
		// The client learns which upstream failed, not its addresses; the
		// log has the details.
		what := " unavailable"
		switch {
		case upstream.CertificateRefused(err):
			s.refuse(smq.CodeServerUnavailable, "upstream "+s.route.Upstream.Name()+" refused the gateway's certificate",
				ReasonGatewayCertRefused, errors.New(upstream.Reason(err)))
			return false
		case proxyRefusal(err) != "":
			what += ": " + proxyRefusal(err)
		}
		s.unavailable("upstream "+s.route.Upstream.Name()+what, ReasonUpstreamDown,
			errors.New(upstream.Reason(err)), false)
		return false
	}
	if c, ok := up.(*upstream.Conn); ok {
		s.upURL = c.URL
		up = c.Conn // relayed on directly
	}
	if !s.setUpstream(up) {
		return false
	}
	if !isEmbedded(s.route.Upstream) {
		s.observing = map[uint32]bool{}
	}
	if !s.handshake() {
		return false
	}
	// Addressable one to one (access.Any) while it is connected.
	name, etid := s.route.Upstream.Name(), s.etid
	s.g.clients.add(name, etid)
	s.undo = append(s.undo, func() { s.g.clients.remove(name, etid) })
	s.relay()
	return true
}

// refuse answers the client inside SMQ without an upstream: our own Init,
// the client's Connect, then Connack with code and reason.
func (s *session) refuse(code smq.ConnackCode, reason string, why Reason, logDetail error) {
	if err := s.writeClient(smq.Init{Version: 1, Seed: rand.Uint32(), IP: s.clientIP}); err != nil {
		s.end(ReasonWriteError, err.Error())
		return
	}
	s.setReadDeadline(s.client, time.Now().Add(s.lim.ConnectTimeout))
	if _, err := s.client.Read(); err != nil {
		if isTimeout(err) {
			s.noConnect()
			return
		}
		// The session ends for why, whatever the client did instead of
		// sending Connect: it was refused before.
		s.end(why, fmt.Sprintf("%v: %s: the client sent no Connect", code, reason))
		return
	}
	s.answer(code, reason, why, logDetail)
}

// noConnect answers a client that sent no Connect within the connect
// timeout as the reference broker does (SMQ-WIRE §4): Connack 0x02 "no
// Connect received in time". Where the gateway relays, the broker's own
// timeout (about 4 s for the reference broker and the embedded one)
// usually comes first, and its Connack is relayed instead.
func (s *session) noConnect() {
	s.answer(smq.CodeServerUnavailable, "no Connect received in time", ReasonConnectTimeout, nil)
}

// answer sends a refusing Connack and ends the session with why. The log
// line gets the reason and logDetail, which the client does not see.
func (s *session) answer(code smq.ConnackCode, reason string, why Reason, logDetail error) {
	if s.reasonOf() != ReasonNone {
		return // ended already (shut down): the client was told
	}
	ack := smq.Connack{Code: code, Reason: reason}
	if s.bareRefusals {
		ack.Reason = ""
	}
	if s.writeClient(ack) == nil {
		s.g.m.connack(s.listener, s.route.Path, code, "gateway")
	}
	said := fmt.Sprintf("%v: %s", code, reason)
	detail := said
	if logDetail != nil {
		detail += ": " + logDetail.Error()
	}
	s.finish(why, detail, said, false) // the Connack said it: no Disconnect after it
}

// handshake relays the upstream's Init unchanged, then the client's
// Connect, then the upstream's Connack, unchanged whatever its code:
// nothing is pipelined, and nothing else from the client goes upstream
// before Connack 0x00. It reports whether the session is connected.
//
// The upstream is read from the moment its Init is relayed: a broker may
// answer before the client's Connect has gone to it (the reference broker
// times out a Connect that does not come; a TLS front end refuses the
// gateway's certificate at once), and that answer says something else than
// an answer to the client's Connect (see early).
func (s *session) handshake() bool {
	timeout := s.lim.ConnectTimeout
	s.setReadDeadline(s.up, time.Now().Add(timeout))
	init, err := s.up.Read()
	if err != nil || smq.Check(init) != nil || smq.Type(init[0]) != smq.TypeInit {
		s.unavailable("upstream "+s.route.Upstream.Name()+" sent no Init", ReasonUpstreamDown, err, false)
		return false
	}
	if err := s.sendClient(init); err != nil {
		s.end(ReasonWriteError, err.Error())
		return false
	}
	s.g.m.message(toClient, init)
	s.initSent = time.Now()
	if s.up.Buffered() > 0 {
		// Sent with Init: no answer to a Connect not relayed yet.
		msg, err := s.up.Read()
		s.early(upAnswer{msg, err})
		return false
	}

	// While the client's Connect is awaited the upstream may take its time
	// (its own connect timeout runs); once Connect is relayed, it has
	// timeout to answer.
	s.setReadDeadline(s.client, time.Now().Add(timeout))
	s.setReadDeadline(s.up, time.Time{})
	answer := s.readAnswer()
	connect, err := s.client.Read()
	s.connectDue.Store(true)
	select {
	case a := <-answer:
		s.early(a)
		return false
	default:
	}
	if err != nil {
		if isTimeout(err) {
			s.noConnect()
			return false
		}
		s.clientReadFailed(err)
		return false
	}
	if err := s.checkFromClient(connect); err != nil {
		s.clientBadMessage(err)
		return false
	}
	if t := smq.Type(connect[0]); t != smq.TypeConnect {
		// As the reference broker answers (SMQ-WIRE §4).
		s.answer(smq.CodeBadVersion, "the first message must be Connect, not "+t.String(), ReasonProtocolError, nil)
		return false
	}
	bound, err := s.bindUID(connect)
	if err != nil {
		s.answer(smq.CodeBadVersion, err.Error(), ReasonRefused, nil)
		return false
	}
	s.setReadDeadline(s.up, time.Now().Add(timeout))
	err = s.up.Write(bound)
	if err == nil {
		err = s.up.Flush()
	}
	if err != nil {
		s.upstreamFailed("failed", err, ReasonUpstreamDown)
		return false
	}
	s.inMsgs.Add(1)
	s.inBytes.Add(uint64(len(connect)))
	s.g.m.message(fromClient, connect)

	a := <-answer
	if a.err != nil {
		s.upstreamFailed("did not answer Connect", a.err, ReasonUpstreamDown)
		return false
	}
	if smq.Check(a.msg) != nil || smq.Type(a.msg[0]) != smq.TypeConnack {
		s.upstreamFailed("answered Connect with "+smq.Type(a.msg[0]).String(), nil, ReasonUpstreamProtocol)
		return false
	}
	if smq.ConnackCode(a.msg[1]) == smq.CodeServerUnavailable {
		// Busy or unavailable: passing, whatever the broker thinks the
		// reference clients make of it (SMQ-WIRE §5).
		s.upstreamFailed(connackWhat(a.msg), nil, ReasonUpstreamDown)
		return false
	}
	if !s.relayConnack(a.msg) {
		return false
	}
	s.setReadDeadline(s.client, time.Time{})
	s.setReadDeadline(s.up, time.Time{})
	return true
}

// upAnswer is the upstream's first message after Init, or why none came.
type upAnswer struct {
	msg []byte
	err error
}

// readAnswer reads the upstream's next message on a goroutine of its own
// (close waits for it) and sends it on the channel it returns. If it comes
// before the handshake has the client's Connect, the client's read is cut
// short: the upstream has spoken first.
func (s *session) readAnswer() <-chan upAnswer {
	ch := make(chan upAnswer, 1)
	done := make(chan struct{})
	s.answerRead = done
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				ch <- upAnswer{err: fmt.Errorf("panic: %v", p)} // the handshake waits for an answer
				s.logPanic(p)
			}
		}()
		msg, err := s.up.Read()
		ch <- upAnswer{msg, err}
		// Ordered after the send: if the handshake has not set connectDue
		// yet, it sees the answer when it does.
		if !s.connectDue.Load() {
			_ = s.client.SetReadDeadline(time.Unix(1, 0))
		}
	}()
	return ch
}

// early ends the handshake on what the upstream sent before the client's
// Connect was relayed to it. Such a Connack cannot judge the client's
// credentials: with code 0x04 or 0x05 it is a front end (a TLS-terminating
// gateway) refusing the gateway's own certificate, a configuration problem
// the client hears of as 0x02; any other code (the broker's 0x02 when no
// Connect came in time) is relayed unchanged.
func (s *session) early(a upAnswer) {
	if a.err != nil {
		s.upstreamFailed("closed the session before Connect", a.err, ReasonUpstreamDown)
		return
	}
	m, err := smq.Decode(a.msg)
	ack, ok := m.(smq.Connack)
	switch {
	case err != nil || !ok || ack.Code == smq.CodeAccepted:
		s.upstreamFailed("sent "+smq.Type(a.msg[0]).String()+" before Connect", err, ReasonUpstreamProtocol)
	case ack.Code == smq.CodeCertRequired || ack.Code == smq.CodeCertNotAccepted:
		reason := ack.Code.String()
		if ack.Reason != "" {
			reason += ": " + ack.Reason
		}
		s.g.log.Warn("upstream refused the gateway's client certificate: check the upstream's cert_file and its CA",
			"route", s.route.Path, "upstream", s.route.Upstream.Name(), "client", s.clientIP, "connack", reason)
		s.answer(smq.CodeServerUnavailable, "upstream "+s.route.Upstream.Name()+" refused the gateway's certificate: "+reason,
			ReasonGatewayCertRefused, nil)
	case ack.Code == smq.CodeServerUnavailable && s.gatewayLate():
		s.upstreamFailed(connackWhat(a.msg)+" before the client's Connect, most of its wait spent before the gateway relayed its Init",
			nil, ReasonUpstreamDown)
	default:
		s.relayConnack(a.msg)
	}
}

// gatewayLate reports whether, of the time the upstream has waited for a
// Connect since it was dialled, the gateway took more than a quarter to
// relay its Init to the client. The reference broker answers a Connect
// that does not come with Connack 0x02 after its timeout; a client that
// held Init for most of it is answered as the broker answers it, but when
// the gateway itself was late (a reconnect storm: thousands of sessions
// set up at once) the 0x02 says nothing about the client, and relayed it
// would end smq.js and the C client for good: then it is passing.
func (s *session) gatewayLate() bool {
	now := time.Now()
	return now.Sub(s.initSent) < now.Sub(s.dialed)*3/4
}

// connackWhat says what a broker's Connack was, for the log.
func connackWhat(ack []byte) string {
	what := "answered Connack " + smq.ConnackCode(ack[1]).String()
	if m, err := smq.Decode(ack); err == nil && m.(smq.Connack).Reason != "" {
		what += ": " + m.(smq.Connack).Reason
	}
	return what
}

// relayConnack sends the broker's Connack to the client unchanged and
// reports whether it accepted the client; a refusal ends the session.
func (s *session) relayConnack(ack []byte) bool {
	if err := s.sendClient(ack); err != nil {
		s.end(ReasonWriteError, err.Error())
		return false
	}
	s.outMsgs.Add(1)
	s.outBytes.Add(uint64(len(ack)))
	s.g.m.message(toClient, ack)
	code := smq.ConnackCode(ack[1])
	s.g.m.connack(s.listener, s.route.Path, code, "upstream")
	if code == smq.CodeAccepted {
		if m, err := smq.Decode(ack); err == nil {
			s.etid = m.(smq.Connack).ETID
		}
		return true
	}
	detail := code.String()
	if m, err := smq.Decode(ack); err == nil && m.(smq.Connack).Reason != "" {
		detail += ": " + m.(smq.Connack).Reason
	}
	s.end(ReasonConnackRefused, detail)
	return false
}

// relay starts the two copiers, each on a goroutine of its own, and
// returns: the last of them to end stops the watchdog and tears the
// session down.
//
// An idle session is two goroutines parked in a read, and their stacks
// are most of its memory. Fresh goroutines start small (a 4 KiB stack,
// the size a TLS read needs); the goroutine that ran the bootstrap, the
// admission and the handshake has grown its stack (to 8 KiB), and a stack
// only shrinks when a collection finds three quarters of it unused, which
// the TLS read's does not leave. So no goroutine that did that work is
// kept: 8 KiB of stacks per idle session instead of 12 (README,
// Performance).
func (s *session) relay() {
	s.startWatchdog()
	var running atomic.Int32
	running.Store(2)
	copier := func(copy func()) {
		defer func() {
			if running.Add(-1) == 0 {
				s.watch.Stop()
				s.teardown()
			}
		}()
		defer s.recoverPanic()
		copy()
	}
	go copier(s.upstreamToClient)
	go copier(s.clientToUpstream)
}

// clientToUpstream copies client messages to the broker, checking each at
// the edge. It flushes when the client has nothing more buffered, so
// messages arriving together leave together.
func (s *session) clientToUpstream() {
	var counts tally
	defer counts.flush(s.g.m, fromClient, &s.inMsgs, &s.inBytes)
	for {
		msg, err := s.client.Read()
		if err != nil {
			s.clientReadFailed(err)
			return
		}
		s.clientSeen.Add(1)
		if s.reasonOf() != ReasonNone {
			continue // ending: wait for EOF or the linger deadline
		}
		if err := s.checkFromClient(msg); err != nil {
			_ = s.up.Flush() // what came before it still goes
			s.clientBadMessage(err)
			continue
		}
		bye := smq.Type(msg[0]) == smq.TypeDisconnect
		if bye {
			s.clientBye.Store(true)
		} else if !s.allowMessage() {
			_ = s.up.Flush() // what came before it still goes
			s.end(ReasonRateLimited, s.rateDetail(false))
			continue
		}
		if s.guard != nil && !bye && !s.permit(msg) {
			msg = nil // answered or denied here
		}
		if msg != nil && s.observing != nil && !s.observe(msg) {
			msg = nil // answered here
		}
		if msg != nil && smq.Type(msg[0]) == smq.TypePubFrag && s.up.WebSocket() {
			var err error
			if msg, err = s.reassemble(msg); err != nil { // nil: more to come, or dropped
				_ = s.up.Flush() // what came before it still goes
				s.end(ReasonTooBig, err.Error())
				continue
			}
		}
		full := false
		if msg != nil {
			if err := s.up.Write(msg); err != nil {
				s.end(ReasonWriteError, "upstream: "+err.Error())
				continue
			}
			full = counts.add(msg)
		}
		// Flushed when the client has nothing more buffered, whether this
		// message went or not.
		if bye || s.client.Buffered() == 0 {
			counts.flush(s.g.m, fromClient, &s.inMsgs, &s.inBytes)
			if err := s.up.Flush(); err != nil {
				s.end(ReasonWriteError, "upstream: "+err.Error())
				continue
			}
		} else if full {
			counts.flush(s.g.m, fromClient, &s.inMsgs, &s.inBytes)
		}
		if bye {
			s.end(ReasonClientClosed, "client sent Disconnect")
		}
	}
}

// maxObserved bounds the IDs one session's observing tracks, so a client
// cannot grow it with Observe for ever new IDs (a real client observes a
// handful of topics).
const maxObserved = 1024

// observe keeps track of what the client observes, for an upstream that
// does not get Unobserve, and reports whether msg goes upstream: Unobserve
// does not; the Change messages of that ID stop instead. Observe goes (the
// broker answers it with the current count), and lets them through again.
func (s *session) observe(msg []byte) bool {
	switch smq.Type(msg[0]) {
	case smq.TypeObserve:
		s.obsMu.Lock()
		if id := smq.ID(msg); len(s.observing) < maxObserved {
			s.observing[id] = true
		} else if _, ok := s.observing[id]; ok {
			s.observing[id] = true
		} // else untracked: its Change messages keep coming after an Unobserve
		s.obsMu.Unlock()
	case smq.TypeUnobserve:
		s.obsMu.Lock()
		if _, ok := s.observing[smq.ID(msg)]; ok {
			s.observing[smq.ID(msg)] = false
		}
		s.obsMu.Unlock()
		return false
	}
	return true
}

// changeWanted reports whether the client still observes the ID of
// Change msg.
func (s *session) changeWanted(msg []byte) bool {
	s.obsMu.Lock()
	defer s.obsMu.Unlock()
	wanted, ok := s.observing[smq.ID(msg)]
	return wanted || !ok
}

// isEmbedded reports whether u is the embedded broker, which has not the
// reference broker's Unobserve bug.
func isEmbedded(u upstream.Upstream) bool {
	switch u.(type) {
	case *upstream.Embedded, upstream.Embedded:
		return true
	}
	return false
}

// reassemble collects a raw client's PubFrag fragments into one Publish
// for a WebSocket upstream (the reference broker closes a WebSocket that
// sends PubFrag), with the reference broker's limits (SMQ-WIRE §4): more
// than smq.MaxPayload accumulated payload bytes is an error (the broker
// closes the connection); a reassembled message (header included) over
// smq.MaxPayload is dropped silently. It returns the Publish once the last
// fragment (non-zero tid, whose header it takes) has come, nil before.
func (s *session) reassemble(msg []byte) ([]byte, error) {
	const head = 1 + smq.PublishHeaderLen
	payload := msg[head:]
	acc := len(payload)
	if s.frag != nil {
		acc += len(s.frag) - head
	}
	if acc > smq.MaxPayload {
		s.frag = nil
		return nil, fmt.Errorf("PubFrag reassembly over %d bytes", smq.MaxPayload)
	}
	if s.frag == nil {
		s.frag = make([]byte, head, head+max(len(payload), 4<<10))
	}
	s.frag = append(s.frag, payload...)
	if smq.ID(msg) == 0 {
		return nil, nil
	}
	whole := s.frag
	s.frag = nil
	if len(whole) > smq.MaxPayload {
		s.fragDropped.Add(1)
		return nil, nil
	}
	whole[0] = byte(smq.TypePublish)
	copy(whole[1:head], msg[1:head])
	return whole, nil
}

// upstreamToClient copies broker messages to the client, flushing when the
// broker has nothing more buffered. Each batch of writes gets WriteTimeout:
// a client that stops reading ends its session, not the broker's patience.
func (s *session) upstreamToClient() {
	wt := s.lim.WriteTimeout
	m := s.g.m
	var counts tally
	defer counts.flush(m, toClient, &s.outMsgs, &s.outBytes)
	fresh := true // the next write starts a batch
	for {
		msg, err := s.up.Read()
		if err != nil {
			s.upstreamReadFailed(err)
			return
		}
		if s.observing != nil && smq.Type(msg[0]) == smq.TypeChange && !s.changeWanted(msg) {
			continue // the client unobserved it
		}
		if s.guard != nil {
			s.learn(msg) // before the client can act on it
		}
		s.wmu.Lock()
		// Checked under the lock: end sets the reason before its own
		// deadline, so ours can never outlast the linger.
		if s.reasonOf() != ReasonNone {
			s.wmu.Unlock()
			continue
		}
		if fresh {
			_ = s.client.SetWriteDeadline(time.Now().Add(wt))
			if at := s.lingerAt.Load(); at != 0 { // end began meanwhile
				_ = s.client.SetWriteDeadline(time.Unix(0, at))
			}
			fresh = false
		}
		err = s.client.Write(msg)
		if errors.Is(err, smq.ErrTooBig) {
			// A WebSocket broker's message that no raw frame can hold:
			// drop it rather than corrupt the client's stream.
			s.wmu.Unlock()
			s.dropped.Add(1)
			continue
		}
		if err == nil {
			full := counts.add(msg)
			if s.up.Buffered() == 0 {
				err = s.client.Flush()
				fresh = true
			}
			if fresh || full {
				counts.flush(m, toClient, &s.outMsgs, &s.outBytes)
			}
		}
		s.wmu.Unlock()
		if err != nil {
			if isTimeout(err) && s.reasonOf() == ReasonNone {
				m.limit(s.listener, "write_timeout")
			}
			s.end(ReasonWriteError, "client: "+err.Error())
			continue
		}
	}
}

// bindUID returns the client's Connect with its UID bound to the client's
// identity (upstreamUID), or why it cannot be relayed: a UID too short
// for the broker, or too long to bear the namespace.
func (s *session) bindUID(connect []byte) ([]byte, error) {
	m, err := smq.Decode(connect)
	if err != nil {
		return nil, err
	}
	c := m.(smq.Connect)
	switch {
	case len(c.UID) < MinClientUID:
		return nil, errors.New("uid must be longer than 5 bytes")
	case len(c.UID) > MaxClientUID:
		return nil, fmt.Errorf("uid must be at most %d bytes through this gateway", MaxClientUID)
	}
	s.uid = c.UID
	c.UID = upstreamUID(s.identity, c.UID)
	return c.Append(connect[:0:0]), nil
}

// checkFromClient applies the edge rules to one client message.
func (s *session) checkFromClient(msg []byte) error {
	if err := smq.Check(msg); err != nil {
		return err
	}
	if s.up != nil && len(msg) > s.up.MaxMessage() {
		return &smq.MessageError{Type: smq.Type(msg[0]), Len: len(msg), Err: smq.ErrTooBig,
			Detail: fmt.Sprintf("message is %d bytes, the upstream takes at most %d", len(msg), s.up.MaxMessage())}
	}
	switch t := smq.Type(msg[0]); t {
	case smq.TypeSubscribe, smq.TypeCreate, smq.TypeCreatesub:
		if n := len(msg) - 1; n > smq.MaxName {
			// Its ack (or the gateway's denial) could not reach a raw
			// client, and would break the reference broker's stream.
			return &smq.MessageError{Type: t, Len: len(msg), Err: smq.ErrTooBig,
				Detail: fmt.Sprintf("name of %d bytes: an ack echoing it fits one SMQ frame only up to %d", n, smq.MaxName)}
		}
		return nil
	case smq.TypePublish, smq.TypeUnsubscribe,
		smq.TypeDisconnect, smq.TypePing, smq.TypePong, smq.TypeObserve, smq.TypeUnobserve:
		return nil
	case smq.TypeConnect:
		if s.inMsgs.Load() == 0 {
			return nil
		}
	case smq.TypePubFrag:
		if !s.client.WebSocket() {
			return nil
		}
		return &smq.MessageError{Type: t, Len: len(msg), Err: smq.ErrBadField,
			Detail: "PubFrag is for the raw transport only"}
	}
	return &smq.MessageError{Type: smq.Type(msg[0]), Len: len(msg), Err: smq.ErrBadField,
		Detail: "not a message a client sends here"}
}

func (s *session) clientBadMessage(err error) {
	if errors.Is(err, smq.ErrTooBig) {
		s.end(ReasonTooBig, err.Error())
		return
	}
	s.end(ReasonProtocolError, err.Error())
}

// clientReadFailed ends the session for a failed client read.
func (s *session) clientReadFailed(err error) {
	var me *smq.MessageError
	switch {
	case s.reasonOf() != ReasonNone: // already ending
	case errors.Is(err, websocket.ErrReadLimit):
		s.end(ReasonTooBig, fmt.Sprintf("message over %d bytes", s.lim.MaxMessageSize))
	case errors.Is(err, errControlRate):
		s.end(ReasonRateLimited, s.rateDetail(true))
	case errors.As(err, &me):
		s.clientBadMessage(err)
	case isTimeout(err):
		s.end(ReasonConnectTimeout, "no Connect in time")
	case closedByPeer(err):
		s.end(ReasonClientClosed, "")
	default:
		s.end(ReasonClientClosed, err.Error())
	}
}

// upstreamReadFailed ends the session for a failed upstream read.
func (s *session) upstreamReadFailed(err error) {
	var me *smq.MessageError
	switch {
	case s.reasonOf() != ReasonNone:
	case s.clientBye.Load():
		s.end(ReasonClientClosed, "client sent Disconnect")
	case errors.As(err, &me):
		s.end(ReasonUpstreamProtocol, err.Error())
	case closedByPeer(err):
		s.endSaying(ReasonUpstreamClosed, "", s.upstreamClosedText())
	default:
		s.endSaying(ReasonUpstreamClosed, err.Error(), s.upstreamClosedText())
	}
}

// startWatchdog checks the client's liveness every ping interval without a
// goroutine of its own: a WebSocket client that sent nothing in an interval
// gets a ping, and one that answers nothing by the next is gone; any client
// silent for the idle timeout is gone.
func (s *session) startWatchdog() {
	s.lastSeenAt = time.Now()
	// Set s.watch before the timer can fire: checkLiveness reads it. Reset
	// orders this goroutine's writes before the callback.
	s.watch = time.AfterFunc(math.MaxInt64, s.checkLiveness)
	s.watch.Reset(min(s.lim.WSPingInterval, s.lim.IdleTimeout))
}

func (s *session) checkLiveness() {
	defer s.recoverPanic()
	if s.reasonOf() != ReasonNone {
		return
	}
	lim := s.lim
	now := time.Now()
	if seen := s.clientSeen.Load(); seen != s.lastSeen {
		s.lastSeen, s.lastSeenAt, s.pinged = seen, now, false
	} else {
		if now.Sub(s.lastSeenAt) >= lim.IdleTimeout {
			s.end(ReasonIdle, fmt.Sprintf("nothing from the client for %v", lim.IdleTimeout))
			return
		}
		if ws, ok := s.client.(*wire.WS); ok {
			if s.pinged {
				s.end(ReasonPingTimeout, "no answer to ping")
				return
			}
			_ = ws.WriteControl(websocket.PingMessage, nil, now.Add(lingerTimeout))
			s.pinged = true
		}
	}
	if s.reasonOf() == ReasonNone { // relay's Stop may have come meanwhile
		s.watch.Reset(min(lim.WSPingInterval, lim.IdleTimeout))
	}
}

// end records r as the session's close reason, if it is the first, and
// starts closing: the client gets r's Disconnect text (if any) and a close
// (WebSocket close code, or TCP half-close); the upstream a half-close. Both
// copiers then run out on EOF or on the linger deadline. Safe from any
// goroutine.
func (s *session) end(r Reason, detail string) { s.finish(r, detail, closeText(r, detail), true) }

// endSaying is end with say as the WebSocket close reason, for a detail
// that is for the log only (it may name the upstream's addresses).
func (s *session) endSaying(r Reason, detail, say string) { s.finish(r, detail, say, true) }

// finish is end and endSaying; bye false sends no Disconnect (the client
// had its Connack).
func (s *session) finish(r Reason, detail, say string, bye bool) {
	if r == ReasonNone || !s.ending.CompareAndSwap(nil, &ending{r, detail}) {
		return
	}
	s.stop()
	deadline := time.Now().Add(lingerTimeout)
	s.lingerAt.Store(deadline.UnixNano())
	// Cut short a write blocked on a slow client, so the lock comes free.
	_ = s.client.SetWriteDeadline(deadline)
	s.wmu.Lock()
	// A passing end (shutdown) says no Disconnect unless the route asks
	// for SMQ refusals: the reference clients would not come back.
	if text := r.disconnectText(); text != "" && bye && (!r.passing() || s.route.RefuseTemporary) {
		_ = s.client.Write(smq.Disconnect{Reason: text}.Append(nil))
	}
	_ = s.client.Flush()
	_ = s.client.CloseWrite(r.wsCode(), say, deadline)
	s.wmu.Unlock()
	_ = s.client.SetReadDeadline(deadline)
	if up := s.upstream(); up != nil {
		_ = up.CloseWrite(websocket.CloseNormalClosure, "", deadline)
		_ = up.SetReadDeadline(deadline)
	}
}

// reasonOf returns the session's close reason, ReasonNone while it runs.
func (s *session) reasonOf() Reason {
	if e := s.ending.Load(); e != nil {
		return e.reason
	}
	return ReasonNone
}

// detail returns the close reason's detail.
func (s *session) detail() string {
	if e := s.ending.Load(); e != nil {
		return e.detail
	}
	return ""
}

// upstream returns the upstream connection, nil before it is dialled; safe
// from any goroutine.
func (s *session) upstream() wire.Conn {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	return s.up
}

// setUpstream installs the dialled upstream, unless the session is already
// ending (shut down during the dial): then it closes it and reports false.
func (s *session) setUpstream(up wire.Conn) bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.reasonOf() != ReasonNone {
		_ = up.Close()
		return false
	}
	s.up = up
	return true
}

// setReadDeadline sets a read deadline on c that never outlasts the
// session's linger once it is ending.
func (s *session) setReadDeadline(c wire.Conn, t time.Time) {
	_ = c.SetReadDeadline(t)
	if at := s.lingerAt.Load(); at != 0 {
		_ = c.SetReadDeadline(time.Unix(0, at))
	}
}

// writeClient writes one message to the client and flushes it.
func (s *session) writeClient(m smq.Message) error { return s.sendClient(m.Append(nil)) }

// sendClient writes one message (type + body) to the client and flushes it.
func (s *session) sendClient(msg []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.reasonOf() == ReasonNone { // ending sets its own, shorter deadline
		_ = s.client.SetWriteDeadline(time.Now().Add(s.lim.WriteTimeout))
	}
	if err := s.client.Write(msg); err != nil {
		return err
	}
	return s.client.Flush()
}

// busy refuses a session the gateway has no room for, at once: without
// RefuseTemporary, by closing (SMQ-WIRE §5: the reference clients retry);
// with it, by Init and Connack 0x02 with reason without waiting for the
// client's Connect (a client reads Init, sends Connect, then reads the
// Connack already there), so that a refused session costs no wait.
func (s *session) busy(reason string) {
	if !s.route.RefuseTemporary {
		s.endSaying(ReasonBusy, reason, reason)
		return
	}
	if err := s.writeClient(smq.Init{Version: 1, Seed: rand.Uint32(), IP: s.clientIP}); err != nil {
		s.end(ReasonWriteError, err.Error())
		return
	}
	s.answer(smq.CodeServerUnavailable, reason, ReasonBusy, nil)
}

// upstreamFailed ends the session when the upstream fails during the
// handshake, after its Init: a passing failure (why ReasonUpstreamDown) as
// unavailable does, any other with Connack 0x02. The client learns what
// went wrong, not the upstream's addresses; the log line has err.
func (s *session) upstreamFailed(what string, err error, why Reason) {
	reason := "upstream " + s.route.Upstream.Name() + " " + what
	if why.passing() {
		s.unavailable(reason, why, err, true)
		return
	}
	s.answer(smq.CodeServerUnavailable, reason, why, err)
}

// unavailable ends the session for a passing condition (why: the upstream
// unreachable or silent, busy), which a later try may find gone. By
// default without an SMQ refusal, so that the reference clients retry
// (SMQ-WIRE §5): a raw client sees the end of the stream, a WebSocket one
// a close frame with why's code and reason. With the route's
// RefuseTemporary: Connack 0x02 with reason, after our own Init unless
// initSent. logDetail is for the log only.
func (s *session) unavailable(reason string, why Reason, logDetail error, initSent bool) {
	switch {
	case s.route.RefuseTemporary && initSent:
		s.answer(smq.CodeServerUnavailable, reason, why, logDetail)
	case s.route.RefuseTemporary:
		s.refuse(smq.CodeServerUnavailable, reason, why, logDetail)
	default:
		detail := reason
		if logDetail != nil {
			detail += ": " + logDetail.Error()
		}
		s.endSaying(why, detail, reason)
	}
}

// close waits out the session's end and closes both connections.
func (s *session) close() {
	// Drain the client until it closes or the linger deadline passes, so
	// our last message is not lost to a reset.
	if s.client != nil {
		var err error
		for err == nil {
			_, err = s.client.Read()
		}
		if unreadLeft(err) {
			// Reading stopped inside what the client sent (a message too
			// big, a broken frame): closing on unread bytes would reset the
			// connection, and a reset may destroy our close frame or
			// Disconnect before the client reads it. Discard the bytes
			// until the client closes or the linger deadline passes.
			if nc, ok := s.client.(interface{ NetConn() net.Conn }); ok {
				_, _ = io.Copy(io.Discard, nc.NetConn())
			}
		}
		_ = s.client.Close()
	}
	if up := s.upstream(); up != nil {
		_ = up.Close()
	}
	if s.answerRead != nil {
		<-s.answerRead // the upstream's close ends it
	}
}

// abort closes both connections at once.
func (s *session) abort() {
	s.stop()
	if s.client != nil {
		_ = s.client.Close()
	}
	if up := s.upstream(); up != nil {
		_ = up.Close()
	}
}

// recoverPanic, deferred, turns a panic of the session's goroutine — a
// bug — into the end of that session alone: logged with its stack, both
// connections closed, the gateway serving on.
func (s *session) recoverPanic() {
	if p := recover(); p != nil {
		s.logPanic(p)
	}
}

// logPanic logs a recovered panic of the session with its stack, and
// ends the session, closing both connections.
func (s *session) logPanic(p any) {
	s.g.log.Error("session failed: a bug in smqgw (please report it with this line)", "session", s.id,
		"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	s.end(ReasonInternal, fmt.Sprint("panic: ", p))
	s.abort()
}

// logEnd counts the session's end and logs it.
func (s *session) logEnd() {
	attrs := []any{
		"session", s.id, "listener", s.listener, "route", s.route.Path, "client", s.clientIP,
		"transport", transportName(s.client), "upstream", s.route.Upstream.Name(),
		"reason", s.reasonOf().String(),
		"msgs_in", s.inMsgs.Load(), "bytes_in", s.inBytes.Load(),
		"msgs_out", s.outMsgs.Load(), "bytes_out", s.outBytes.Load(),
		"duration", time.Since(s.start).Round(time.Millisecond).String(),
	}
	if s.upURL != "" {
		attrs = append(attrs, "upstream_url", s.upURL)
	}
	if d := s.detail(); d != "" {
		attrs = append(attrs, "detail", d)
	}
	if s.identity != nil {
		attrs = append(attrs, "identity", s.identity.Subject)
	} else if s.peerCert != nil {
		attrs = append(attrs, certAttrs(s.peerCert)...) // whose certificate was refused
	}
	if s.uid != "" {
		attrs = append(attrs, "uid", s.uid)
	}
	if s.etid != 0 {
		attrs = append(attrs, "etid", fmt.Sprintf("%#x", s.etid))
	}
	if n := s.dropped.Load(); n > 0 {
		attrs = append(attrs, "dropped_too_big", n)
	}
	if n := s.fragDropped.Load(); n > 0 {
		attrs = append(attrs, "dropped_pubfrag_too_big", n)
	}
	if s.guard != nil {
		attrs = append(attrs, "permissions", s.guard.policy)
		if n := s.deniedCount.Load(); n > 0 {
			attrs = append(attrs, "access_denied", n)
		}
	}
	s.g.m.closed.WithLabelValues(s.listener, s.route.Path, s.reasonOf().String()).Inc()
	if limit := s.reasonOf().limit(); limit != "" {
		if s.reasonOf() == ReasonRateLimited && s.rateOver != "" {
			limit = s.rateOver
		}
		s.g.m.limit(s.listener, limit)
	}
	s.g.log.Info("session", attrs...)
}

// logStart logs the session's start, once its bootstrap is done: where
// it came from and the certificate it presented, if any. Its end line has
// the same session ID.
func (s *session) logStart() {
	attrs := []any{"session", s.id, "listener", s.listener, "route", s.route.Path, "client", s.remote,
		"transport", transportName(s.client)}
	if s.peerCert != nil {
		attrs = append(attrs, certAttrs(s.peerCert)...)
	}
	s.g.log.Info("session start", attrs...)
}

// certAttrs names a client certificate in a log line: its subject and
// fingerprint.
func certAttrs(c *x509.Certificate) []any {
	fp := sha256.Sum256(c.Raw)
	return []any{"cert", c.Subject.String(), "cert_fingerprint", "sha256:" + hex.EncodeToString(fp[:])}
}

// newSessionID returns a fresh session ID: 16 hex digits.
func newSessionID() string { return fmt.Sprintf("%016x", rand.Uint64()) }

// upstreamClosedText is the WebSocket close reason of a session whose
// upstream closed it.
func (s *session) upstreamClosedText() string {
	return "upstream " + s.route.Upstream.Name() + " closed the session"
}

// closeText is the WebSocket close reason: the Disconnect text, or detail.
func closeText(r Reason, detail string) string {
	if t := r.disconnectText(); t != "" {
		if detail != "" {
			return t + ": " + detail
		}
		return t
	}
	return detail
}

func transportName(c wire.Conn) string {
	if c != nil && c.WebSocket() {
		return "websocket"
	}
	return "raw"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unreadLeft reports whether a read error of the client's connection left
// what the client sent partly unread: a message over the limit, a
// malformed frame.
func unreadLeft(err error) bool {
	var me *smq.MessageError
	var pe *wire.ProtocolError
	return errors.Is(err, websocket.ErrReadLimit) || errors.As(err, &me) || errors.As(err, &pe)
}

// closedByPeer reports the ordinary ways a peer goes away.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway,
			websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure)
}

// proxyRefusal words a proxy's refusal to tunnel for the client: "proxy
// authentication required (credentials rejected)", "proxy refused CONNECT:
// HTTP/1.1 403 Forbidden", "SOCKS proxy: connection not allowed by ruleset
// (SOCKS reply 0x02)". These name no address. "" when err is not one (a
// proxy that cannot be reached is an ordinary dial failure).
func proxyRefusal(err error) string {
	var e *smqdial.Error
	if errors.As(err, &e) && e.Kind == smqdial.ProxyRefused {
		return smqdial.Reason(e)
	}
	return ""
}
