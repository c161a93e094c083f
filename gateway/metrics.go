package gateway

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/limits"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
	"github.com/smqgw/smqgw/tlsterm"
)

// Metrics are the gateway's Prometheus metrics, on a registry of their
// own (with the Go runtime and process collectors). One Metrics outlives
// configuration reloads: Build makes it, Rebuild and the gateway share it.
type Metrics struct {
	reg *prometheus.Registry

	sessionsOpen  *prometheus.GaugeVec   // listener, route, transport
	sessionsTotal *prometheus.CounterVec // listener, route, transport
	closed        *prometheus.CounterVec // listener, route, reason
	connacks      *prometheus.CounterVec // listener, route, code, decided_by
	handshakes    *prometheus.CounterVec // listener
	tlsFailures   *prometheus.CounterVec // listener, reason
	limits        *prometheus.CounterVec // listener, limit
	origins       *prometheus.CounterVec // listener, route
	denials       *prometheus.CounterVec // listener, route, op
	pending       *prometheus.GaugeVec   // listener
	limitValues   *prometheus.GaugeVec   // limit
	proxyProto    *prometheus.CounterVec // listener
	dialSeconds   *prometheus.HistogramVec
	dialFailures  *prometheus.CounterVec // upstream, url
	proxyFailures *prometheus.CounterVec // upstream, reason
	reloads       *prometheus.CounterVec // result
	reloadedAt    prometheus.Gauge

	// Messages and bytes by direction and type byte, resolved once: the
	// relay adds to them without a lookup or an allocation.
	msgs, bytes [2][256]prometheus.Counter

	certs atomic.Pointer[[]CertSet]
}

// Message directions, the index of Metrics.msgs.
const (
	fromClient = 0 // client to upstream
	toClient   = 1 // upstream to client
)

// CertSet is a set of certificates the gateway presents (a [certs] block,
// an upstream's client certificate), for the expiry metric and readiness.
type CertSet struct {
	Name  string // "certs web", "upstream cloud client certificate"
	Certs certs.Inventory
}

// NewMetrics makes the gateway's metrics on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := promFactory{m.reg}
	m.sessionsOpen = f.gauge("smqgw_sessions_open", "Sessions in progress.", "listener", "route", "transport")
	m.sessionsTotal = f.counter("smqgw_sessions_total", "Sessions started (bootstrap done).", "listener", "route", "transport")
	m.closed = f.counter("smqgw_sessions_closed_total", "Sessions ended, by close reason.", "listener", "route", "reason")
	m.connacks = f.counter("smqgw_connack_total", "Connack results sent to clients, by code and by who decided: the gateway (certificates, limits, unreachable upstream) or the upstream broker.",
		"listener", "route", "code", "decided_by")
	m.handshakes = f.counter("smqgw_tls_handshakes_total", "TLS handshakes completed.", "listener")
	m.tlsFailures = f.counter("smqgw_tls_handshake_failures_total", "TLS handshakes failed, by reason.", "listener", "reason")
	m.limits = f.counter("smqgw_limit_refusals_total", "Sessions refused or ended by a limit.", "listener", "limit")
	m.origins = f.counter("smqgw_websocket_origin_refusals_total", "WebSocket upgrades refused (403) for their Origin.", "listener", "route")
	m.limitValues = f.gauge("smqgw_limit", "The limits in force (with their defaults), by name: max_sessions (per listener), max_sessions_per_ip, session_rate_per_ip, message_rate, message_rate_per_ip, max_pending (per listener), max_pending_per_ip, max_connections_per_ip; for alerts that compare a count with its limit.", "limit")
	m.pending = f.gauge("smqgw_connections_pending", "Connections admitted that are no session (yet): in the TLS handshake, or before, between or after HTTP requests that are no SMQ bootstrap (max_pending).", "listener")
	m.denials = f.counter("smqgw_access_denied_total", "Client messages denied by the route's topic permissions, by operation: subscribe, create, createsub, publish, observe, unobserve, unsubscribe.",
		"listener", "route", "op")
	m.proxyProto = f.counter("smqgw_proxy_protocol_refusals_total", "Connections refused for a PROXY protocol header from an untrusted sender.", "listener")
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smqgw_tls_handshakes_waiting",
		Help: "TLS handshakes whose ClientHello is in, waiting for one of the few slots handshakes compute in (2 per CPU): above zero for long, the CPUs are short of what the clients ask (a reconnect storm)."},
		func() float64 { return float64(tlsterm.HandshakesWaiting()) }))
	m.dialSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "smqgw_upstream_dial_duration_seconds",
		Help:    "Time to reach an upstream URL: connect, proxy, TLS and bootstrap, failed attempts included.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"upstream", "url"})
	m.reg.MustRegister(m.dialSeconds)
	m.dialFailures = f.counter("smqgw_upstream_dial_failures_total", "Failed attempts to reach an upstream URL.", "upstream", "url")
	m.proxyFailures = f.counter("smqgw_proxy_dial_failures_total", "Upstream dials that failed at the proxy (unreachable, refused, authentication).", "upstream", "reason")
	m.reloads = f.counter("smqgw_config_reloads_total", "Configuration reloads, by result.", "result")
	m.reloadedAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "smqgw_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully (start or reload), Unix time."})
	m.reg.MustRegister(m.reloadedAt)
	m.reloadedAt.SetToCurrentTime()
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}

	msgs := f.counter("smqgw_messages_total", "SMQ messages relayed, by direction and message type.", "direction", "type")
	bytes := f.counter("smqgw_message_bytes_total", "Bytes of SMQ messages relayed (type byte and body, no framing), by direction and message type.", "direction", "type")
	for d, dir := range []string{"client_to_upstream", "upstream_to_client"} {
		for t := range 256 {
			name := "other"
			if smq.Type(t).Valid() {
				name = smq.Type(t).String()
			}
			m.msgs[d][t] = msgs.WithLabelValues(dir, name)
			m.bytes[d][t] = bytes.WithLabelValues(dir, name)
		}
	}
	m.reg.MustRegister(certCollector{m}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics are registered, for an HTTP handler or
// more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// promFactory makes and registers metric vectors.
type promFactory struct{ reg *prometheus.Registry }

func (f promFactory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f promFactory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

// limitNames are the limits smqgw_limit_refusals_total counts.
var limitNames = []string{"max_sessions", "max_sessions_per_ip", "session_rate_per_ip", "message_rate",
	"max_message_size", "handshake_timeout", "request_timeout", "connect_timeout", "idle_timeout",
	"ws_ping_interval", "write_timeout", "message_rate_per_ip", "max_pending", "max_pending_per_ip", "max_connections_per_ip", "descriptors"}

// setLimits records the limits in force.
func (m *Metrics) setLimits(l limits.Limits) {
	l = l.WithDefaults()
	for name, v := range map[string]int{"max_sessions": l.MaxSessions, "max_sessions_per_ip": l.MaxSessionsPerIP,
		"session_rate_per_ip": l.SessionRatePerIP, "message_rate": l.MessageRate, "message_rate_per_ip": l.MessageRatePerIP,
		"max_pending": l.MaxPending, "max_pending_per_ip": l.MaxPendingPerIP, "max_connections_per_ip": l.MaxConnectionsPerIP} {
		m.limitValues.WithLabelValues(name).Set(float64(v))
	}
}

// declare creates a listener's label sets at zero, so that every series
// exists (and rate() works) before its first event.
func (m *Metrics) declare(l Listener) {
	if l.Handler != nil {
		return
	}
	for _, limit := range limitNames {
		m.limits.WithLabelValues(l.Name, limit)
	}
	m.pending.WithLabelValues(l.Name)
	if l.Certs != nil {
		m.handshakes.WithLabelValues(l.Name)
	}
	if len(l.ProxyProtocolFrom) > 0 {
		m.proxyProto.WithLabelValues(l.Name)
	}
	for _, r := range l.Routes {
		for _, tr := range []string{"websocket", "raw"} {
			m.sessionsOpen.WithLabelValues(l.Name, r.Path, tr)
			m.sessionsTotal.WithLabelValues(l.Name, r.Path, tr)
		}
		if r.Access != nil {
			for _, op := range deniedOps {
				m.denials.WithLabelValues(l.Name, r.Path, op)
			}
		}
	}
}

// message counts one relayed message.
func (m *Metrics) message(dir int, msg []byte) {
	m.msgs[dir][msg[0]].Inc()
	m.bytes[dir][msg[0]].Add(float64(len(msg)))
}

// tally counts one copier's messages between flushes of its output, so
// that the shared counters (the session's totals, the metrics) take one
// add per batch and message type instead of one per message. It lives on
// the copier's stack.
type tally struct {
	n, bytes [32]uint32 // by type byte; 31 holds every type from 31 up
	seen     uint32     // bit i: n[i] is not zero
	total    uint32
}

// tallyMax is the most messages a tally holds before it must be flushed.
const tallyMax = 1024

// add counts msg and reports whether the tally is full.
func (t *tally) add(msg []byte) bool {
	i := min(msg[0], 31)
	t.n[i]++
	t.bytes[i] += uint32(len(msg))
	t.seen |= 1 << i
	t.total++
	return t.total >= tallyMax
}

// flush adds the counts to the metrics of direction dir and to the
// session's totals, and clears them.
func (t *tally) flush(m *Metrics, dir int, msgs, bytes *atomic.Uint64) {
	var nm, nb uint64
	for t.seen != 0 {
		i := bits.TrailingZeros32(t.seen)
		t.seen &^= 1 << i
		m.msgs[dir][i].Add(float64(t.n[i]))
		m.bytes[dir][i].Add(float64(t.bytes[i]))
		nm += uint64(t.n[i])
		nb += uint64(t.bytes[i])
		t.n[i], t.bytes[i] = 0, 0
	}
	t.total = 0
	if nm > 0 {
		msgs.Add(nm)
		bytes.Add(nb)
	}
}

// connack counts a Connack sent to a client.
func (m *Metrics) connack(listener, route string, code smq.ConnackCode, by string) {
	m.connacks.WithLabelValues(listener, route, fmt.Sprintf("0x%02x", uint8(code)), by).Inc()
}

// limit counts a refusal by a limit.
func (m *Metrics) limit(listener, limit string) { m.limits.WithLabelValues(listener, limit).Inc() }

// UpstreamAttempt returns the function that records each attempt on a URL
// of the named upstream (upstream.Config.OnAttempt): how long it took,
// and a failure by what failed.
func (m *Metrics) UpstreamAttempt(upstream string) func(url string, took time.Duration, err error) {
	return func(url string, took time.Duration, err error) { m.dialed(upstream, url, took, err) }
}

func (m *Metrics) dialed(upstream, url string, took time.Duration, err error) {
	m.dialSeconds.WithLabelValues(upstream, url).Observe(took.Seconds())
	if err != nil {
		m.dialFailures.WithLabelValues(upstream, url).Inc()
		var e *smqdial.Error
		if errors.As(err, &e) && (e.Kind == smqdial.Proxy || e.Kind == smqdial.ProxyRefused) {
			reason := "unreachable"
			if e.Kind == smqdial.ProxyRefused {
				reason = "refused"
			}
			m.proxyFailures.WithLabelValues(upstream, reason).Inc()
		}
	}
}

// Reloaded counts a configuration reload.
func (m *Metrics) Reloaded(err error) {
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.reloadedAt.SetToCurrentTime()
}

// setCerts replaces the certificate sets the expiry metric reports.
func (m *Metrics) setCerts(sets []CertSet) { m.certs.Store(&sets) }

// certCollector reports each certificate's expiry when scraped.
type certCollector struct{ m *Metrics }

var certExpiryDesc = prometheus.NewDesc("smqgw_certificate_expiry_timestamp_seconds",
	"When a certificate the gateway presents expires (notAfter), Unix time.",
	[]string{"set", "subject", "serial"}, nil)

func (certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	sets := c.m.certs.Load()
	if sets == nil {
		return
	}
	seen := map[string]bool{}
	for _, s := range *sets {
		for _, leaf := range s.Certs.Leaves() {
			serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
			if key := s.Name + "\x00" + serial; !seen[key] {
				seen[key] = true
				ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue,
					float64(leaf.NotAfter.Unix()), s.Name, certName(leaf), serial)
			}
		}
	}
}

// certName names a certificate: its CN, else its first DNS or IP name.
func certName(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	}
	return c.Subject.String()
}
