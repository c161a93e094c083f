package certs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadTicketKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hexKey := strings.Repeat("ab", 32)
	b64Key := "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=" // bytes 1..32
	keys, err := LoadTicketKeys(write("good", "# newest first\n"+hexKey+"\n\n"+b64Key+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0][0] != 0xab || keys[1][0] != 1 || keys[1][31] != 32 {
		t.Fatalf("keys %x", keys)
	}
	for _, tc := range []struct{ data, err string }{
		{"# nothing\n", "holds no key"},
		{hexKey + "\nabcd\n", "line 2: want 32 bytes"},
		{strings.Repeat("ab", 31) + "\n", "line 1: want 32 bytes"},
	} {
		if _, err := LoadTicketKeys(write("bad", tc.data)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, want %q", tc.data, err, tc.err)
		}
	}
	if _, err := LoadTicketKeys(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file loaded")
	}
}
