package tlsterm

import (
	"errors"
	"fmt"
	"strings"
)

// A Selector picks verified identities with the matchers of the
// allow-lists (PolicyConfig's AllowCN, AllowOU, AllowDNS and AllowURI, in
// the same glob syntax): each non-empty list must match, the CN by its
// value, the others by any one of the certificate's values (DNS names
// case-insensitively). Topic permissions use it to say whom a rule is for.
type Selector struct {
	cn, ou, dns, uri globs
}

// SelectorError is a bad pattern of a Selector: the list it is in ("cn",
// "ou", "dns" or "uri") and its index there.
type SelectorError struct {
	List  string
	Index int
	Err   error
}

func (e *SelectorError) Error() string {
	return fmt.Sprintf("invalid %s pattern #%d: %v", e.List, e.Index+1, e.Err)
}

func (e *SelectorError) Unwrap() error { return e.Err }

// NewSelector compiles the four lists. The error joins one *SelectorError
// per bad pattern.
func NewSelector(cn, ou, dns, uri []string) (Selector, error) {
	var errs []error
	compile := func(list string, patterns []string, fold bool) globs {
		var gs globs
		for i, pat := range patterns {
			if fold {
				pat = strings.ToLower(pat)
			}
			g, err := compileGlob(pat)
			if err != nil {
				errs = append(errs, &SelectorError{List: list, Index: i, Err: err})
				continue
			}
			gs = append(gs, g)
		}
		return gs
	}
	s := Selector{
		cn:  compile("cn", cn, false),
		ou:  compile("ou", ou, false),
		dns: compile("dns", dns, true),
		uri: compile("uri", uri, false),
	}
	return s, errors.Join(errs...)
}

// Empty reports whether the selector has no pattern at all.
func (s Selector) Empty() bool {
	return len(s.cn)+len(s.ou)+len(s.dns)+len(s.uri) == 0
}

// Match reports whether id (a verified identity, not nil) passes every
// non-empty list.
func (s Selector) Match(id *Identity) bool {
	switch {
	case len(s.cn) > 0 && !s.cn.any(id.CN),
		len(s.ou) > 0 && !anyOf(s.ou, id.OU, false),
		len(s.dns) > 0 && !anyOf(s.dns, id.DNSNames, true),
		len(s.uri) > 0 && !anyOf(s.uri, id.URIs, false):
		return false
	}
	return true
}
