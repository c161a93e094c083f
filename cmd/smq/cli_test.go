package main

import (
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/complete/completetest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	want := regexp.MustCompile(`^smq (devel|v\S+) \((commit [0-9a-f]{1,12}(\+dirty)?, )?(\S+, )?go\S+\)\n$`)
	for _, arg := range []string{"version", "-version", "--version"} {
		r := cli(ctxT(t), "", arg)
		if r.code != 0 || r.stderr != "" || !want.MatchString(r.stdout) || !strings.Contains(r.stdout, runtime.Version()) {
			t.Errorf("smq %s: code %d, stdout %q, stderr %q", arg, r.code, r.stdout, r.stderr)
		}
	}
}

// TestCompletion checks the scripts: bash parses them (zsh too where it
// is installed) and they name every command and every flag.
func TestCompletion(t *testing.T) {
	t.Parallel()
	words := commands().AllWords()
	for _, w := range []string{"sub", "pub", "ping", "demo-device", "bench", "-no-reconnect", "-url", "-proxy", "-to"} {
		if !strings.Contains(strings.Join(words, " "), " "+w+" ") {
			t.Errorf("the command tree lacks %q", w)
		}
	}
	for _, shell := range []string{"bash", "zsh"} {
		t.Run(shell, func(t *testing.T) {
			r := cli(ctxT(t), "", "completion", shell)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("code %d, stderr %q", r.code, r.stderr)
			}
			completetest.Check(t, shell, r.stdout, words)
		})
	}
}

// TestSubReconnects: smq sub outlives a broker restart and gets the
// messages published after it, as mosquitto_sub does; with -no-reconnect
// it exits with code 1.
func TestSubReconnects(t *testing.T) {
	t.Parallel()
	for _, reconnect := range []bool{true, false} {
		name := "reconnect"
		if !reconnect {
			name = "no-reconnect"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := apptest.StartRestartable(t)
			url := "http://" + r.Addr + "/smq"
			topic := "cmd/restart"
			args := []string{"sub", "-url", url, "-topic", topic, "-count", "2", "-v"}
			if !reconnect {
				args = append(args, "-no-reconnect")
			}
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- report(run(ctxT(t), args, strings.NewReader(""), &stdout, &stderr), &stderr)
			}()
			waitCount(t, watch(t, url, topic), 1)
			if p := cli(ctxT(t), "", "pub", "-url", url, "-topic", topic, "-m", "before"); p.code != 0 {
				t.Fatalf("pub: %+v", p)
			}
			smqtest.WaitUntil(t, "the message before the crash", func() bool { return strings.Contains(stdout.String(), "before") })
			r.Kill()
			if !reconnect {
				code := recv(t, done, "sub to exit")
				if code != 1 || !strings.Contains(stderr.String(), "smq: error: client: connection lost") {
					t.Fatalf("sub -no-reconnect: code %d, stderr:\n%s", code, stderr.String())
				}
				return
			}
			r.Start()
			// Subscribed again: -v says so once the subscription is back.
			smqtest.WaitUntil(t, "the subscriber to reconnect", func() bool {
				return strings.Count(stderr.String(), "smq: connected to") == 2
			})
			if p := cli(ctxT(t), "", "pub", "-url", url, "-topic", topic, "-m", "after"); p.code != 0 {
				t.Fatalf("pub: %+v", p)
			}
			code := recv(t, done, "sub to exit")
			out := regexp.MustCompile(`^cmd/restart from 0x[0-9a-f]{8}: before\ncmd/restart from 0x[0-9a-f]{8}: after\n$`)
			if code != 0 || !out.MatchString(stdout.String()) {
				t.Fatalf("sub: code %d, stdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
			}
			want := regexp.MustCompile(`(?s)connected to \S+ as etid 0x[0-9a-f]{8}\n.*smq: connection lost, reconnecting: .*\nsmq: connected to \S+ as etid 0x[0-9a-f]{8}\n$`)
			if !want.MatchString(stderr.String()) {
				t.Errorf("sub -v reported:\n%s", stderr.String())
			}
		})
	}
}
