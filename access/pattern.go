package access

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The topic pattern language.
//
// SMQ topic names are free strings; by convention their levels are
// separated by '/' ("devices/device-7/commands"). A pattern is matched
// level by level, as in MQTT:
//
//   - a level "+" matches exactly one level, whatever it is (also an empty
//     one);
//   - a last level "#" matches every remaining level, and none: "devices/#"
//     matches "devices", "devices/a" and "devices/a/b"; "#" matches every
//     name;
//   - {cn}, {ou} and {dns} in a level (at most one per level) stand for
//     the client certificate's subject CN, its OUs and its DNS names:
//     "devices/{cn}/#". A certificate with several OUs (or DNS names) gets
//     the pattern once for each; one without the value gets none of it,
//     nor does a client without a certificate. The value is matched
//     literally ("+" in a CN is no wildcard), and a value containing '/'
//     (or a NUL byte) never matches anything;
//   - every other character matches itself, byte for byte.
//
// "+" and "#" are wildcards only as a whole level: "a+b" and "x/#y" are
// errors, so are braces other than the three substitutions, two
// substitutions in one level (ambiguous: "{ou}-{cn}"), a "#" before
// the last level, and a pattern that is not valid UTF-8. The empty pattern
// matches the empty name only.

// The substitutions of a pattern, by name.
const (
	varCN  = "cn"
	varOU  = "ou"
	varDNS = "dns"
)

// maxExpansions bounds the patterns one template yields for one identity
// (a certificate with many OUs or DNS names).
const maxExpansions = 64

// template is a compiled pattern before substitution.
type template struct {
	src    string
	levels []tlevel
	multi  bool // ends with "#"
	vars   bool // has a substitution
}

// tlevel is one level of a template: "+" (wild), or literal pieces and
// substitutions in order.
type tlevel struct {
	wild  bool
	parts []part
}

// part is a literal piece of a level, or a substitution (v != "").
type part struct {
	lit string
	v   string
}

// compileTemplate parses a pattern.
func compileTemplate(src string) (template, error) {
	if !utf8.ValidString(src) {
		return template{}, errors.New("pattern is not valid UTF-8")
	}
	if strings.IndexByte(src, 0) >= 0 {
		return template{}, errors.New("pattern contains a NUL byte")
	}
	t := template{src: src}
	levels := strings.Split(src, "/")
	for i, l := range levels {
		switch {
		case l == "#":
			if i != len(levels)-1 {
				return template{}, errors.New(`"#" must be the last level`)
			}
			t.multi = true
			continue
		case l == "+":
			t.levels = append(t.levels, tlevel{wild: true})
			continue
		case strings.ContainsAny(l, "+#"):
			return template{}, fmt.Errorf(`level %q: "+" and "#" are wildcards only as a whole level`, l)
		}
		lv, err := compileLevel(l)
		if err != nil {
			return template{}, err
		}
		for _, p := range lv.parts {
			if p.v != "" {
				t.vars = true
			}
		}
		t.levels = append(t.levels, lv)
	}
	return t, nil
}

// compileLevel parses the literal pieces and substitutions of a level.
func compileLevel(l string) (tlevel, error) {
	var lv tlevel
	for l != "" {
		open := strings.IndexAny(l, "{}")
		if open < 0 {
			lv.parts = append(lv.parts, part{lit: l})
			break
		}
		if l[open] == '}' {
			return tlevel{}, errors.New(`"}" without "{"`)
		}
		if open > 0 {
			lv.parts = append(lv.parts, part{lit: l[:open]})
		}
		end := strings.IndexByte(l[open:], '}')
		if end < 0 {
			return tlevel{}, errors.New(`"{" without "}"`)
		}
		name := l[open+1 : open+end]
		switch name {
		case varCN, varOU, varDNS:
		default:
			return tlevel{}, fmt.Errorf("unknown substitution {%s}: use {cn}, {ou} or {dns}", name)
		}
		for _, p := range lv.parts {
			if p.v != "" {
				// "{ou}-{cn}" is ambiguous: CN a-b, OU x and CN b, OU x-a
				// both give "x-a-b".
				return tlevel{}, fmt.Errorf("two substitutions in one level ({%s}, {%s}): put each in a level of its own", p.v, name)
			}
		}
		lv.parts = append(lv.parts, part{v: name})
		l = l[open+end+1:]
	}
	if len(lv.parts) == 0 {
		lv.parts = []part{{}} // an empty level
	}
	return lv, nil
}

// values are what the substitutions stand for, for one identity.
type values map[string][]string

// expand returns the patterns t stands for with vals: one for each
// combination of values (at most maxExpansions), none when a substitution
// has no usable value.
func (t template) expand(vals values) []pattern {
	out := []pattern{{multi: t.multi}}
	for _, lv := range t.levels {
		if lv.wild {
			for i := range out {
				out[i].levels = append(out[i].levels, level{wild: true})
			}
			continue
		}
		texts := []string{""}
		for _, p := range lv.parts {
			if p.v == "" {
				for i := range texts {
					texts[i] += p.lit
				}
				continue
			}
			var next []string
			for _, prefix := range texts {
				for _, v := range vals[p.v] {
					if v == "" || strings.ContainsAny(v, "/\x00") {
						continue
					}
					if len(next) < maxExpansions {
						next = append(next, prefix+v)
					}
				}
			}
			texts = next
		}
		var grown []pattern
		for _, o := range out {
			for _, text := range texts {
				if len(grown) == maxExpansions {
					break
				}
				levels := append(o.levels[:len(o.levels):len(o.levels)], level{lit: text})
				grown = append(grown, pattern{levels: levels, multi: o.multi})
			}
		}
		out = grown
	}
	return out
}

// pattern is a template with its substitutions made: levels of literals
// and "+".
type pattern struct {
	levels []level
	multi  bool
}

type level struct {
	wild bool
	lit  string
}

// match reports whether name matches p. It does not allocate.
func (p pattern) match(name string) bool {
	rest, more := name, true
	for _, l := range p.levels {
		if !more {
			return false // the name has fewer levels
		}
		var this string
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			this, rest = rest[:i], rest[i+1:]
		} else {
			this, rest, more = rest, "", false
		}
		if !l.wild && l.lit != this {
			return false
		}
	}
	return p.multi || !more
}

// patterns is a list of patterns; a name matches it if it matches one.
type patterns []pattern

func (ps patterns) match(name string) bool {
	for _, p := range ps {
		if p.match(name) {
			return true
		}
	}
	return false
}
