package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCheckDNS01: smqgw -t judges the DNS-01 keys, each problem at its
// FILE:LINE:COL, and quotes no secret; -no-files leaves out the hook and
// the secret file.
func TestCheckDNS01(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "dns.toml")
	src := `state_dir = "/var/lib/smqgw"
[[listener]]
name = "tls"
address = "127.0.0.1:0"
tls = "le"
[[listener.route]]
path = "/smq"
upstream = "embedded"

[certs.le]
acme_domains = ["gw.example.com", "*.example.com"]
acme_challenge = "dns-01"
dns_server = "192.0.2.53"
dns_zone = "example.com"
dns_tsig_name = "gw"
dns_tsig_algorithm = "hmac-md5"
dns_tsig_secret = "hunter2!hunter2"

[certs.alpn]
acme_domains = ["*.example.org"]

[certs.hook]
acme_domains = ["gw.example.net"]
acme_challenge = "dns-01"
dns_hook = "/does/not/exist/set-txt"
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:\d+:\d+: `)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-t", "-config", file}, []string{`dns_tsig_algorithm in [certs.le]: unknown algorithm "hmac-md5"`,
			`dns_tsig_secret in [certs.le]: not valid base64`, `wildcard "*.example.org" needs the DNS-01 challenge, not tls-alpn-01`,
			`dns_hook in [certs.hook]: cannot run "/does/not/exist/set-txt"`}},
		{[]string{"-t", "-no-files", "-config", file}, []string{`unknown algorithm "hmac-md5"`, `not valid base64`, `wildcard "*.example.org"`}},
	} {
		r := cli(t, tc.args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 1 || len(lines) != len(tc.want) {
			t.Errorf("%q: code %d, %d lines, want %d:\n%s", tc.args, r.code, len(lines), len(tc.want), r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%q: no %q in:\n%s", tc.args, w, r.stderr)
			}
		}
		for _, l := range lines {
			if !line.MatchString(l) {
				t.Errorf("%q: line %q does not start with FILE:LINE:COL", tc.args, l)
			}
		}
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("%q: the secret is quoted:\n%s", tc.args, r.stderr)
		}
	}
}
