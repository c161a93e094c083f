package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/tlsterm"
)

// Load reads, decodes, defaults and validates the TOML file at path.
// Relative paths in it are resolved against the file's directory. A file
// that cannot be read gives the os error, wrapped; a file with problems
// gives an *Error listing every one.
func Load(path string) (*Config, error) {
	return load(path, false)
}

// LoadNoFiles is Load without opening the files the configuration names
// (certificates, keys, CAs, CRLs, session ticket keys): it checks the
// syntax and the semantics only, as a configuration repository's CI can
// where those files do not exist. Its Config is for checking, not serving.
func LoadNoFiles(path string) (*Config, error) {
	return load(path, true)
}

func load(path string, noFiles bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(data, path, noFiles)
}

// Parse decodes, defaults and validates a TOML configuration. name is the
// file name used in problems; relative paths in the configuration are
// resolved against its directory (the working directory when name has
// none). The error, if any, is an *Error listing every problem.
func Parse(data []byte, name string) (*Config, error) {
	return parse(data, name, false)
}

func parse(data []byte, name string, noFiles bool) (*Config, error) {
	d := &decoder{file: name, noFiles: noFiles, bad: make(map[string]bool)}
	if dir, err := filepath.Abs(filepath.Dir(name)); err == nil {
		d.dir = dir
	}
	var root map[string]toml.Primitive
	md, err := toml.Decode(string(data), &root)
	if err != nil {
		p := Problem{File: name, Msg: "invalid TOML: " + err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line, p.Col, p.Key = pe.Position.Line, pe.Position.Col, pe.LastKey
			p.Msg = "invalid TOML: " + pe.Message
		}
		return nil, &Error{Problems: []Problem{p}}
	}
	d.md, d.pos = md, scanPositions(string(data))
	c := new(Config)
	d.table("", root, reflect.ValueOf(c).Elem())
	for name, u := range c.Upstreams {
		u.Name = name
	}
	for name, ct := range c.Certs {
		ct.Name = name
	}
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
//
// It decodes the file into the tagged structs of Config with the toml
// package, one key at a time: toml.Decode stops at the first bad value,
// and every problem is to be reported at once. The keys of each table are
// matched to the toml tags exactly (toml.Decode would also take "Name"
// for "name"); a key without a field is reported as unknown.
type decoder struct {
	file     string
	dir      string // relative paths are resolved against it
	noFiles  bool   // do not open the files named (LoadNoFiles)
	md       toml.MetaData
	pos      map[string]pos // where each key is written
	bad      map[string]bool
	problems []Problem
}

// table decodes the keys of a TOML table into v, a struct, by the toml
// tags of its fields, and reports the keys that no field has.
func (d *decoder) table(key string, t map[string]toml.Primitive, v reflect.Value) {
	var known []string
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name := f.Tag.Get("toml")
		if name == "" || name == "-" {
			continue
		}
		known = append(known, name)
		if p, ok := t[name]; ok {
			d.value(join(key, name), p, v.Field(i))
			if f.Tag.Get("config") == "path" {
				d.resolve(join(key, name), v.Field(i))
			}
		}
	}
	where := ""
	if key != "" {
		where = " in " + tableName(key)
	}
	for _, k := range sortedKeys(t) {
		if !slices.Contains(known, k) {
			d.add(join(key, k), fmt.Sprintf("unknown key %q%s%s", k, where, suggest(k, known)))
		}
	}
}

// value decodes p, the value at key, into v. Its TOML type is checked
// first, so that a mismatch is reported in the file's terms.
func (d *decoder) value(key string, p toml.Primitive, v reflect.Value) {
	var raw any
	d.decode(p, &raw) // cannot fail
	t := v.Type()
	switch k := t.Kind(); {
	case k == reflect.Pointer: // the blocks of a map
		v.Set(reflect.New(t.Elem()))
		d.value(key, p, v.Elem())
	case isScalar(t):
		d.scalar(key, p, raw, v)
	case k == reflect.Slice: // an array, or [[table]]
		_, isArray := raw.([]any)
		_, isTables := raw.([]map[string]any)
		switch {
		case isScalar(t.Elem()) && !isArray:
			d.typeErr(key, "an array of strings", raw)
			return
		case !isArray && !isTables:
			d.typeErr(key, "an array of tables "+tableName(key), raw)
			return
		}
		var elems []toml.Primitive
		d.decode(p, &elems)
		v.Set(reflect.MakeSlice(t, len(elems), len(elems)))
		for i, e := range elems {
			d.value(join(key, strconv.Itoa(i)), e, v.Index(i)) // a bad element stays zero
		}
	case k == reflect.Struct || k == reflect.Map:
		if _, ok := raw.(map[string]any); !ok {
			d.typeErr(key, "a table", raw)
			return
		}
		var m map[string]toml.Primitive
		d.decode(p, &m)
		if k == reflect.Struct { // [table]
			d.table(key, m, v)
			return
		}
		v.Set(reflect.MakeMapWithSize(t, len(m))) // [table.NAME], in name order
		for _, name := range sortedKeys(m) {
			nkey, e := join(key, name), reflect.New(t.Elem()).Elem()
			d.value(nkey, m[name], e)
			if !d.bad[nkey] {
				v.SetMapIndex(reflect.ValueOf(name), e)
			}
		}
	default:
		panic("config: no decoding for " + t.String())
	}
}

// isScalar reports whether a value of type t is one TOML string, integer
// or boolean.
func isScalar(t reflect.Type) bool {
	switch t {
	case reflect.TypeFor[netip.Prefix](), reflect.TypeFor[[]byte]():
		return true
	}
	k := t.Kind()
	return k == reflect.String || k == reflect.Bool || k >= reflect.Int && k <= reflect.Int64
}

// choices are the values of the enumerated types, as messages list them;
// the type's UnmarshalText decodes them. "" is the zero value, as if the
// key were left out.
var choices = map[reflect.Type][]string{
	reflect.TypeFor[slog.Level]():      {"debug", "info", "warn", "error"},
	reflect.TypeFor[tlsterm.Mode]():    {"off", "optional", "require"},
	reflect.TypeFor[access.OneToOne](): {"none", "reply", "any"},
}

// scalar decodes raw, the value at key that p holds, into v. Every
// integer in the file is from 1 to MaxInt32; every other value but a
// boolean is a string, parsed by v's type.
func (d *decoder) scalar(key string, p toml.Primitive, raw any, v reflect.Value) {
	switch ptr := v.Addr().Interface().(type) {
	case *bool:
		if _, ok := raw.(bool); !ok {
			d.typeErr(key, "a boolean (true or false)", raw)
			return
		}
		d.decode(p, ptr)
	case *int:
		n, ok := raw.(int64)
		if !ok {
			d.typeErr(key, "an integer", raw)
			return
		}
		if n <= 0 || n > math.MaxInt32 {
			d.decodeErr(key, "must be between 1 and %d, got %d", math.MaxInt32, n)
			return
		}
		d.decode(p, ptr)
	default:
		s, ok := raw.(string)
		if !ok {
			want := "a string"
			if _, ok := ptr.(*time.Duration); ok {
				want = `a duration string like "10s"` // toml would take an integer as nanoseconds
			}
			d.typeErr(key, want, raw)
			return
		}
		if err := d.text(s, p, ptr); err != nil {
			d.decodeErr(key, "%v", err)
		}
	}
}

// text decodes s, the string p holds, into ptr, or says what is wrong
// with it.
func (d *decoder) text(s string, p toml.Primitive, ptr any) error {
	switch ptr := ptr.(type) {
	case *time.Duration:
		if d.decode(p, ptr) != nil {
			return fmt.Errorf(`invalid duration %q (want a number and a unit: "500ms", "10s", "30m", "1h")`, s)
		}
		if *ptr <= 0 {
			return fmt.Errorf("must be greater than 0, got %q", s)
		}
	case *netip.Prefix:
		pf, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf(`invalid address %q (want an IP address or a CIDR like "10.0.0.0/8")`, s)
		}
		*ptr = pf
	case *[]byte:
		b, err := decodeEABKey(s)
		if err != nil {
			return err
		}
		*ptr = b
	default:
		c, enum := choices[reflect.TypeOf(ptr).Elem()]
		switch {
		case enum && s == "":
			return nil // the zero value, which is the default
		case enum && !slices.Contains(c, s):
			return fmt.Errorf("invalid value %q (want %s)", s, orList(c...))
		}
		return d.decode(p, ptr)
	}
	return nil
}

// decode decodes p into v with the toml package.
func (d *decoder) decode(p toml.Primitive, v any) error { return d.md.PrimitiveDecode(p, v) }

// resolve makes the paths in v, a string or a []string, the value at key,
// absolute, after expanding $CREDENTIALS_DIRECTORY.
func (d *decoder) resolve(key string, v reflect.Value) {
	switch p := v.Addr().Interface().(type) {
	case *string:
		*p = d.abs(d.credentials(key, *p))
	case *[]string:
		for i := range *p {
			(*p)[i] = d.abs(d.credentials(key, (*p)[i]))
		}
	}
}

// credentials expands a leading $CREDENTIALS_DIRECTORY or
// ${CREDENTIALS_DIRECTORY} in the path p: the directory where systemd puts
// the files of the unit's LoadCredential= lines, readable by smqgw even
// under DynamicUser. It is a problem when the variable is not set (smqgw
// run outside its unit, or a unit without LoadCredential=).
func (d *decoder) credentials(key, p string) string {
	const name = "CREDENTIALS_DIRECTORY"
	rest, ok := strings.CutPrefix(p, "${"+name+"}")
	if !ok {
		rest, ok = strings.CutPrefix(p, "$"+name)
	}
	if !ok || (rest != "" && rest[0] != '/') {
		return p
	}
	dir := os.Getenv(name)
	if !filepath.IsAbs(dir) {
		d.decodeErr(key, "$%s is not set: systemd sets it for a unit with LoadCredential= (elsewhere, set it to the directory holding the files)", name)
		return p
	}
	return filepath.Join(dir, rest)
}

// parsePrefix parses an IP address (as a single-address prefix) or a
// CIDR, masked.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	return p.Masked(), nil
}

// decodeEABKey decodes an External Account Binding HMAC key as CAs hand it
// out: base64url, with or without padding (standard base64 is accepted
// too). "" is no key.
func decodeEABKey(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) > 0 {
			return b, nil
		}
	}
	return nil, errors.New("invalid key: want the base64url HMAC key the CA gave")
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
	if all := strings.Split(path, "."); parts[0] == "listener" || isIndex(all[len(all)-1]) {
		return "[[" + strings.Join(parts, ".") + "]]" // an array of tables
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
		return fmt.Sprintf("string %q", proxyclient.Redact(v))
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
