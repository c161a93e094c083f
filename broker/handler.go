package broker

import (
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/wire"
)

// ServeHTTP serves SMQ on any path: a WebSocket upgrade, or a raw SMQ
// bootstrap (a SimpleMQ header) answered with the HTTP 200 head when the
// client sent SendSmqHttpResponse: true and with nothing otherwise. Requests
// that are neither get 404. It returns once the connection is taken over:
// the session goes on in a goroutine of its own, which Shutdown waits for.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	boot := smq.Classify(r.Header)
	if !boot.SMQ {
		http.Error(w, "not an SMQ request", http.StatusNotFound)
		return
	}
	peer := Peer{IP: b.clientIP(r), RemoteAddr: r.RemoteAddr, Header: r.Header.Clone()}
	if boot.WebSocket {
		up := websocket.Upgrader{CheckOrigin: b.cfg.CheckOrigin}
		if up.CheckOrigin == nil {
			up.CheckOrigin = func(*http.Request) bool { return true }
		}
		conn, err := up.Upgrade(w, r, nil) // answers the client itself on error
		if err != nil {
			return
		}
		peer.WebSocket = true
		// The reference broker reads WebSocket frames of up to 65,535 bytes.
		// The session goes on in a goroutine of its own: net/http's
		// connection, which holds the 4 KiB reader and writer it hijacked
		// with until the handler returns, goes now (see wire's figures).
		go b.serve(wire.NewWS(conn, smq.MaxRawFrame), peer)
		return
	}
	rc := http.NewResponseController(w)
	conn, brw, err := rc.Hijack()
	if err != nil {
		http.Error(w, "raw SMQ needs HTTP/1.x", http.StatusHTTPVersionNotSupported)
		return
	}
	// A clean slate: net/http may have set deadlines on the connection.
	_ = conn.SetDeadline(time.Time{})
	if err := smq.WriteResponse(conn, boot); err != nil {
		_ = conn.Close()
		return
	}
	go b.serve(wire.NewRaw(conn, brw.Reader), peer) // brw goes with the handler, as above
}

// clientIP returns the IP to put in Init: the peer address without a
// "::ffff:" prefix, or the last X-Forwarded-For entry when the peer is a
// trusted proxy.
func (b *Broker) clientIP(r *http.Request) string {
	ip := smq.HostIP(r.RemoteAddr)
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 && b.trusted(addr) {
		last := xff[len(xff)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		if a, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
			return a.Unmap().String()
		}
	}
	return addr.String()
}

func (b *Broker) trusted(a netip.Addr) bool {
	for _, p := range b.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
