package config_test

import (
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
