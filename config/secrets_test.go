package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/config"
)

// TestNoPasswordInProblems: a configuration problem that quotes a proxy
// or upstream URL never shows its password (issue 16: smqgw -t and
// "reload rejected" printed them).
func TestNoPasswordInProblems(t *testing.T) {
	t.Parallel()
	src := withListener(
		`[upstream.cloud]`,
		`urls = ["ftp://u:S3cr3t@a.example/smq", "https://u:S3cr3t@b.example:99999/smq", "wss://u:S3cr3t@c.example/smq"]`,
		`proxy = "socks9://smqgw:S3cr3t@proxy.example:1080"`,
		`[upstream.other]`,
		`urls = ["https://x.example/smq"]`,
		`proxy = "http://smqgw:S3cr3t@proxy example:3128"`,
		`[upstream.third]`,
		`urls = "https://u:S3cr3t@x.example/smq"`,
	)
	_, name := testDir(t)
	_, err := config.Parse([]byte(src), name)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	got := problems(t, err)
	if len(got) != 6 {
		t.Errorf("%d problems, want 6:\n%v", len(got), err)
	}
	if strings.Contains(err.Error(), "S3cr3t") {
		t.Errorf("a password in the problems:\n%v", err)
	}
	if !strings.Contains(err.Error(), `"socks9://smqgw:xxxxx@proxy.example:1080"`) ||
		!strings.Contains(err.Error(), `user info (user:password@) is not supported in "wss://u:xxxxx@c.example/smq"`) {
		t.Errorf("the URLs are not quoted, redacted:\n%v", err)
	}
}

// TestSessionTicketKeyFile: the key file is checked at load, its problem
// named by line, and never quoted.
func TestSessionTicketKeyFile(t *testing.T) {
	t.Parallel()
	dir, name := testDir(t)
	bad := filepath.Join(dir, "tickets.key")
	if err := os.WriteFile(bad, []byte("deadbeef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Parse([]byte(`session_ticket_key_file = "tickets.key"`+"\n"+lines(listener...)), name)
	got := problems(t, err)
	if len(got) != 1 || got[0].Line != 1 || !strings.Contains(got[0].Msg, "line 1: want 32 bytes as 64 hex digits or base64") ||
		strings.Contains(got[0].Msg, "deadbeef") {
		t.Fatalf("problems: %v", err)
	}
	if err := os.WriteFile(bad, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte(`session_ticket_key_file = "tickets.key"`+"\n"+lines(listener...)), name)
	if err != nil || c.SessionTicketKeyFile != bad {
		t.Fatalf("%v, file %q", err, c.SessionTicketKeyFile)
	}
}
