package config

import (
	"sort"
	"strconv"
	"strings"
)

// pos is a 1-based line and byte column.
type pos struct{ line, col int }

// scanPositions maps the keys and tables of src, a TOML document the toml
// package has already parsed without error, to where they are written.
// Keys are dotted paths with array indices, as in Problem.Key:
// "listener.0" is the first [[listener]] header, "listener.0.route.1.path"
// a key in its second route, "upstream.lan.urls.1" the second element of
// an array. The toml package does not give them: its MetaData keeps
// positions unexported, and has them for values rather than keys, for only
// the last element of an array of tables, and not for array elements. So
// this is a small scanner of its own; it is lenient, and a key it misses
// only loses its position.
func scanPositions(src string) map[string]pos {
	s := &posScanner{
		src:    src,
		lines:  []int{0},
		pos:    make(map[string]pos),
		arrays: make(map[string]int),
	}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			s.lines = append(s.lines, i+1)
		}
	}
	s.document()
	return s.pos
}

type posScanner struct {
	src    string
	i      int
	lines  []int          // byte offset of each line's start
	pos    map[string]pos // the result
	arrays map[string]int // array of tables (resolved path) → index of its last element
	depth  int            // nesting of the value being scanned
}

func (s *posScanner) record(key string, at int) {
	if _, ok := s.pos[key]; ok {
		return
	}
	line := sort.Search(len(s.lines), func(k int) bool { return s.lines[k] > at })
	s.pos[key] = pos{line, at - s.lines[line-1] + 1}
}

func (s *posScanner) peek() byte {
	if s.i < len(s.src) {
		return s.src[s.i]
	}
	return 0
}

func (s *posScanner) document() {
	table := ""
	for {
		s.skipSpace(true)
		if s.i >= len(s.src) {
			return
		}
		start := s.i
		if s.peek() == '[' {
			array := strings.HasPrefix(s.src[s.i:], "[[")
			s.i++
			if array {
				s.i++
			}
			table = s.header(s.keyParts(), array, start)
			s.skipLine()
			continue
		}
		parts := s.keyParts()
		if len(parts) == 0 {
			s.skipLine() // not a key: give up on this line
			continue
		}
		s.keyValue(table, parts, start)
	}
}

// header records a table header and returns the table's resolved path.
func (s *posScanner) header(parts []string, array bool, start int) string {
	if len(parts) > maxDepth {
		return strings.Join(parts, ".") // not a table of ours: don't bother
	}
	path := ""
	for k, p := range parts {
		path = join(path, p)
		if k == len(parts)-1 {
			break
		}
		if n, ok := s.arrays[path]; ok {
			path = join(path, strconv.Itoa(n))
		}
		s.record(path, start)
	}
	if array {
		n := 0
		if last, ok := s.arrays[path]; ok {
			n = last + 1
		}
		s.arrays[path] = n
		s.record(path, start)
		path = join(path, strconv.Itoa(n))
	}
	s.record(path, start)
	return path
}

// keyValue records a (dotted) key in table, then skips its value.
func (s *posScanner) keyValue(table string, parts []string, start int) {
	key := table
	if len(parts) > maxDepth {
		key = join(table, strings.Join(parts, "."))
	} else {
		for _, p := range parts {
			key = join(key, p)
			s.record(key, start)
		}
	}
	s.record(key, start)
	s.skipSpace(false)
	if s.peek() == '=' {
		s.i++
	}
	s.skipSpace(false)
	s.value(key)
}

// keyParts reads a bare, quoted or dotted key.
func (s *posScanner) keyParts() []string {
	var parts []string
	for {
		s.skipSpace(false)
		start := s.i
		switch s.peek() {
		case '"':
			s.skipBasic()
			k, err := strconv.Unquote(s.src[start:s.i])
			if err != nil {
				k = strings.Trim(s.src[start:s.i], `"`)
			}
			parts = append(parts, k)
		case '\'':
			s.i++
			for s.i < len(s.src) && s.src[s.i] != '\'' && s.src[s.i] != '\n' {
				s.i++
			}
			parts = append(parts, s.src[start+1:s.i])
			if s.peek() == '\'' {
				s.i++
			}
		default:
			for s.i < len(s.src) && !strings.ContainsRune(" \t\r\n=.[]{},#\"'", rune(s.src[s.i])) {
				s.i++
			}
			if s.i == start {
				return parts
			}
			parts = append(parts, s.src[start:s.i])
		}
		s.skipSpace(false)
		if s.peek() != '.' {
			return parts
		}
		s.i++
	}
}

// maxDepth is how deeply nested a value's parts are still recorded;
// deeper ones are skipped without recursion.
const maxDepth = 8

// value skips one value, recording the keys of inline tables and the
// elements of arrays under key.
func (s *posScanner) value(key string) {
	s.clamp()
	if s.depth >= maxDepth {
		s.skipDeep()
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	switch s.peek() {
	case '"', '\'':
		s.skipString()
	case '[':
		s.i++
		for n := 0; ; n++ {
			s.skipSpace(true)
			if s.i >= len(s.src) || s.peek() == ']' {
				break
			}
			start := s.i
			elem := join(key, strconv.Itoa(n))
			s.record(elem, start)
			s.value(elem)
			s.skipSpace(true)
			if s.peek() == ',' {
				s.i++
			} else if s.i == start {
				s.i++ // no progress: skip a byte rather than loop
			}
		}
		s.i = min(s.i+1, len(s.src))
	case '{':
		s.i++
		for {
			s.skipSpace(true)
			if s.i >= len(s.src) || s.peek() == '}' {
				break
			}
			start := s.i
			parts := s.keyParts()
			if len(parts) == 0 {
				s.i++
				continue
			}
			s.keyValue(key, parts, start)
			s.skipSpace(true)
			if s.peek() == ',' {
				s.i++
			}
		}
		s.i = min(s.i+1, len(s.src))
	default: // number, boolean, date-time (which may hold a space)
		for s.i < len(s.src) && !strings.ContainsRune(",]}#\r\n", rune(s.src[s.i])) {
			s.i++
		}
	}
}

// skipDeep skips a value without recording anything and without recursion.
func (s *posScanner) skipDeep() {
	level := 0
	for s.i < len(s.src) {
		switch c := s.src[s.i]; {
		case c == '"' || c == '\'':
			s.skipString()
			continue
		case c == '#':
			s.skipLine()
			continue
		case c == '[' || c == '{':
			level++
		case c == ']' || c == '}':
			if level == 0 {
				return // the end of the enclosing value
			}
			level--
			if level == 0 {
				s.i++
				return
			}
		case level == 0 && (c == ',' || c == '\n'):
			return
		}
		s.i++
	}
}

// skipString skips a string of any of the four kinds at s.i.
func (s *posScanner) skipString() {
	switch rest := s.src[s.i:]; {
	case strings.HasPrefix(rest, `"""`):
		s.skipMultiline(`"""`, true)
	case strings.HasPrefix(rest, `'''`):
		s.skipMultiline(`'''`, false)
	case strings.HasPrefix(rest, `"`):
		s.skipBasic()
	default:
		s.i++
		for s.i < len(s.src) && s.src[s.i] != '\'' && s.src[s.i] != '\n' {
			s.i++
		}
		if s.peek() == '\'' {
			s.i++
		}
	}
}

// skipBasic skips a "basic string" with its escapes.
func (s *posScanner) skipBasic() {
	defer s.clamp()
	s.i++
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			s.i++
			return
		case '\n':
			return
		}
		s.i++
	}
}

// skipMultiline skips a multi-line string opened by delim, and up to two
// more quotes that belong to its content ("""a""""" is `a""`).
func (s *posScanner) skipMultiline(delim string, escapes bool) {
	defer s.clamp()
	s.i += 3
	for s.i < len(s.src) {
		if escapes && s.src[s.i] == '\\' {
			s.i += 2
			continue
		}
		if strings.HasPrefix(s.src[s.i:], delim) {
			s.i += 3
			for k := 0; k < 2 && s.peek() == delim[0]; k++ {
				s.i++
			}
			return
		}
		s.i++
	}
}

// clamp keeps s.i within the input after a skip that may overshoot it.
func (s *posScanner) clamp() { s.i = min(s.i, len(s.src)) }

// skipSpace skips blanks and, with newlines, line ends and comments too.
func (s *posScanner) skipSpace(newlines bool) {
	s.clamp()
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case ' ', '\t':
		case '\r', '\n':
			if !newlines {
				return
			}
		case '#':
			if !newlines {
				return
			}
			s.skipLine()
			continue
		default:
			return
		}
		s.i++
	}
}

// skipLine moves past the next newline.
func (s *posScanner) skipLine() {
	if k := strings.IndexByte(s.src[s.i:], '\n'); k >= 0 {
		s.i += k + 1
	} else {
		s.i = len(s.src)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
