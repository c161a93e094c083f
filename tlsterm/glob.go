package tlsterm

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// A glob is a compiled allow-list pattern. The syntax is deliberately small:
//
//   - '*' matches any run of characters, including none and including '.',
//     '/' and ':' (so "*.example.com" matches "a.b.example.com", and
//     "spiffe://example.org/device/*" matches every path below device/);
//   - '\' makes the next character literal; it may escape only '*', '\',
//     '?', '[' and ']';
//   - '?', '[' and ']' must be escaped: they are reserved so that a pattern
//     written for path.Match fails loudly instead of silently matching
//     nothing;
//   - every other character matches itself, byte for byte (case-sensitive;
//     callers fold case where the name is case-insensitive, as for DNS).
//
// A pattern must be non-empty, valid UTF-8 text.
type glob struct {
	// parts are the literal pieces between stars: a pattern with n stars has
	// n+1 parts, possibly empty.
	parts []string
}

func compileGlob(pattern string) (glob, error) {
	if pattern == "" {
		return glob{}, errors.New("empty pattern")
	}
	if !utf8.ValidString(pattern) {
		return glob{}, errors.New("pattern is not valid UTF-8")
	}
	var (
		g   glob
		lit strings.Builder
	)
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			g.parts = append(g.parts, lit.String())
			lit.Reset()
		case '\\':
			if i+1 == len(pattern) {
				return glob{}, errors.New(`pattern ends in a lone \`)
			}
			i++
			switch e := pattern[i]; e {
			case '*', '\\', '?', '[', ']':
				lit.WriteByte(e)
			default:
				r, _ := utf8.DecodeRuneInString(pattern[i:])
				return glob{}, errors.New(`\` + string(r) + ` is not an escape: only \*, \\, \?, \[ and \] are`)
			}
		case '?', '[', ']':
			return glob{}, errors.New(`only * is a wildcard: write \` + string(c) + " for a literal " + string(c))
		default:
			lit.WriteByte(c)
		}
	}
	g.parts = append(g.parts, lit.String())
	return g, nil
}

// match reports whether s matches the whole pattern. Stars only, so a greedy
// leftmost search for each middle part is exact and linear in len(s).
func (g glob) match(s string) bool {
	n := len(g.parts)
	if n == 1 {
		return s == g.parts[0]
	}
	first, last := g.parts[0], g.parts[n-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, p := range g.parts[1 : n-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

// globs is an allow-list of patterns.
type globs []glob

// any reports whether s matches one of the patterns (never, for none).
func (gs globs) any(s string) bool {
	for _, g := range gs {
		if g.match(s) {
			return true
		}
	}
	return false
}
