package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// certsCmd runs "smqgw certs ARGS..." the way main does.
func certsCmd(args ...string) (stdout string, err error) {
	var out, errOut strings.Builder
	err = run(context.Background(), append([]string{"certs"}, args...), &out, &errOut, nil)
	return out.String(), err
}

func TestCertsHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"help"}, {"--help"}, {"init", "-h"}, {"client", "-h"}, {"client", "x", "-help"}, {"node", "-h"}, {"help", "node"}} {
		out, err := certsCmd(args...)
		if err != nil {
			t.Errorf("%q: %v", args, err)
			continue
		}
		for _, want := range []string{"smqgw certs init [-dir D] [-hosts", "smqgw certs client [-dir D] [-password P] [-days N] [-ou OU]... [-force] NAME",
			"smqgw certs node [-dir D] -hosts h1,h2,... [-days N] [-force] NAME", "certs node -dir pki -hosts 10.0.0.1 gw-a", "0600"} {
			if !strings.Contains(out, want) {
				t.Errorf("%q: help lacks %q:\n%s", args, want, out)
			}
		}
	}
	// The gateway's own usage points to it.
	var stdout strings.Builder
	if err := run(context.Background(), []string{"-h"}, &stdout, io.Discard, nil); err != nil {
		t.Errorf("smqgw -h: %v", err)
	}
	if !strings.Contains(stdout.String(), "smqgw certs") {
		t.Errorf("smqgw -h does not mention smqgw certs:\n%s", stdout.String())
	}
}

func TestCertsErrors(t *testing.T) {
	t.Parallel()
	pki := filepath.Join(t.TempDir(), "pki")
	if _, err := certsCmd("init", "-dir", pki); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "certs: no command given: init, client or node (see smqgw certs -h)"},
		{[]string{"nope"}, `certs: unknown command "nope"`},
		{[]string{"init", "-nope"}, "certs init: flag provided but not defined: -nope (see smqgw certs -h)"},
		{[]string{"init", "-dir", pki, "extra"}, `certs init: unexpected argument "extra"`},
		{[]string{"init", "-dir", pki, "-hosts", "localhost,,gw.test"}, "empty host name"},
		{[]string{"client", "-dir", pki}, "certs client: NAME is missing"},
		{[]string{"client", "-dir", pki, "a", "b"}, `certs client: unexpected argument "b" after NAME "a"`},
		{[]string{"client", "-dir", pki, "a", "-nope"}, "certs client: flag provided but not defined: -nope"},
		{[]string{"client", "-dir", pki, "-days", "0", "a"}, "certs client: -days 0: must be at least 1"},
		{[]string{"client", "-dir", pki, "-days", "x", "a"}, `invalid value "x" for flag -days`},
		{[]string{"client", "-dir", pki, "../a"}, `certs: invalid client name "../a"`},
		{[]string{"client", "-dir", pki, "ca"}, `certs: invalid client name "ca"`},
		{[]string{"client", "-dir", empty, "a"}, "certs: no dev CA in " + empty + ": run `smqgw certs init -dir " + empty + "` first"},
		{[]string{"node", "-dir", pki, "gw-a"}, "certs node: -hosts is missing"},
		{[]string{"node", "-dir", pki, "-hosts", "10.0.0.1"}, "certs node: NAME is missing"},
		{[]string{"node", "-dir", pki, "-hosts", "10.0.0.1", "a", "b"}, `certs node: unexpected argument "b" after NAME "a"`},
		{[]string{"node", "-dir", pki, "-hosts", "10.0.0.1", "-days", "0", "a"}, "certs node: -days 0: must be at least 1"},
		{[]string{"node", "-dir", pki, "-hosts", "10.0.0.1", "../a"}, `certs: invalid node name "../a"`},
		{[]string{"node", "-dir", pki, "-hosts", "10.0.0.1", "server"}, `certs: invalid node name "server"`},
		{[]string{"node", "-dir", pki, "-hosts", "gw.test:6222", "a"}, `certs: invalid host "gw.test:6222"`},
		{[]string{"node", "-dir", empty, "-hosts", "10.0.0.1", "a"}, "certs: no dev CA in " + empty + ": run `smqgw certs init -dir " + empty + "` first"},
	} {
		out, err := certsCmd(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("%q: printed %q on failure", tc.args, out)
		}
	}
	if entries, _ := os.ReadDir(empty); len(entries) > 0 {
		t.Errorf("a failed command wrote %d files", len(entries))
	}
}

func TestCertsInitAndClient(t *testing.T) {
	t.Parallel()
	pki := filepath.Join(t.TempDir(), "pki")
	out, err := certsCmd("init", "-dir", pki, "-hosts", "localhost, gw.test,127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		filepath.Join(pki, "ca.pem") + "  ", "CA certificate (created)",
		filepath.Join(pki, "ca-key.pem"), "mode 0600",
		filepath.Join(pki, "server.pem"), "server certificate (created) for localhost, gw.test, 127.0.0.1 until ",
		filepath.Join(pki, "server-key.pem"),
		"smqgw certs client -dir " + pki + " NAME",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"ca-key.pem", "server-key.pem"} {
		checkMode(t, filepath.Join(pki, f), 0o600)
	}
	out, err = certsCmd("init", "-dir", pki, "-hosts", "gw.test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "CA certificate (kept)") || !strings.Contains(out, "server certificate (kept)") {
		t.Errorf("second init does not keep the files:\n%s", out)
	}

	out, err = certsCmd("client", "-dir", pki, "device-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		filepath.Join(pki, "device-1.pem") + "  ", "CN=device-1, for client authentication, until ",
		filepath.Join(pki, "device-1-key.pem"), filepath.Join(pki, "device-1.p12"),
		"-ca " + filepath.Join(pki, "ca.pem") + " -cert " + filepath.Join(pki, "device-1.pem") +
			" -key " + filepath.Join(pki, "device-1-key.pem"),
		"Firefox", "Chrome", "pk12util",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("client output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`Password of \S+device-1\.p12: ([a-z2-7]{16})\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("client output shows no password:\n%s", out)
	}
	p12, err := os.ReadFile(filepath.Join(pki, "device-1.p12"))
	if err != nil {
		t.Fatal(err)
	}
	if _, cert, _, err := pkcs12.DecodeChain(p12, m[1]); err != nil || cert.Subject.CommonName != "device-1" {
		t.Errorf("p12 with the printed password: %v", err)
	}
	checkMode(t, filepath.Join(pki, "device-1-key.pem"), 0o600)
	checkMode(t, filepath.Join(pki, "device-1.p12"), 0o600)
	checkMode(t, filepath.Join(pki, "device-1.pem"), 0o644)

	// Flags after NAME; a given password is not printed.
	out, err = certsCmd("client", "device-2", "-dir", pki, "-password", "not-shown", "-days", "2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "not-shown") || !strings.Contains(out, "the one given with -password") {
		t.Errorf("given password:\n%s", out)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "device-2.pem"), filepath.Join(pki, "device-2-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(pair.Leaf.NotAfter); life > 48*time.Hour || life < 47*time.Hour {
		t.Errorf("-days 2: valid for %v more", life)
	}

	// No overwriting without -force.
	before, _ := os.ReadFile(filepath.Join(pki, "device-1.pem"))
	if _, err := certsCmd("client", "-dir", pki, "device-1"); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("second client device-1: %v, want a refusal mentioning -force", err)
	}
	if after, _ := os.ReadFile(filepath.Join(pki, "device-1.pem")); string(after) != string(before) {
		t.Error("refused command changed device-1.pem")
	}
	if _, err := certsCmd("client", "-dir", pki, "device-1", "-force"); err != nil {
		t.Errorf("with -force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(pki, "device-1.pem")); string(after) == string(before) {
		t.Error("-force did not replace device-1.pem")
	}
}

// TestCertsNode issues node certificates: files, output, flags after
// NAME, -force; the printed [cluster] settings make a valid configuration.
func TestCertsNode(t *testing.T) {
	t.Parallel()
	pki := filepath.Join(t.TempDir(), "pki")
	if _, err := certsCmd("init", "-dir", pki); err != nil {
		t.Fatal(err)
	}
	out, err := certsCmd("node", "-dir", pki, "-hosts", "127.0.0.1, gw-a.test", "gw-a")
	if err != nil {
		t.Fatal(err)
	}
	abs := func(f string) string {
		a, err := filepath.Abs(filepath.Join(pki, f))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, want := range []string{
		`Node certificate "gw-a", issued by the dev CA in ` + pki,
		filepath.Join(pki, "gw-a.pem") + "      certificate: CN=gw-a for 127.0.0.1, gw-a.test, as server and client of cluster routes, until ",
		filepath.Join(pki, "gw-a-key.pem") + "  its private key (mode 0600)",
		"[certs.node]\n  cert_file = \"" + abs("gw-a.pem") + "\"\n  key_file = \"" + abs("gw-a-key.pem") + "\"\n",
		"[cluster]\n  tls = \"node\"\n  ca = \"" + abs("ca.pem") + "\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("node output lacks %q:\n%s", want, out)
		}
	}
	checkMode(t, filepath.Join(pki, "gw-a-key.pem"), 0o600)
	checkMode(t, filepath.Join(pki, "gw-a.pem"), 0o644)
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "gw-a.pem"), filepath.Join(pki, "gw-a-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(pair.Leaf.ExtKeyUsage, want) {
		t.Errorf("extended key usage %v, want %v", pair.Leaf.ExtKeyUsage, want)
	}
	if !slices.Equal(pair.Leaf.DNSNames, []string{"gw-a.test"}) || len(pair.Leaf.IPAddresses) != 1 {
		t.Errorf("SANs %q %v", pair.Leaf.DNSNames, pair.Leaf.IPAddresses)
	}

	// The printed settings, with the rest of a node's, pass smqgw -t.
	snippet := out[strings.Index(out, "  [certs.node]"):]
	cfg := `[[listener]]
name = "smq"
address = "127.0.0.1:0"
  [[listener.route]]
  path = "/smq"
  upstream = "embedded"
` + strings.Replace(snippet, "  [cluster]\n", "  [cluster]\n  listen = \"127.0.0.1:0\"\n", 1)
	file := filepath.Join(t.TempDir(), "node.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "-t", "-config", file); r.code != 0 {
		t.Errorf("smqgw -t with the printed settings: code %d, stderr:\n%s\nconfig:\n%s", r.code, r.stderr, cfg)
	}

	// Flags after NAME.
	if _, err := certsCmd("node", "gw-b", "-dir", pki, "-hosts", "10.0.0.2", "-days", "2"); err != nil {
		t.Fatal(err)
	}
	pair, err = tls.LoadX509KeyPair(filepath.Join(pki, "gw-b.pem"), filepath.Join(pki, "gw-b-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(pair.Leaf.NotAfter); life > 48*time.Hour || life < 47*time.Hour {
		t.Errorf("-days 2: valid for %v more", life)
	}

	// No overwriting without -force.
	before, _ := os.ReadFile(filepath.Join(pki, "gw-a.pem"))
	if _, err := certsCmd("node", "-dir", pki, "-hosts", "127.0.0.1", "gw-a"); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("second node gw-a: %v, want a refusal mentioning -force", err)
	}
	if after, _ := os.ReadFile(filepath.Join(pki, "gw-a.pem")); string(after) != string(before) {
		t.Error("refused command changed gw-a.pem")
	}
	if _, err := certsCmd("node", "-dir", pki, "-hosts", "127.0.0.1", "gw-a", "-force"); err != nil {
		t.Errorf("with -force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(pki, "gw-a.pem")); string(after) == string(before) {
		t.Error("-force did not replace gw-a.pem")
	}
}

// The default -dir is the demo's dev directory, and the demo reuses what
// certs init made there.
func TestCertsDefaultDirIsTheDemos(t *testing.T) {
	state := t.TempDir()
	t.Setenv("STATE_DIRECTORY", state)
	dir := filepath.Join(state, "dev")
	out, err := certsCmd("init")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Dev PKI in "+dir) || !strings.Contains(out, "zero-configuration demo") {
		t.Errorf("init output:\n%s", out)
	}
	if _, err := certsCmd("client", "device-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "device-1.p12")); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	d, err := certs.EnsureDev(filepath.Join(cfg.StateDir, "dev"), cfg.Certs["dev"].Hosts)
	if err != nil {
		t.Fatal(err)
	}
	if d.CreatedCA || d.IssuedServer {
		t.Errorf("the demo's EnsureDev replaced what certs init made (CA %v, server %v)", d.CreatedCA, d.IssuedServer)
	}
}

// TestREADMEWalkthrough runs the README's "Client certificates: a
// walkthrough": certs init, certs client, the gateway with configs/mtls.toml,
// and the real smq command with and without the client certificate.
func TestREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds cmd/smq")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	mtls, err := os.ReadFile("../../configs/mtls.toml")
	if err != nil {
		t.Fatal(err)
	}
	const commonArgs = "-url https://127.0.0.1:8443/smq -ca pki/ca.pem"
	for _, cmd := range []string{
		"go run ./cmd/smqgw certs init -dir pki",
		"go run ./cmd/smqgw certs client -dir pki device-1",
		"go run ./cmd/smqgw -config configs/mtls.toml",
		"go run ./cmd/smq ping " + commonArgs + " -cert pki/device-1.pem -key pki/device-1-key.pem",
		"go run ./cmd/smq ping " + commonArgs + "\n",
		"`certs init -dir pki/other`",
	} {
		if !strings.Contains(string(readme), cmd) {
			t.Errorf("README lacks the command %q", strings.TrimSpace(cmd))
		}
	}
	smqBin := buildCmd(t, "smq")

	// The walkthrough runs from the repository root; here, from a copy of
	// its configs/mtls.toml with a free port in root, where the smq
	// commands run.
	root := t.TempDir()
	cfg := strings.Replace(string(mtls), `address = "127.0.0.1:8443"`, `address = "127.0.0.1:0"`, 1)
	if cfg == string(mtls) {
		t.Fatal(`configs/mtls.toml has no address = "127.0.0.1:8443" to replace`)
	}
	if err := os.Mkdir(filepath.Join(root, "configs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "configs", "mtls.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "-dir", "pki"},
		{"client", "-dir", "pki", "device-1"},
		{"init", "-dir", "pki/other"},
		{"client", "-dir", "pki/other", "intruder"},
	} {
		args[2] = filepath.Join(root, args[2])
		if _, err := certsCmd(args...); err != nil {
			t.Fatalf("certs %q: %v", args, err)
		}
	}

	r := runSMQGW(t, "-config", filepath.Join(root, "configs", "mtls.toml"))
	gw := r.gw
	url := "https://" + gw.Addr("tls").String() + "/smq"
	if !strings.Contains(r.banner.String(), url) {
		t.Errorf("banner lacks %s:\n%s", url, r.banner)
	}
	common := []string{"ping", "-url", url, "-ca", "pki/ca.pem"}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"with the certificate", []string{"-cert", "pki/device-1.pem", "-key", "pki/device-1-key.pem"}, 0,
			[]string{"connected to " + url + ": connack 0x00 accepted", "pong in "}},
		{"over WebSocket", []string{"-url", "wss://" + gw.Addr("tls").String() + "/smq", "-cert", "pki/device-1.pem", "-key", "pki/device-1-key.pem"}, 0,
			[]string{"connack 0x00 accepted", "pong in "}},
		{"without a certificate", nil, 1,
			[]string{"smq: error: connection refused by broker: 0x04 client certificate required", "hint: pass a client certificate"}},
		{"from another CA", []string{"-cert", "pki/other/intruder.pem", "-key", "pki/other/intruder-key.pem"}, 1,
			[]string{"0x05 client certificate not accepted: certificate signed by an unknown authority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runSMQ(t, root, smqBin, append(common, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// buildCmd builds the command cmd/NAME into the test's temporary directory
// and returns the binary's path.
func buildCmd(t *testing.T, name string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no go command on PATH to build cmd/%s: %v", name, err)
		}
		t.Skipf("no go command on PATH to build cmd/%s: %v", name, err)
	}
	bin := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/smqgw/smqgw/cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/%s: %v\n%s", name, err, out)
	}
	return bin
}

// runSMQ runs the smq binary in dir and returns its combined output and
// exit code.
func runSMQ(t *testing.T, dir, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), smqtest.WaitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return string(out), ee.ExitCode()
	}
	t.Fatalf("smq %q: %v\n%s", args, err, out)
	return "", 0
}

func checkMode(t *testing.T, file string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", filepath.Base(file), st.Mode().Perm(), want)
	}
}
