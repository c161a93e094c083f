package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/config"
)

// secret is a TSIG secret as tsig-keygen prints it.
const secret = "x6S3cJ+g7jK1QmYvH0c8rQ2c9t0iYbP3yT8a0Tn0kS8="

// TestDNS01Valid: the two ways of setting the TXT record, their defaults,
// and the secret from a file (bare, or a BIND key file; under
// $CREDENTIALS_DIRECTORY).
func TestDNS01Valid(t *testing.T) {
	dir, name := testDir(t)
	hook := filepath.Join(dir, "set-txt")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(dir, "tsig.secret")
	keyFile := filepath.Join(dir, "tsig.key")
	os.WriteFile(bare, []byte(secret+"\n"), 0o600)
	os.WriteFile(keyFile, []byte("key \"gw\" {\n\talgorithm hmac-sha512;\n\tsecret \""+secret+"\";\n};\n"), 0o600)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)

	for _, tt := range []struct {
		name string
		keys []string
		test func(t *testing.T, c *config.Certs)
	}{
		{"rfc2136", []string{`dns_server = "192.0.2.53"`, `dns_zone = "example.com"`, `dns_tsig_name = "gw"`, `dns_tsig_secret = "` + secret + `"`},
			func(t *testing.T, c *config.Certs) {
				if c.DNSTSIGAlgorithm != "hmac-sha256" || c.DNSPropagationTimeout != 2*time.Minute || !c.DNS01() {
					t.Errorf("defaults: algorithm %q, propagation %v, DNS01() %v", c.DNSTSIGAlgorithm, c.DNSPropagationTimeout, c.DNS01())
				}
			}},
		{"rfc2136 secret file", []string{`dns_server = "ns1.example.com:5353"`, `dns_zone = "example.com."`, `dns_tsig_name = "gw"`,
			`dns_tsig_algorithm = "hmac-sha512"`, `dns_tsig_secret_file = "$CREDENTIALS_DIRECTORY/tsig.key"`, `dns_propagation_timeout = "30s"`,
			`dns_resolvers = ["192.0.2.1", "[2001:db8::1]:53"]`},
			func(t *testing.T, c *config.Certs) {
				if c.DNSTSIGSecretFile != keyFile || c.DNSPropagationTimeout != 30*time.Second || len(c.DNSResolvers) != 2 {
					t.Errorf("secret file %q, propagation %v, resolvers %q", c.DNSTSIGSecretFile, c.DNSPropagationTimeout, c.DNSResolvers)
				}
			}},
		{"rfc2136 bare secret file", []string{`dns_server = "192.0.2.53"`, `dns_zone = "example.com"`, `dns_tsig_name = "gw"`, `dns_tsig_secret_file = "tsig.secret"`}, nil},
		{"hook", []string{`dns_hook = "set-txt"`},
			func(t *testing.T, c *config.Certs) {
				if c.DNSHook != hook || c.DNSTSIGAlgorithm != "" {
					t.Errorf("hook %q, algorithm %q", c.DNSHook, c.DNSTSIGAlgorithm)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := withListener(append([]string{`[certs.x]`, `acme_domains = ["gw.example.com", "*.example.com"]`, `acme_challenge = "dns-01"`}, tt.keys...)...)
			c, err := config.Parse([]byte(src), name)
			if err != nil {
				t.Fatal(err)
			}
			if tt.test != nil {
				tt.test(t, c.Certs["x"])
			}
		})
	}
}

// TestDNS01Problems: every wrong combination gets its own message at its
// key's FILE:LINE:COL, and the secret is never quoted.
func TestDNS01Problems(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	dir, _ := testDir(t)
	noexec := filepath.Join(dir, "noexec")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o600)
	badKey := filepath.Join(dir, "bad.key")
	os.WriteFile(badKey, []byte("key \"gw\" {\n\talgorithm hmac-sha256;\n};\n"), 0o600)
	notB64 := filepath.Join(dir, "bad.secret")
	os.WriteFile(notB64, []byte("s3cr3t!value\n"), 0o600)

	block := func(keys ...string) string {
		return withListener(append([]string{`[certs.x]`, `acme_domains = ["gw.example.com"]`}, keys...)...)
	}
	rfc := []string{`acme_challenge = "dns-01"`, `dns_server = "192.0.2.53"`, `dns_zone = "example.com"`, `dns_tsig_name = "gw"`}
	with := func(extra ...string) []string { return append(append([]string{}, rfc...), extra...) }
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"unknown challenge", block(`acme_challenge = "dns01"`),
			[]want{{9, `acme_challenge in [certs.x]: invalid value "dns01" (want "tls-alpn-01", "http-01" or "dns-01") (did you mean "dns-01"?)`}}},
		{"wildcard default challenge", withListener(`[certs.x]`, `acme_domains = ["*.example.com"]`),
			[]want{{8, `wildcard "*.example.com" needs the DNS-01 challenge, not tls-alpn-01 (the default): set acme_challenge = "dns-01"`}}},
		{"wildcard http-01", withListener(`[certs.x]`, `acme_domains = ["gw.example.com", "*.example.com"]`, `acme_challenge = "http-01"`, `acme_http_address = ":80"`),
			[]want{{8, `wildcard "*.example.com" needs the DNS-01 challenge, not http-01`}}},
		{"bad wildcard", withListener(append([]string{`[certs.x]`, `acme_domains = ["*.*.example.com", "*.com"]`}, with(`dns_tsig_secret = "`+secret+`"`)...)...),
			[]want{{8, `invalid wildcard "*.*.example.com"`}, {8, `invalid wildcard "*.com"`}}},
		{"http-01 without listener", block(`acme_challenge = "http-01"`),
			[]want{{9, `acme_challenge in [certs.x]: "http-01" needs acme_http_address`}}},
		{"dns-01 with http listener", block(append(with(`dns_tsig_secret = "`+secret+`"`), `acme_http_address = ":80"`)...),
			[]want{{14, `acme_http_address in [certs.x]: not used with acme_challenge = "dns-01"`}}},
		{"dns-01 without a way", block(`acme_challenge = "dns-01"`),
			[]want{{9, `acme_challenge = "dns-01" in [certs.x] needs a way to set the TXT record: dns_server, dns_zone and a TSIG key (RFC 2136), or dns_hook`}}},
		{"server and hook", block(append(with(`dns_tsig_secret = "`+secret+`"`), `dns_hook = "/bin/true"`)...),
			[]want{{14, `dns_hook in [certs.x]: not with dns_server`}}},
		{"hook with tsig keys", block(`acme_challenge = "dns-01"`, `dns_hook = "/bin/true"`, `dns_tsig_name = "gw"`),
			[]want{{11, `dns_tsig_name in [certs.x]: not used with dns_hook`}}},
		{"hook missing", block(`acme_challenge = "dns-01"`, `dns_hook = "/does/not/exist"`),
			[]want{{10, `dns_hook in [certs.x]: cannot run "/does/not/exist": no such file or directory`}}},
		{"hook not executable", block(`acme_challenge = "dns-01"`, `dns_hook = "noexec"`),
			[]want{{10, `dns_hook in [certs.x]: "` + noexec + `" is not executable (chmod +x it)`}}},
		{"hook a directory", block(`acme_challenge = "dns-01"`, `dns_hook = "adir"`),
			[]want{{10, `is a directory, not a program`}}},
		{"rfc2136 missing keys", block(`acme_challenge = "dns-01"`, `dns_server = "192.0.2.53"`),
			[]want{{7, `missing required key "dns_zone" in [certs.x]`}, {7, `missing required key "dns_tsig_name" in [certs.x]`},
				{7, `missing required key "dns_tsig_secret_file" (or "dns_tsig_secret") in [certs.x]`}}},
		{"secret not base64", block(with(`dns_tsig_secret = "s3cr3t!value"`)...),
			[]want{{13, `dns_tsig_secret in [certs.x]: not valid base64 (at byte 6 of 12): want the secret as tsig-keygen prints it`}}},
		{"secret twice", block(with(`dns_tsig_secret = "`+secret+`"`, `dns_tsig_secret_file = "bad.secret"`)...),
			[]want{{13, `dns_tsig_secret in [certs.x]: not with dns_tsig_secret_file: give the secret once`}}},
		{"secret file not base64", block(with(`dns_tsig_secret_file = "bad.secret"`)...),
			[]want{{13, `dns_tsig_secret_file in [certs.x]: ` + notB64 + `: not valid base64`}}},
		{"key file without secret", block(with(`dns_tsig_secret_file = "bad.key"`)...),
			[]want{{13, `dns_tsig_secret_file in [certs.x]: ` + badKey + `: no secret "..."; line in the key file`}}},
		{"secret file missing", block(with(`dns_tsig_secret_file = "gone.key"`)...),
			[]want{{13, `dns_tsig_secret_file in [certs.x]: cannot read`}}},
		{"unknown algorithm", block(with(`dns_tsig_secret = "`+secret+`"`, `dns_tsig_algorithm = "hmac-md5"`)...),
			[]want{{14, `dns_tsig_algorithm in [certs.x]: unknown algorithm "hmac-md5" (want "hmac-sha256", "hmac-sha1", "hmac-sha224", "hmac-sha384" or "hmac-sha512")`}}},
		{"bad server", block(`acme_challenge = "dns-01"`, `dns_server = "ns1 example:53"`, `dns_zone = "example.com"`, `dns_tsig_name = "gw"`, `dns_tsig_secret = "`+secret+`"`),
			[]want{{10, `dns_server in [certs.x]: invalid server "ns1 example:53"`}}},
		{"domain outside zone", withListener(append([]string{`[certs.x]`, `acme_domains = ["gw.example.com", "*.example.org"]`}, with(`dns_tsig_secret = "`+secret+`"`)...)...),
			[]want{{8, `acme_domains in [certs.x]: "*.example.org" is not in dns_zone "example.com"`}}},
		{"bad resolver", block(with(`dns_tsig_secret = "`+secret+`"`, `dns_resolvers = ["192.0.2.1:99999"]`)...),
			[]want{{14, `dns_resolvers in [certs.x]: invalid server "192.0.2.1:99999"`}}},
		{"dns keys without dns-01", block(`dns_server = "192.0.2.53"`, `dns_propagation_timeout = "1m"`),
			[]want{{9, `dns_server in [certs.x]: only used with acme_challenge = "dns-01"`}, {10, `dns_propagation_timeout in [certs.x]: only used with acme_challenge = "dns-01"`}}},
		{"dns keys without acme", withListener(`[certs.x]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`, `acme_challenge = "dns-01"`, `dns_hook = "/bin/true"`),
			[]want{{10, `acme_challenge in [certs.x]: only used with acme_domains`}, {11, `dns_hook in [certs.x]: only used with acme_domains`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := filepath.Join(dir, "test.toml")
			_, err := config.Parse([]byte(tt.src), name)
			if err == nil {
				t.Fatalf("Parse succeeded, want %d problems", len(tt.want))
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), secret) {
				t.Errorf("the secret is in the error:\n%v", err)
			}
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				p := got[i]
				if p.Line != w.line || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = line %d %q\nwant line %d containing %q", i, p.Line, p.Msg, w.line, w.msg)
				}
				if p.File != name || w.line > 0 && p.Col == 0 {
					t.Errorf("problem %d: at %s:%d:%d", i, p.File, p.Line, p.Col)
				}
			}
		})
	}
}

// TestDNS01NoFiles: smqgw -t -no-files checks the keys but neither the
// hook nor the secret file.
func TestDNS01NoFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "smqgw.toml")
	for _, keys := range [][]string{
		{`dns_hook = "/does/not/exist/set-txt"`},
		{`dns_server = "192.0.2.53"`, `dns_zone = "example.com"`, `dns_tsig_name = "gw"`, `dns_tsig_secret_file = "/does/not/exist/tsig.key"`},
	} {
		src := withListener(append([]string{`state_dir = "/var/lib/smqgw"`, `[certs.x]`, `acme_domains = ["*.example.com"]`, `acme_challenge = "dns-01"`}, keys...)...)
		// state_dir must come before the tables.
		src = `state_dir = "/var/lib/smqgw"` + "\n" + strings.Replace(src, `state_dir = "/var/lib/smqgw"`+"\n", "", 1)
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(file); err == nil || !strings.Contains(err.Error(), "/does/not/exist") {
			t.Errorf("Load: %v, want the missing file", err)
		}
		if _, err := config.LoadNoFiles(file); err != nil {
			t.Errorf("LoadNoFiles: %v", err)
		}
	}
}
