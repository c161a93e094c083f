package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
)

// Defaults of Options' zero fields.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultPingIdle       = 120 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultMinBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// MaxPayload is the largest payload Publish sends: a Publish message (type,
// 12-byte header, payload) must fit one raw frame, or a raw subscriber could
// not receive it. It equals the protocol's documented maximum, 0xFFF0.
const MaxPayload = smq.MaxRawMessage - 1 - smq.PublishHeaderLen

// Dialer opens the network connection to the broker, or to a proxy that
// reaches it. *net.Dialer is one; proxy dialers plug in here.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Options configure a Client. The zero value connects with a random UID, no
// credentials, the system's root CAs, pings after two idle minutes and does
// not reconnect.
type Options struct {
	// UID identifies the client to the broker; it must be longer than 5
	// bytes and at most 255. A second connection with the same UID takes
	// the session (and ETID) over and the first is disconnected with
	// "reconnect". Empty: a random UID, kept across reconnects.
	UID string

	// Credentials and Info are sent in Connect (Credentials at most 255
	// bytes). Both are passed to the broker's authenticate hook; empty is
	// fine for a broker that does not check.
	Credentials string
	Info        string

	// TLSConfig is the base TLS configuration for https:// and wss:// URLs;
	// it is cloned, never modified. Nil: a default configuration. The four
	// fields below override its counterparts when set. ServerName defaults
	// to the URL's host name, MinVersion to TLS 1.2.
	TLSConfig *tls.Config
	// RootCAs verify the broker's certificate. Nil: the system roots.
	RootCAs *x509.CertPool
	// Certificate is the client certificate offered when the server asks
	// for one. Nil: none.
	Certificate *tls.Certificate
	// InsecureSkipVerify accepts any server certificate. Risk: anyone on
	// the path can read and alter the session. For tests only.
	InsecureSkipVerify bool
	// ServerName is the name the server certificate is verified against
	// and sent in SNI.
	ServerName string

	// Header holds extra headers for the bootstrap request (raw) or the
	// WebSocket upgrade. Headers the transport owns (Host, SimpleMQ,
	// Upgrade, Connection, Sec-WebSocket-*, and the framing and hop-by-hop
	// ones, such as Content-Length: see smqdial.ReservedHeader) are
	// ignored.
	Header http.Header

	// Dialer opens TCP connections. Nil: a net.Dialer, or the proxy
	// dialer of Proxy.
	Dialer Dialer

	// Proxy is how to reach the broker when Dialer is nil: "" connects
	// directly; "env" uses HTTPS_PROXY (https://, wss://), HTTP_PROXY
	// (http://, ws://), ALL_PROXY and NO_PROXY, lower-case forms too; a
	// URL names the proxy: http:// or https:// (HTTP CONNECT), socks5:// or
	// socks5h:// (names resolved by the proxy), with user:password@ for
	// authentication. See package proxyclient.
	Proxy string

	// Logger receives connection events (reconnects, failed
	// re-subscriptions). Nil discards.
	Logger *slog.Logger

	// ConnectTimeout bounds one connection attempt: dial, TLS, bootstrap,
	// Init and Connack. Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// WriteTimeout bounds one message write; a write that takes longer ends
	// the connection. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// PingIdle is how long the connection may be silent (nothing received)
	// before the client sends a Ping, like the Python client. Zero means
	// DefaultPingIdle (120 s); negative disables keepalive pings.
	PingIdle time.Duration
	// PongTimeout is how long a keepalive Ping may go unanswered before the
	// connection is declared dead. Zero means DefaultPongTimeout (10 s).
	PongTimeout time.Duration

	// Reconnect makes the client reconnect after a lost connection, with
	// exponential backoff between MinBackoff and MaxBackoff, and then
	// subscribe and observe again what it had subscribed and observed
	// (topic IDs are looked up anew: a restarted broker hands out new ones).
	// It does not reconnect after Close, after being taken over by another
	// connection with the same UID, or after a refusal other than 0x02.
	Reconnect bool
	// MinBackoff and MaxBackoff bound the delay between reconnect attempts.
	// Zero means DefaultMinBackoff / DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration

	// OnState, when set, is called on every connection state change: after
	// each successful connect (the first, from Dial, included; after a
	// reconnect only once subscriptions and observations are restored),
	// when a connection is lost and a reconnect begins, and once at the end.
	// It runs on the same goroutine as message handlers, in order with them.
	OnState func(StateChange)
}

// State is a client's connection state.
type State int

// Connection states.
const (
	Connected    State = iota + 1 // a session is up
	Reconnecting                  // the connection was lost; a reconnect is under way
	Closed                        // the client is finished; Err says why
)

func (s State) String() string {
	switch s {
	case Connected:
		return "connected"
	case Reconnecting:
		return "reconnecting"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// StateChange is passed to Options.OnState.
type StateChange struct {
	State State
	ETID  uint32 // Connected: the client's ETID in the new session
	Err   error  // Reconnecting, Closed: why the connection ended
}

// settings are Options with defaults applied, fixed for a Client's life.
type settings struct {
	Options
	dialer Dialer
	log    *slog.Logger
}

func (o Options) settle() (settings, error) {
	s := settings{Options: o, dialer: o.Dialer, log: o.Logger}
	if s.UID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		s.UID = "smq-go-" + hex.EncodeToString(b[:])
	}
	switch {
	case len(s.UID) <= 5:
		return s, fmt.Errorf("client: uid %q is too short: the broker refuses uids of 5 bytes or fewer", s.UID)
	case len(s.UID) > 255:
		return s, fmt.Errorf("client: uid is %d bytes, at most 255", len(s.UID))
	case len(s.Credentials) > 255:
		return s, fmt.Errorf("client: credentials are %d bytes, at most 255", len(s.Credentials))
	}
	if s.dialer == nil {
		d, err := proxyclient.Parse(s.Proxy, proxyclient.Options{})
		if err != nil {
			return s, fmt.Errorf("client: %w", err)
		}
		s.dialer = d
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&s.ConnectTimeout, DefaultConnectTimeout)
	def(&s.WriteTimeout, DefaultWriteTimeout)
	def(&s.PingIdle, DefaultPingIdle)
	def(&s.PongTimeout, DefaultPongTimeout)
	def(&s.MinBackoff, DefaultMinBackoff)
	def(&s.MaxBackoff, DefaultMaxBackoff)
	if s.MaxBackoff < s.MinBackoff {
		s.MaxBackoff = s.MinBackoff
	}
	return s, nil
}

// tlsConfig returns the TLS configuration for a connection to host.
func (o *Options) tlsConfig(host string) *tls.Config {
	cfg := &tls.Config{}
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	}
	if o.RootCAs != nil {
		cfg.RootCAs = o.RootCAs
	}
	if o.Certificate != nil {
		cfg.Certificates = []tls.Certificate{*o.Certificate}
	}
	if o.InsecureSkipVerify {
		cfg.InsecureSkipVerify = true
	}
	if o.ServerName != "" {
		cfg.ServerName = o.ServerName
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	return cfg
}
