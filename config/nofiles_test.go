package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/config"
)

// TestLoadNoFiles: LoadNoFiles judges everything Load judges but the
// files named, which it does not open.
func TestLoadNoFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "smqgw.toml")
	src := `session_ticket_key_file = "/does/not/exist/tickets"
[[listener]]
name = "tls"
address = "127.0.0.1:0"
tls = "site"
[[listener.route]]
path = "/smq"
upstream = "embedded"
client_auth = "require"
client_ca = ["/does/not/exist/ca.pem"]
client_crl = ["/does/not/exist/ca.crl"]
[certs.site]
cert_file = "/does/not/exist/site.pem"
key_file = "/does/not/exist/site-key.pem"
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(file); err == nil || strings.Count(err.Error(), "cannot read") != 5 {
		t.Errorf("Load: %v, want the five files unreadable", err)
	}
	if _, err := config.LoadNoFiles(file); err != nil {
		t.Errorf("LoadNoFiles: %v", err)
	}
	// Empty names and everything else are still judged.
	bad := strings.Replace(src, `"/does/not/exist/ca.pem"`, `""`, 1) + "[limits]\nmax_sesions = 1\n"
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.LoadNoFiles(file)
	if err == nil || !strings.Contains(err.Error(), "empty file name") || !strings.Contains(err.Error(), `"max_sesions"`) || strings.Contains(err.Error(), "cannot read") {
		t.Errorf("LoadNoFiles of a bad file: %v", err)
	}
	if _, err := config.LoadNoFiles(filepath.Join(dir, "none.toml")); err == nil {
		t.Error("LoadNoFiles of a missing file: no error")
	}
}
