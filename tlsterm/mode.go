package tlsterm

import (
	"fmt"
	"strconv"
)

// Mode says whether a route asks for client certificates. The zero value is
// Off.
type Mode int

const (
	// Off ignores client certificates: every client is accepted without an
	// identity, even one that presents a certificate.
	Off Mode = iota
	// Optional accepts clients without a certificate (no identity) and
	// checks a certificate that is presented: a bad one is refused.
	Optional
	// Require refuses clients without an accepted certificate.
	Require
)

var modeNames = [...]string{Off: "off", Optional: "optional", Require: "require"}

// ParseMode parses the client_auth setting: "off", "optional" or "require".
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return Off, fmt.Errorf("tlsterm: invalid client_auth %q: want off, optional or require", s)
}

// String returns the configuration name of m, or "Mode(N)" for an unknown
// value.
func (m Mode) String() string {
	if m.valid() {
		return modeNames[m]
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseMode.
func (m *Mode) UnmarshalText(text []byte) error {
	v, err := ParseMode(string(text))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalText implements encoding.TextMarshaler; it fails for an unknown
// value.
func (m Mode) MarshalText() ([]byte, error) {
	if !m.valid() {
		return nil, fmt.Errorf("tlsterm: invalid client_auth %s", m)
	}
	return []byte(modeNames[m]), nil
}

func (m Mode) valid() bool { return m >= 0 && int(m) < len(modeNames) }
