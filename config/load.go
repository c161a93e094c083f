package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Load reads, decodes, defaults and validates the TOML file at path.
// Relative paths in it are resolved against the file's directory. A file
// that cannot be read gives the os error, wrapped; a file with problems
// gives an *Error listing every one.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes, defaults and validates a TOML configuration. name is the
// file name used in problems; relative paths in the configuration are
// resolved against its directory (the working directory when name has
// none). The error, if any, is an *Error listing every problem.
func Parse(data []byte, name string) (*Config, error) {
	d := &decoder{file: name, bad: make(map[string]bool)}
	if dir, err := filepath.Abs(filepath.Dir(name)); err == nil {
		d.dir = dir
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		p := Problem{File: name, Msg: "invalid TOML: " + err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line, p.Col, p.Key = pe.Position.Line, pe.Position.Col, pe.LastKey
			p.Msg = "invalid TOML: " + pe.Message
		}
		return nil, &Error{Problems: []Problem{p}}
	}
	d.pos = scanPositions(string(data))
	c := d.decode(raw)
	d.limits(&c.Limits)
	c.setDefaults()
	d.validate(c)
	if len(d.problems) > 0 {
		sortProblems(d.problems)
		return nil, &Error{Problems: d.problems}
	}
	return c, nil
}

// decoder collects the problems of one configuration.
type decoder struct {
	file     string
	dir      string         // relative paths are resolved against it
	pos      map[string]pos // where each key is written
	bad      map[string]bool
	problems []Problem
}

// at returns the position of key, or else of its closest enclosing table.
func (d *decoder) at(key string) pos {
	for {
		if p, ok := d.pos[key]; ok {
			return p
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			return pos{}
		}
		key = key[:i]
	}
}

// add records a problem of key, unless key or a table above it already
// has one: a value that failed to decode is not judged again.
func (d *decoder) add(key, msg string) {
	for k := key; k != ""; {
		if d.bad[k] {
			return
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	p := d.at(key)
	d.problems = append(d.problems, Problem{File: d.file, Line: p.line, Col: p.col, Key: key, Msg: msg})
}

// keyf records a problem of key's value as "KEY in [TABLE]: detail".
func (d *decoder) keyf(key, format string, args ...any) {
	d.add(key, subject(key)+": "+fmt.Sprintf(format, args...))
}

// decodeErr records a problem that makes key's value unusable.
func (d *decoder) decodeErr(key, format string, args ...any) {
	d.keyf(key, format, args...)
	d.bad[key] = true
}

func (d *decoder) typeErr(key, want string, v any) {
	d.decodeErr(key, "want %s, got %s", want, describeValue(v))
}

// abs resolves a file path against the configuration's directory.
func (d *decoder) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(d.dir, p)
}

// subject names a key for a message: "path in [[listener.route]]",
// "urls in [upstream.lan]", "state_dir".
func subject(key string) string {
	parts := strings.Split(key, ".")
	for len(parts) > 1 && isIndex(parts[len(parts)-1]) {
		parts = parts[:len(parts)-1] // an array element: name the array
	}
	name, where := parts[len(parts)-1], tableName(strings.Join(parts[:len(parts)-1], "."))
	if where == "" {
		return name
	}
	return name + " in " + where
}

// tableName formats a table path for messages: "listener.0.route.1" is
// "[[listener.route]]", "upstream.lan" is "[upstream.lan]", the root "".
func tableName(path string) string {
	if path == "" {
		return ""
	}
	var parts []string
	for _, p := range strings.Split(path, ".") {
		if !isIndex(p) {
			parts = append(parts, p)
		}
	}
	if parts[0] == "listener" {
		return "[[" + strings.Join(parts, ".") + "]]"
	}
	return "[" + strings.Join(parts, ".") + "]"
}

func isIndex(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

func describeValue(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "a date-time"
	}
}

// table is one TOML table being decoded. Every key asked for is known;
// finish reports the others.
type table struct {
	d     *decoder
	path  string
	m     map[string]any
	known []string
}

func (t *table) key(k string) string { return join(t.path, k) }

func (t *table) get(k string) (any, bool) {
	t.known = append(t.known, k)
	v, ok := t.m[k]
	return v, ok
}

// finish reports the keys nobody asked for.
func (t *table) finish() {
	var unknown []string
	for k := range t.m {
		if !slices.Contains(t.known, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	where := ""
	if t.path != "" {
		where = " in " + tableName(t.path)
	}
	for _, k := range unknown {
		t.d.add(t.key(k), fmt.Sprintf("unknown key %q%s%s", k, where, suggest(k, t.known)))
	}
}

// value returns the value at k as a T. It reports false when k is not set,
// and reports a type error, naming what was wanted, when it is not a T.
func value[T any](t *table, k, want string) (T, bool) {
	var zero T
	v, ok := t.get(k)
	if !ok {
		return zero, false
	}
	x, ok := v.(T)
	if !ok {
		t.d.typeErr(t.key(k), want, v)
		return zero, false
	}
	return x, true
}

func (t *table) str(k string, dst *string) {
	if s, ok := value[string](t, k, "a string"); ok {
		*dst = s
	}
}

// strs decodes an array of strings. A bad element is reported and left
// "", so that indices still match the file.
func (t *table) strs(k string, dst *[]string) {
	a, ok := value[[]any](t, k, "an array of strings")
	if !ok {
		return
	}
	out := make([]string, len(a))
	for i, e := range a {
		if s, ok := e.(string); ok {
			out[i] = s
		} else {
			t.d.typeErr(join(t.key(k), strconv.Itoa(i)), "a string", e)
		}
	}
	*dst = out
}

func (t *table) boolean(k string, dst *bool) {
	if b, ok := value[bool](t, k, "a boolean (true or false)"); ok {
		*dst = b
	}
}

func (t *table) positive(k string, dst *int) {
	n, ok := value[int64](t, k, "an integer")
	if !ok {
		return
	}
	if n <= 0 || n > math.MaxInt32 {
		t.d.decodeErr(t.key(k), "must be between 1 and %d, got %d", math.MaxInt32, n)
		return
	}
	*dst = int(n)
}

// duration decodes a time.ParseDuration string that must be greater than
// zero.
func (t *table) duration(k string, dst *time.Duration) {
	s, ok := value[string](t, k, `a duration string like "10s"`)
	if !ok {
		return
	}
	dur, err := time.ParseDuration(s)
	switch {
	case err != nil:
		t.d.decodeErr(t.key(k), `invalid duration %q (want a number and a unit: "500ms", "10s", "30m", "1h")`, s)
	case dur <= 0:
		t.d.decodeErr(t.key(k), "must be greater than 0, got %q", s)
	default:
		*dst = dur
	}
}

// sub returns the table at k; an empty one when k is not set.
func (t *table) sub(k string) *table {
	s := &table{d: t.d, path: t.key(k)}
	v, ok := t.get(k)
	if !ok {
		return s
	}
	if m, ok := v.(map[string]any); ok {
		s.m = m
	} else {
		t.d.typeErr(s.path, "a table", v)
	}
	return s
}

// tables returns the array of tables at k, one per element; an element
// that is not a table is reported and given as an empty table.
func (t *table) tables(k string) []*table {
	v, ok := t.get(k)
	if !ok {
		return nil
	}
	var elems []any
	switch v := v.(type) {
	case []map[string]any:
		for _, m := range v {
			elems = append(elems, m)
		}
	case []any:
		elems = v
	default:
		t.d.typeErr(t.key(k), "an array of tables "+tableName(t.key(k)), v)
		return nil
	}
	out := make([]*table, len(elems))
	for i, e := range elems {
		out[i] = &table{d: t.d, path: join(t.key(k), strconv.Itoa(i))}
		if m, ok := e.(map[string]any); ok {
			out[i].m = m
		} else {
			t.d.typeErr(out[i].path, "a table", e)
		}
	}
	return out
}

// named calls f for each table of a table of named tables
// ([upstream.NAME]), in name order.
func (t *table) named(k string, f func(name string, nt *table)) {
	s := t.sub(k)
	names := make([]string, 0, len(s.m))
	for name := range s.m {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		nt := &table{d: t.d, path: join(s.path, name)}
		if m, ok := s.m[name].(map[string]any); ok {
			nt.m = m
		} else {
			t.d.typeErr(nt.path, "a table", s.m[name])
			continue
		}
		f(name, nt)
		nt.finish()
	}
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// decode turns the decoded TOML into a Config, reporting wrong types,
// bad durations and unknown keys; validate judges the rest.
func (d *decoder) decode(raw map[string]any) *Config {
	c := &Config{Upstreams: map[string]*Upstream{}, Certs: map[string]*Certs{}}
	root := &table{d: d, m: raw}

	root.str("state_dir", &c.StateDir)
	root.duration("watch_interval", &c.WatchInterval)
	if c.StateDir != "" {
		c.StateDir = d.abs(c.StateDir)
	} else {
		c.StateDir = defaultStateDir()
	}

	lg := root.sub("log")
	level := ""
	lg.str("level", &level)
	if l, ok := logLevels[level]; ok {
		c.Log.Level = l
	} else if level != "" {
		d.decodeErr(lg.key("level"), "invalid value %q (want %s)", level, orList("debug", "info", "warn", "error"))
	}
	lg.str("format", &c.Log.Format)
	lg.finish()

	lim, l := root.sub("limits"), &c.Limits
	lim.duration("handshake_timeout", &l.HandshakeTimeout)
	lim.duration("request_timeout", &l.RequestTimeout)
	lim.duration("connect_timeout", &l.ConnectTimeout)
	lim.duration("idle_timeout", &l.IdleTimeout)
	lim.duration("ws_ping_interval", &l.WSPingInterval)
	lim.positive("max_sessions", &l.MaxSessions)
	lim.positive("max_message_size", &l.MaxMessageSize)
	lim.duration("shutdown_grace", &l.ShutdownGrace)
	lim.duration("write_timeout", &l.WriteTimeout)
	lim.positive("max_sessions_per_ip", &l.MaxSessionsPerIP)
	lim.positive("session_rate_per_ip", &l.SessionRatePerIP)
	lim.positive("message_rate", &l.MessageRate)
	lim.finish()

	adm := root.sub("admin")
	adm.str("address", &c.Admin.Address)
	adm.finish()

	for _, lt := range root.tables("listener") {
		var ln Listener
		lt.str("name", &ln.Name)
		lt.str("address", &ln.Address)
		lt.str("tls", &ln.TLS)
		lt.strs("proxy_protocol_from", &ln.ProxyProtocolFrom)
		for _, rt := range lt.tables("route") {
			ln.Routes = append(ln.Routes, d.decodeRoute(rt))
		}
		lt.finish()
		c.Listeners = append(c.Listeners, ln)
	}

	root.named("upstream", func(name string, ut *table) {
		u := &Upstream{Name: name}
		ut.strs("urls", &u.URLs)
		ut.duration("dial_timeout", &u.DialTimeout)
		ut.duration("backoff", &u.Backoff)
		ut.str("proxy", &u.Proxy)
		ut.str("ca_file", &u.CAFile)
		ut.str("cert_file", &u.CertFile)
		ut.str("key_file", &u.KeyFile)
		ut.str("server_name", &u.ServerName)
		u.CAFile, u.CertFile, u.KeyFile = d.abs(u.CAFile), d.abs(u.CertFile), d.abs(u.KeyFile)
		c.Upstreams[name] = u
	})

	root.named("certs", func(name string, ct *table) {
		cs := &Certs{Name: name}
		ct.str("cert_file", &cs.CertFile)
		ct.str("key_file", &cs.KeyFile)
		for _, pt := range ct.tables("pair") {
			var p CertPair
			pt.str("cert_file", &p.CertFile)
			pt.str("key_file", &p.KeyFile)
			pt.finish()
			p.CertFile, p.KeyFile = d.abs(p.CertFile), d.abs(p.KeyFile)
			cs.Pairs = append(cs.Pairs, p)
		}
		ct.strs("acme_domains", &cs.ACMEDomains)
		ct.str("acme_email", &cs.ACMEEmail)
		ct.str("acme_directory", &cs.ACMEDirectory)
		ct.str("acme_directory_ca", &cs.ACMEDirectoryCA)
		ct.str("acme_eab_kid", &cs.ACMEEABKeyID)
		ct.str("acme_eab_key", &cs.ACMEEABKey)
		ct.str("acme_http_address", &cs.ACMEHTTPAddress)
		ct.duration("acme_renew_before", &cs.ACMERenewBefore)
		ct.boolean("dev", &cs.Dev)
		ct.strs("hosts", &cs.Hosts)
		cs.CertFile, cs.KeyFile = d.abs(cs.CertFile), d.abs(cs.KeyFile)
		cs.ACMEDirectoryCA = d.abs(cs.ACMEDirectoryCA)
		c.Certs[name] = cs
	})

	root.finish()
	return c
}

func (d *decoder) decodeRoute(rt *table) Route {
	var r Route
	var auth string
	rt.str("path", &r.Path)
	rt.str("upstream", &r.Upstream)
	rt.str("client_auth", &auth)
	r.ClientAuth = ClientAuth(auth)
	rt.strs("client_ca", &r.ClientCA)
	for i, f := range r.ClientCA {
		r.ClientCA[i] = d.abs(f)
	}
	rt.strs("client_crl", &r.ClientCRL)
	for i, f := range r.ClientCRL {
		r.ClientCRL[i] = d.abs(f)
	}
	rt.strs("allow_cn", &r.AllowCN)
	rt.strs("allow_ou", &r.AllowOU)
	rt.strs("allow_dns", &r.AllowDNS)
	rt.strs("allow_uri", &r.AllowURI)
	rt.strs("pins", &r.Pins)
	rt.strs("allowed_origins", &r.AllowedOrigins)
	rt.boolean("console", &r.Console)
	rt.finish()
	return r
}
