// Package limits is the one definition of the bounds every smqgw session
// lives under: the Limits type the configuration decodes ([limits]) and
// the gateway enforces, and each limit's default, defined here once.
package limits

import (
	"time"

	"github.com/smqgw/smqgw/smq"
)

// Defaults of every limit: what a zero field means.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultRequestTimeout   = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultIdleTimeout      = 30 * time.Minute
	DefaultWSPingInterval   = 30 * time.Second
	DefaultMaxSessions      = 10000
	DefaultMaxMessageSize   = smq.MaxRawMessage
	DefaultShutdownGrace    = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultMaxSessionsPerIP = 1000
	DefaultSessionRatePerIP = 50
	DefaultMessageRate      = 10000
	DefaultMessageRatePerIP = 20000
	DefaultMaxPending       = 4096
	DefaultMaxPendingPerIP  = 100
	DefaultMaxConnsPerIP    = DefaultMaxSessionsPerIP + DefaultMaxPendingPerIP
)

// Limits bound every session ([limits] in the configuration file). A zero
// field takes its default; WithDefaults fills them in. A duration in the
// file is a string for time.ParseDuration ("10s", "30m").
type Limits struct {
	// HandshakeTimeout (handshake_timeout) bounds the TLS handshake.
	// Default 10s.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// RequestTimeout (request_timeout) bounds reading the HTTP bootstrap
	// request (raw SMQ or WebSocket upgrade). Default 10s.
	RequestTimeout time.Duration `toml:"request_timeout"`
	// ConnectTimeout (connect_timeout) bounds waiting for the client's
	// Connect after Init (then Connack 0x02 "no Connect received in time",
	// unless the broker's own answer came first), and for the upstream's
	// dial, Init and Connack. Default 10s.
	ConnectTimeout time.Duration `toml:"connect_timeout"`
	// IdleTimeout (idle_timeout) ends a session when nothing came from the
	// client (messages or pongs) for this long. Default 30m, longer than
	// the C client's 20-minute ping.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// WSPingInterval (ws_ping_interval) is the WebSocket ping period toward
	// quiet clients; no pong or message within two intervals ends the
	// session. Default 30s.
	WSPingInterval time.Duration `toml:"ws_ping_interval"`
	// MaxSessions (max_sessions) caps concurrent sessions per listener.
	// Default 10000.
	MaxSessions int `toml:"max_sessions"`
	// MaxMessageSize (max_message_size) is the largest SMQ message (type
	// byte + body) accepted from a client. Default and maximum 65533
	// (smq.MaxRawMessage).
	MaxMessageSize int `toml:"max_message_size"`
	// ShutdownGrace (shutdown_grace) is how long sessions may drain on
	// shutdown before they are closed. Default 10s.
	ShutdownGrace time.Duration `toml:"shutdown_grace"`
	// WriteTimeout (write_timeout) bounds a write to a client that does
	// not read: the session ends when it passes. Default 30s.
	WriteTimeout time.Duration `toml:"write_timeout"`
	// MaxSessionsPerIP (max_sessions_per_ip) caps the open sessions of one
	// client address across all listeners (0x02 "server busy: too many
	// sessions from your address" beyond). Default 1000.
	MaxSessionsPerIP int `toml:"max_sessions_per_ip"`
	// SessionRatePerIP (session_rate_per_ip) is how many new sessions per
	// second one client address may start, with bursts of twice that
	// (0x02 "... start too fast" beyond). An address that had a burst's
	// worth of sessions refused within a second has its new connections
	// closed before their TLS handshake for the rest of that second.
	// Default 50.
	SessionRatePerIP int `toml:"session_rate_per_ip"`
	// MessageRate (message_rate) is how many messages per second one
	// client may send; more ends the session with Disconnect "rate limit
	// exceeded". Default 10000.
	MessageRate int `toml:"message_rate"`
	// MessageRatePerIP (message_rate_per_ip) is how many messages per
	// second the sessions of one client address may send together,
	// WebSocket pings and pongs included; the session whose message goes
	// over ends as for message_rate. Default 20000.
	MessageRatePerIP int `toml:"message_rate_per_ip"`
	// MaxPending (max_pending) caps a listener's connections that are not
	// sessions (yet): in the TLS handshake, or before, between or after
	// HTTP requests that are no SMQ bootstrap. Beyond it a new connection
	// is closed at once, before any TLS work. Default 4096.
	MaxPending int `toml:"max_pending"`
	// MaxPendingPerIP (max_pending_per_ip) caps such connections of one
	// client address, across all listeners. Default 100.
	MaxPendingPerIP int `toml:"max_pending_per_ip"`
	// MaxConnectionsPerIP (max_connections_per_ip) caps the connections of
	// one client address of every kind, sessions included, across all
	// listeners; checked before any TLS work. Default 1100
	// (max_sessions_per_ip and max_pending_per_ip).
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
}

// WithDefaults returns l with every zero (or negative) field set to its
// default, and MaxMessageSize capped at smq.MaxRawMessage.
func (l Limits) WithDefaults() Limits {
	dur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	num := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	dur(&l.HandshakeTimeout, DefaultHandshakeTimeout)
	dur(&l.RequestTimeout, DefaultRequestTimeout)
	dur(&l.ConnectTimeout, DefaultConnectTimeout)
	dur(&l.IdleTimeout, DefaultIdleTimeout)
	dur(&l.WSPingInterval, DefaultWSPingInterval)
	dur(&l.ShutdownGrace, DefaultShutdownGrace)
	dur(&l.WriteTimeout, DefaultWriteTimeout)
	num(&l.MaxSessions, DefaultMaxSessions)
	num(&l.MaxMessageSize, DefaultMaxMessageSize)
	num(&l.MaxSessionsPerIP, DefaultMaxSessionsPerIP)
	num(&l.SessionRatePerIP, DefaultSessionRatePerIP)
	num(&l.MessageRate, DefaultMessageRate)
	num(&l.MessageRatePerIP, DefaultMessageRatePerIP)
	num(&l.MaxPending, DefaultMaxPending)
	num(&l.MaxPendingPerIP, DefaultMaxPendingPerIP)
	num(&l.MaxConnectionsPerIP, DefaultMaxConnsPerIP)
	l.MaxMessageSize = min(l.MaxMessageSize, smq.MaxRawMessage)
	return l
}
