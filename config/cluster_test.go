package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/config"
)

// TestClusterBlock: [cluster] takes its defaults from package broker and
// the host name, and takes explicit values (paths resolved).
func TestClusterBlock(t *testing.T) {
	t.Parallel()
	dir, name := testDir(t)
	c, err := config.Parse([]byte(withListener()), name)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster != nil {
		t.Fatalf("Cluster = %+v without a [cluster] block", c.Cluster)
	}

	c, err = config.Parse([]byte(withListener(`[cluster]`, `listen = "127.0.0.1:6222"`)), name)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if cl == nil || cl.Name == "" || strings.ContainsAny(cl.Name, ". ") || cl.SubjectPrefix != "smqgw" ||
		cl.Heartbeat != time.Second || cl.PeerTimeout != 5*time.Second || cl.RequestTimeout != 2*time.Second {
		t.Errorf("Cluster = %+v, want the defaults", cl)
	}
	if h, err := os.Hostname(); err == nil && !strings.Contains(h, ".") && cl.Name != h {
		t.Errorf("name = %q, want the host name %q", cl.Name, h)
	}

	c, err = config.Parse([]byte(withListener(
		`[certs.node]`,
		`cert_file = "cert.pem"`,
		`key_file = "key.pem"`,
		`[cluster]`,
		`name = "gw-1"`,
		`listen = "10.0.0.1:6222"`,
		`routes = ["10.0.0.2:6222", "nats-route://gw-3.example.com"]`,
		`tls = "node"`,
		`ca = "ca.pem"`,
		`subject_prefix = "site1.smqgw"`,
		`heartbeat = "500ms"`,
		`peer_timeout = "3s"`,
		`request_timeout = "1s"`,
	)), name)
	if err != nil {
		t.Fatal(err)
	}
	cl = c.Cluster
	if cl.Name != "gw-1" || cl.TLS != "node" || cl.CA != filepath.Join(dir, "ca.pem") || len(cl.Routes) != 2 ||
		cl.SubjectPrefix != "site1.smqgw" || cl.Heartbeat != 500*time.Millisecond || cl.PeerTimeout != 3*time.Second ||
		cl.RequestTimeout != time.Second || cl.External() {
		t.Errorf("Cluster = %+v", cl)
	}

	c, err = config.Parse([]byte(withListener(`[cluster]`, `nats = ["tls://u:pw@nats.example.com:4222"]`,
		`nats_ca = "ca.pem"`, `nats_cert = "cert.pem"`, `nats_key = "key.pem"`)), name)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cluster.External() || c.Cluster.NATSKey != filepath.Join(dir, "key.pem") {
		t.Errorf("Cluster = %+v", c.Cluster)
	}
}

func TestClusterProblems(t *testing.T) {
	t.Parallel()
	certs := []string{`[certs.node]`, `cert_file = "cert.pem"`, `key_file = "key.pem"`}
	acme := []string{`[certs.web]`, `acme_domains = ["gw.example.com"]`}
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"routes without listen", withListener(`[cluster]`, `routes = ["127.0.0.1:6222"]`),
			[]want{{8, `[cluster] has routes but no listen address`}}},
		{"no mode", withListener(`[cluster]`, `name = "a"`),
			[]want{{7, `[cluster] needs listen (the address the other nodes route to) or nats`}}},
		{"bad name", withListener(`[cluster]`, `name = "gw.1"`, `listen = "127.0.0.1:6222"`),
			[]want{{8, `name in [cluster]: invalid node name "gw.1": name must be letters, digits, '-' or '_'`}}},
		{"bad prefix", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `subject_prefix = "a.*"`),
			[]want{{9, `subject_prefix in [cluster]: invalid prefix "a.*"`}}},
		{"no embedded route", lines(`[[listener]]`, `name = "a"`, `address = ":1"`, `[[listener.route]]`, `path = "/"`,
			`upstream = "b"`, `[upstream.b]`, `urls = ["http://b:1"]`, `[cluster]`, `listen = "127.0.0.1:6222"`),
			[]want{{9, `[cluster] joins the embedded broker, but no route uses upstream = "embedded"`}}},
		{"both modes", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `nats = ["nats://n:4222"]`),
			[]want{{8, `listen in [cluster]: not allowed with nats: [cluster] joins an existing NATS (nats) or runs its own`}}},
		{"plain off loopback", withListener(`[cluster]`, `listen = "10.0.0.1:6222"`),
			[]want{{7, `[cluster] routes without TLS off loopback`}}},
		{"plain route off loopback", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `routes = ["10.0.0.2:6222"]`),
			[]want{{7, `[cluster] routes without TLS off loopback`}}},
		{"insecure with tls", withListener(append(certs, `[cluster]`, `listen = ":6222"`, `tls = "node"`, `ca = "ca.pem"`, `insecure = true`)...),
			[]want{{14, `insecure in [cluster]: has no effect with tls`}}},
		{"tls without ca", withListener(append(certs, `[cluster]`, `listen = ":6222"`, `tls = "node"`)...),
			[]want{{10, `missing required key "ca" in [cluster]: tls needs it`}}},
		{"ca without tls", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `ca = "ca.pem"`),
			[]want{{7, `missing required key "tls" in [cluster]: ca needs it`}}},
		{"unknown certs", withListener(append(certs, `[cluster]`, `listen = ":6222"`, `tls = "nod"`, `ca = "ca.pem"`)...),
			[]want{{12, `tls in [cluster]: no [certs.nod] block (did you mean "node"?)`}}},
		{"acme certs", withListener(append(acme, `[cluster]`, `listen = ":6222"`, `tls = "web"`, `ca = "ca.pem"`)...),
			[]want{{11, `tls in [cluster]: [certs.web] is ACME`}}},
		{"dev certs", withListener(`[certs.dev]`, `dev = true`, `[cluster]`, `listen = ":6222"`, `tls = "dev"`, `ca = "ca.pem"`),
			[]want{{11, `tls in [cluster]: [certs.dev] is dev`}}},
		{"bad route", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `routes = ["http://127.0.0.1:1"]`),
			[]want{{9, `routes in [cluster]: invalid route "http://127.0.0.1:1": scheme "http"`}}},
		{"bad listen", withListener(`[cluster]`, `listen = "127.0.0.1"`),
			[]want{{8, `listen in [cluster]: invalid address "127.0.0.1"`}}},
		{"listen port taken", withListener(`[cluster]`, `listen = ":1"`, `insecure = true`),
			[]want{{8, `listen in [cluster]: address ":1": port 1 is already used by address in [[listener]]`}}},
		{"nats password redacted", withListener(`[cluster]`, `nats = ["http://user:hunter2@n:4222"]`),
			[]want{{8, `nats in [cluster]: unsupported scheme "http" in "http://user:xxxxx@n:4222"`}}},
		{"nats keys without nats", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `nats_creds = "ca.pem"`),
			[]want{{9, `nats_creds in [cluster]: only used with nats`}}},
		{"nats cert without key", withListener(`[cluster]`, `nats = ["nats://n:4222"]`, `nats_cert = "cert.pem"`),
			[]want{{7, `missing required key "nats_key" in [cluster]: nats_cert needs it`}}},
		{"nats creds missing", withListener(`[cluster]`, `nats = ["nats://n:4222"]`, `nats_creds = "nope.creds"`),
			[]want{{9, `nats_creds in [cluster]: cannot read`}}},
		{"peer timeout too short", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `heartbeat = "2s"`, `peer_timeout = "1s"`),
			[]want{{10, `peer_timeout in [cluster]: peer_timeout (1s) must be longer than heartbeat (2s)`}}},
		{"bad duration", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `request_timeout = 2`),
			[]want{{9, `request_timeout in [cluster]: want a duration string like "10s", got integer 2`}}},
		{"unknown key", withListener(`[cluster]`, `listen = "127.0.0.1:6222"`, `route = ["127.0.0.1:1"]`),
			[]want{{9, `unknown key "route" in [cluster] (did you mean "routes"?)`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, name := testDir(t)
			_, err := config.Parse([]byte(tt.src), name)
			if err == nil {
				t.Fatalf("Parse succeeded, want %d problems", len(tt.want))
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("a password in the problems: %v", err)
			}
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if p := got[i]; p.Line != w.line || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = line %d %q\nwant line %d containing %q", i, p.Line, p.Msg, w.line, w.msg)
				}
			}
		})
	}
}
