package certs

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
)

// LoadTicketKeys reads a TLS session ticket key file: one key per line,
// 32 random bytes as 64 hex digits (openssl rand -hex 32) or in base64;
// blank lines and lines starting with '#' are skipped. The first key
// seals new tickets, all open them: to rotate, add a new key first and
// drop the last after the tickets' lifetime (7 days).
func LoadTicketKeys(name string) ([][32]byte, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("certs: session ticket keys: %w", err)
	}
	var keys [][32]byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var key []byte
		if b, err := hex.DecodeString(string(line)); err == nil {
			key = b
		} else if b, err := base64.StdEncoding.DecodeString(string(line)); err == nil {
			key = b
		}
		if len(key) != 32 {
			return nil, fmt.Errorf("certs: session ticket keys: %s line %d: want 32 bytes as 64 hex digits or base64 (openssl rand -hex 32)", name, i+1)
		}
		keys = append(keys, [32]byte(key))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("certs: session ticket keys: %s holds no key (openssl rand -hex 32 > %s)", name, name)
	}
	return keys, nil
}
