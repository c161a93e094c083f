package config_test

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/tlsterm"
)

// TestDecodeProblems covers what the decoder checks itself: each value's
// TOML type, the values the field types parse, and exact key names.
func TestDecodeProblems(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	route := listener[3:]
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"key names are exact", lines(append([]string{`[[listener]]`, `Name = "a"`, `name = "a"`, `address = ":1"`}, route...)...),
			[]want{{2, `unknown key "Name" in [[listener]] (did you mean "name"?)`}}},
		{"client_auth is exact", withListener(`client_auth = "Require"`),
			[]want{{7, `client_auth in [[listener.route]]: invalid value "Require" (want "off", "optional" or "require")`}}},
		{"client_auth type", withListener(`client_auth = 1`),
			[]want{{7, `client_auth in [[listener.route]]: want a string, got integer 1`}}},
		{"client_auth invalid hides its keys", withListener(`client_auth = "requir"`, `client_ca = ["ca.pem"]`),
			[]want{{7, `client_auth in [[listener.route]]: invalid value "requir"`}}},
		{"log level is exact", withListener(`[log]`, `level = "INFO"`, `[admin]`, `address = ":2"`, `[upstream.x]`, `urls = ["http://a"]`, `[log.x]`),
			[]want{{8, `level in [log]: invalid value "INFO" (want "debug", "info", "warn" or "error")`}, {13, `unknown key "x" in [log]`}}},
		{"log level offset", withListener(`[log]`, `level = "warn+2"`),
			[]want{{8, `level in [log]: invalid value "warn+2"`}}},
		{"proxy_protocol_from", lines(append([]string{`[[listener]]`, `name = "a"`, `address = ":1"`, `proxy_protocol_from = ["10.0.0.0/8", "10.0.0.300", 5, "::1/129"]`}, route...)...),
			[]want{{4, `proxy_protocol_from in [[listener]]: invalid address "10.0.0.300" (want an IP address or a CIDR like "10.0.0.0/8")`},
				{4, `proxy_protocol_from in [[listener]]: want a string, got integer 5`}, {4, `invalid address "::1/129"`}}},
		{"proxy_protocol_from not an array", lines(append([]string{`[[listener]]`, `name = "a"`, `address = ":1"`, `proxy_protocol_from = "10.0.0.0/8"`}, route...)...),
			[]want{{4, `proxy_protocol_from in [[listener]]: want an array of strings, got string "10.0.0.0/8"`}}},
		{"eab key type", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_eab_kid = "k"`, `acme_eab_key = 5`),
			[]want{{10, `acme_eab_key in [certs.x]: want a string, got integer 5`}}},
		{"eab key without kid", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_eab_key = "AQID-_8"`),
			[]want{{9, `acme_eab_key in [certs.x]: acme_eab_kid is missing`}}},
		{"duration as integer", lines(append([]string{`watch_interval = 5`}, listener...)...),
			[]want{{1, `watch_interval: want a duration string like "10s", got integer 5`}}},
		{"duration as float", withListener(`[limits]`, `idle_timeout = 1.5`),
			[]want{{8, `idle_timeout in [limits]: want a duration string like "10s", got float 1.5`}}},
		{"duration forms", withListener(`[certs.x]`, `acme_domains = ["gw.example.com"]`, `acme_renew_before = "10 s"`, `[upstream.x]`, `urls = ["http://a"]`, `backoff = ""`),
			[]want{{9, `acme_renew_before in [certs.x]: invalid duration "10 s"`}, {12, `backoff in [upstream.x]: invalid duration ""`}}},
		{"integer as string", withListener(`[limits]`, `max_sessions = "5"`),
			[]want{{8, `max_sessions in [limits]: want an integer, got string "5"`}}},
		{"negative integer", withListener(`[limits]`, `message_rate = -1`),
			[]want{{8, `message_rate in [limits]: must be between 1 and 2147483647, got -1`}}},
		{"tables of the wrong type", lines(append([]string{`log = 5`, `admin = []`, `limits = "none"`}, listener...)...),
			[]want{{1, `log: want a table, got integer 5`}, {2, `admin: want a table, got an array`}, {3, `limits: want a table, got string "none"`}}},
		{"route not a table", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `route = ["/"]`),
			[]want{{4, `route in [[listener]]: want a table, got string "/"`}}},
		{"inline route", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `route = [{path = "/", upstream = "embedded", clientauth = "off"}]`),
			[]want{{4, `unknown key "clientauth" in [[listener.route]] (did you mean "client_auth"?)`}}},
		{"named block not a table", lines(append([]string{`upstream = {lan = "http://a"}`, `certs = 1`}, listener...)...),
			[]want{{1, `lan in [upstream]: want a table, got string "http://a"`}, {2, `certs: want a table, got integer 1`}}},
		{"pairs not tables", withListener(`[certs.x]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`, `pair = 5`),
			[]want{{10, `pair in [certs.x]: want an array of tables [certs.x.pair], got integer 5`}}},
		{"array of arrays", withListener(`[upstream.x]`, `urls = [["http://a"], "http://b"]`),
			[]want{{8, `urls in [upstream.x]: want a string, got an array`}}},
		{"array of tables for strings", withListener(`[[upstream.x.urls]]`),
			[]want{{7, `urls in [upstream.x]: want an array of strings, got an array of tables`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, name := testDir(t)
			_, err := config.Parse([]byte(tt.src), name)
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if p := got[i]; p.Line != w.line || p.Col == 0 || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = %d:%d %q\nwant line %d containing %q", i, p.Line, p.Col, p.Msg, w.line, w.msg)
				}
			}
		})
	}
}

// TestDecodedValues checks the values that the field types parse.
func TestDecodedValues(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	_, name := testDir(t)
	src := lines(
		`[log]`,
		`level = "warn"`,
		`[[listener]]`,
		`name = "a"`,
		`address = ":1"`,
		`tls = "d"`,
		`proxy_protocol_from = ["10.1.2.3/8", "192.0.2.1", "::ffff:192.0.2.2", "2001:db8::1"]`,
		`[[listener.route]]`,
		`path = "/"`,
		`upstream = "embedded"`,
		`client_auth = "optional"`,
		`pins = ["sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]`,
		`[certs.d]`,
		`dev = true`,
		`[certs.url]`,
		`acme_domains = ["gw.example.com"]`,
		`acme_eab_kid = "k"`,
		`acme_eab_key = "AQID-_8"`,
		`[certs.std]`,
		`acme_domains = ["gw.example.com"]`,
		`acme_eab_kid = "k"`,
		`acme_eab_key = "AQID+/8="`,
	)
	c, err := config.Parse([]byte(src), name)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != slog.LevelWarn {
		t.Errorf("Log.Level = %v", c.Log.Level)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("192.0.2.2/32"), netip.MustParsePrefix("2001:db8::1/128")}
	if got := c.Listeners[0].ProxyProtocolFrom; !reflect.DeepEqual(got, want) {
		t.Errorf("ProxyProtocolFrom = %v, want %v", got, want)
	}
	if got := c.Listeners[0].Routes[0].ClientAuth; got != tlsterm.Optional {
		t.Errorf("ClientAuth = %v", got)
	}
	for _, n := range []string{"url", "std"} {
		if got := c.Certs[n].ACMEEABKey; !bytes.Equal(got, []byte{1, 2, 3, 0xfb, 0xff}) {
			t.Errorf("certs %s: ACMEEABKey = %x", n, got)
		}
	}
}

// TestTagsAreTOML checks that the toml tags are the toml package's own: a
// valid example decodes straight into a Config with toml.Decode, every key
// used.
func TestTagsAreTOML(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../configs/*.toml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var c config.Config
		md, err := toml.Decode(string(data), &c)
		if err != nil {
			t.Errorf("%s: %v", file, err)
		} else if u := md.Undecoded(); len(u) > 0 {
			t.Errorf("%s: keys without a field: %v", file, u)
		}
	}
}
