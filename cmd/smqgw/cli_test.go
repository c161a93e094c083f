package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/complete/completetest"
)

type result struct {
	stdout, stderr string
	code           int
}

// cli runs smqgw with args in-process, the way main does, and returns
// what it printed and its exit code.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr strings.Builder
	err := run(context.Background(), args, &stdout, &stderr, nil)
	code := report(err, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

// TestCLIConventions holds every command and subcommand to Go's
// conventions: help on stdout with exit code 0; a bad command line as one
// line "smqgw: error: ... (see ...)" on stderr with exit code 2; a failure
// at run time with exit code 1.
func TestCLIConventions(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	help := []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"-h"}, "smqgw [-config FILE]"},
		{[]string{"-help"}, "smqgw [-config FILE]"},
		{[]string{"--help"}, "smqgw [-config FILE]"},
		{[]string{"help"}, "smqgw [-config FILE]"},
		{[]string{"help", "help"}, "smqgw [-config FILE]"},
		{[]string{"-config", "x.toml", "-h"}, "-no-files"},
		{[]string{"help", "certs"}, "smqgw certs init"},
		{[]string{"help", "version"}, "usage: smqgw version"},
		{[]string{"help", "completion"}, "usage: smqgw completion bash|zsh"},
		{[]string{"certs", "-h"}, "smqgw certs init"},
		{[]string{"certs", "help"}, "smqgw certs init"},
		{[]string{"certs", "help", "init"}, "smqgw certs init"},
		{[]string{"help", "certs", "client"}, "smqgw certs client"},
		{[]string{"certs", "init", "-h"}, "smqgw certs init"},
		{[]string{"certs", "client", "-help"}, "smqgw certs client"},
		{[]string{"certs", "node", "-h"}, "smqgw certs node"},
		{[]string{"certs", "node", "gw-a", "-help"}, "smqgw certs node"},
		{[]string{"help", "certs", "node"}, "smqgw certs node"},
		{[]string{"completion", "-h"}, "completions/smqgw"},
		{[]string{"completion", "help"}, "completions/smqgw"},
	}
	for _, tc := range help {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cli(t, tc.args...)
			if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, tc.want) {
				t.Errorf("code %d, stderr %q, stdout:\n%s\nwant code 0, no stderr, stdout with %q", r.code, r.stderr, r.stdout, tc.want)
			}
		})
	}
	errs := []struct {
		args   []string
		code   int
		stderr string // exact, without the final newline
	}{
		{[]string{"-nope"}, 2, "smqgw: error: flag provided but not defined: -nope (see smqgw -h)"},
		{[]string{"extra"}, 2, `smqgw: error: unexpected argument "extra" (see smqgw -h)`},
		{[]string{"-config"}, 2, "smqgw: error: flag needs an argument: -config (see smqgw -h)"},
		{[]string{"-no-files"}, 2, "smqgw: error: -no-files goes with -t (see smqgw -h)"},
		{[]string{"help", "nope"}, 2, `smqgw: error: help: unknown command "nope" (see smqgw -h)`},
		{[]string{"help", "version", "x"}, 2, `smqgw: error: help: unexpected argument "x" (see smqgw -h)`},
		{[]string{"version", "x"}, 2, `smqgw: error: version: unexpected argument "x" (see smqgw help version)`},
		{[]string{"completion"}, 2, "smqgw: error: completion: want one shell, bash or zsh (see smqgw help completion)"},
		{[]string{"completion", "fish"}, 2, `smqgw: error: completion: unknown shell "fish": bash or zsh (see smqgw help completion)`},
		{[]string{"certs"}, 2, "smqgw: error: certs: no command given: init, client or node (see smqgw certs -h)"},
		{[]string{"certs", "nope"}, 2, `smqgw: error: certs: unknown command "nope": init, client or node (see smqgw certs -h)`},
		{[]string{"certs", "help", "nope"}, 2, `smqgw: error: certs: unknown command "nope": init, client or node (see smqgw certs -h)`},
		{[]string{"certs", "init", "-nope"}, 2, "smqgw: error: certs init: flag provided but not defined: -nope (see smqgw certs -h)"},
		{[]string{"certs", "init", "-dir", empty, "x"}, 2, `smqgw: error: certs init: unexpected argument "x" (see smqgw certs -h)`},
		{[]string{"certs", "client", "-dir", empty}, 2, "smqgw: error: certs client: NAME is missing: smqgw certs client [-dir D] NAME (see smqgw certs -h)"},
		{[]string{"certs", "client", "-dir", empty, "-days", "0", "a"}, 2, "smqgw: error: certs client: -days 0: must be at least 1 (see smqgw certs -h)"},
		{[]string{"certs", "node", "-dir", empty, "-hosts", "10.0.0.1"}, 2, "smqgw: error: certs node: NAME is missing: smqgw certs node [-dir D] -hosts h1,h2,... NAME (see smqgw certs -h)"},
		{[]string{"certs", "node", "-dir", empty, "gw-a"}, 2, "smqgw: error: certs node: -hosts is missing: the node's route address (IP or name) must be in its certificate (see smqgw certs -h)"},
		{[]string{"certs", "node", "-dir", empty, "-hosts", "10.0.0.1", "gw-a", "x"}, 2, `smqgw: error: certs node: unexpected argument "x" after NAME "gw-a" (see smqgw certs -h)`},
		{[]string{"certs", "node", "-dir", empty, "-hosts", "10.0.0.1", "-days", "0", "gw-a"}, 2, "smqgw: error: certs node: -days 0: must be at least 1 (see smqgw certs -h)"},
		{[]string{"certs", "node", "-dir", empty, "-hosts", "a,,b", "gw-a"}, 2, `smqgw: error: certs node: invalid value "a,,b" for flag -hosts: empty host name (see smqgw certs -h)`},
		{[]string{"certs", "node", "-nope"}, 2, "smqgw: error: certs node: flag provided but not defined: -nope (see smqgw certs -h)"},
		// At run time.
		{[]string{"-config", "/does/not/exist.toml"}, 1, "smqgw: error: config: open /does/not/exist.toml: no such file or directory"},
		{[]string{"certs", "client", "-dir", empty, "a"}, 1, "smqgw: error: certs: no dev CA in " + empty + ": run `smqgw certs init -dir " + empty + "` first"},
		{[]string{"certs", "node", "-dir", empty, "-hosts", "10.0.0.1", "gw-a"}, 1, "smqgw: error: certs: no dev CA in " + empty + ": run `smqgw certs init -dir " + empty + "` first"},
		{[]string{"certs", "node", "-dir", empty, "-hosts", "10.0.0.1:6222", "gw-a"}, 1, `smqgw: error: certs: invalid host "10.0.0.1:6222": want a DNS name or an IP address, without the port`},
	}
	for _, tc := range errs {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cli(t, tc.args...)
			if r.code != tc.code || r.stdout != "" || r.stderr != tc.stderr+"\n" {
				t.Errorf("code %d, stdout %q\nstderr %q\nwant code %d, no stdout, stderr %q", r.code, r.stdout, r.stderr, tc.code, tc.stderr)
			}
		})
	}
}

// TestCheckShippedConfigsWithoutFiles checks every configs/*.toml with
// -t -no-files, as a configuration repository's CI would: the files they
// name (/etc/smqgw/...) do not exist here.
func TestCheckShippedConfigsWithoutFiles(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", t.TempDir())
	files, err := filepath.Glob("../../configs/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r := cli(t, "-t", "-no-files", "-config", file)
			if r.code != 0 || r.stdout != "smqgw: configuration "+file+" is valid (the files it names were not read)\n" {
				t.Errorf("code %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestCheckReportsEveryProblemAtItsPlace: -t prints a configuration's
// problems one per line, each starting FILE:LINE:COL (the first line
// included), and exits 1; -no-files leaves out only the unread files.
func TestCheckReportsEveryProblemAtItsPlace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.toml")
	src := `[[listener]]
name = "tls"
address = "127.0.0.1:0"
tls = "site"
[[listener.route]]
path = "/smq"
upstream = "embedded"
client_auth = "require"
client_ca = ["/does/not/exist/ca.pem"]

[certs.site]
cert_file = "/does/not/exist/site.pem"
key_file = "/does/not/exist/site-key.pem"
[limits]
max_sesions = 1
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:\d+:\d+: `)
	for _, tc := range []struct {
		args []string
		n    int // problems
	}{
		{[]string{"-t", "-config", file}, 4},
		{[]string{"-t", "-no-files", "-config", file}, 1},
	} {
		r := cli(t, tc.args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 1 || r.stdout != "" || len(lines) != tc.n {
			t.Errorf("%q: code %d, stdout %q, %d lines, want %d:\n%s", tc.args, r.code, r.stdout, len(lines), tc.n, r.stderr)
		}
		for _, l := range lines {
			if !line.MatchString(l) {
				t.Errorf("%q: line %q does not start with FILE:LINE:COL", tc.args, l)
			}
		}
		if !strings.Contains(lines[len(lines)-1], `"max_sesions"`) {
			t.Errorf("%q: the unknown key is not reported last:\n%s", tc.args, r.stderr)
		}
	}
}

// TestCompletion checks the scripts: bash parses them (zsh too where it
// is installed) and they name every command and flag.
func TestCompletion(t *testing.T) {
	t.Parallel()
	words := commands().AllWords()
	for _, shell := range []string{"bash", "zsh"} {
		t.Run(shell, func(t *testing.T) {
			r := cli(t, "completion", shell)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("code %d, stderr %q", r.code, r.stderr)
			}
			for _, w := range []string{"certs", "init", "client", "node", "version", "completion", "-config", "-t", "-no-files", "-dir", "-hosts", "-password", "-days", "-ou", "-force"} {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("the script does not name %q", w)
				}
			}
			completetest.Check(t, shell, r.stdout, words)
		})
	}
}

// TestCompletionInBash completes words as bash would, through the
// script's function.
func TestCompletionInBash(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	script := cli(t, "completion", "bash").stdout
	for _, tc := range []struct {
		line string // the words typed; the last is completed
		want string
	}{
		{"smqgw ce", "certs"},
		{"smqgw certs ", "init client node help"},
		{"smqgw certs init -h", "-hosts -h"},
		{"smqgw certs node -h", "-hosts -h"},
		{"smqgw -no", "-no-files"},
		{"smqgw completion ", "bash zsh"},
		{"smqgw -config ", ""},
	} {
		words := strings.Split(tc.line, " ")
		prog := fmt.Sprintf("%s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_smqgw\necho \"${COMPREPLY[*]}\"\n",
			script, strings.Join(quoteAll(words), " "), len(words)-1)
		out, err := exec.Command(sh, "-c", prog).CombinedOutput()
		if err != nil || string(bytes.TrimSpace(out)) != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.line, out, err, tc.want)
		}
	}
}

func quoteAll(ws []string) []string {
	q := make([]string, len(ws))
	for i, w := range ws {
		q[i] = shellQuote(w)
		if w == "" {
			q[i] = "''"
		}
	}
	return q
}

// TestCompletionInZsh completes words through the zsh script's function,
// with compadd and _files stubbed; skipped where zsh is not installed.
func TestCompletionInZsh(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh is not installed")
	}
	script := cli(t, "completion", "zsh").stdout
	stubs := "compadd() { shift; print -r -- \"${(P)1}\"; }\n_files() { print FILES; }\ncompdef() { :; }\n"
	for _, tc := range []struct {
		line string // the words typed; the last is completed
		want string
	}{
		{"smqgw ", "certs version completion help -config -no-files -t -version -h"},
		{"smqgw certs ", "init client node help"},
		{"smqgw certs client -", "-days -dir -force -ou -password -h"},
		{"smqgw certs node -", "-days -dir -force -hosts -h"},
		{"smqgw help ", "certs version completion help"},
		{"smqgw -config ", "FILES"},
		{"smqgw certs init -dir ", "FILES"},
	} {
		words := strings.Split(tc.line, " ")
		prog := fmt.Sprintf("%s%s\nwords=(%s)\nCURRENT=%d\n_smqgw\n", stubs, script, strings.Join(quoteAll(words), " "), len(words))
		out, err := exec.Command(sh, "-f", "-c", prog).CombinedOutput()
		if err != nil || string(bytes.TrimSpace(out)) != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.line, out, err, tc.want)
		}
	}
}
