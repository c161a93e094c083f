package dns01

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// secretLine is the secret of a BIND key file: secret "BASE64";
var secretLine = regexp.MustCompile(`(?m)^\s*secret\s+"([^"]*)"\s*;`)

// ParseSecret returns the TSIG secret that data holds: the base64 alone,
// or a BIND key file as tsig-keygen writes it (key "NAME" { algorithm
// ...; secret "BASE64"; };). The error never quotes data.
func ParseSecret(data []byte) (string, error) {
	s := strings.TrimSpace(string(data))
	if m := secretLine.FindStringSubmatch(s); m != nil {
		s = m[1]
	} else if strings.Contains(s, "{") {
		return "", errors.New(`no secret "..."; line in the key file`)
	}
	if err := CheckSecret(s); err != nil {
		return "", err
	}
	return s, nil
}

// CheckSecret reports whether s is a usable TSIG secret: non-empty
// standard base64. The error never quotes s.
func CheckSecret(s string) error {
	if s == "" {
		return errors.New("empty secret")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return fmt.Errorf("not valid base64 (at byte %d of %d): want the secret as tsig-keygen prints it", int64(ce), len(s))
		}
		return errors.New("not valid base64: want the secret as tsig-keygen prints it")
	}
	if len(b) == 0 {
		return errors.New("empty secret")
	}
	return nil
}

// ReadSecret reads the TSIG secret from the file name (see ParseSecret).
func ReadSecret(name string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	s, err := ParseSecret(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}
