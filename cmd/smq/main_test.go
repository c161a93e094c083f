package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

func TestMain(m *testing.M) {
	// A worker of a smq bench -procs run started by a test: this binary is
	// its os.Executable.
	if len(os.Args) > 1 && os.Args[1] == "bench" {
		os.Exit(report(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr), os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// startBroker serves a broker on a loopback port, over TLS with a server
// certificate from ca unless it is nil, and returns its address.
func startBroker(t *testing.T, cfg broker.Config, ca *testpki.CA) string {
	t.Helper()
	l := smqtest.Listen(t)
	addr := l.Addr().String()
	if ca != nil {
		l = tlsListener(t, l, ca)
	}
	apptest.Broker(t, cfg, l)
	return addr
}

// syncBuffer is an io.Writer read while a command still writes to it.
type syncBuffer = smqtest.SyncBuffer

type result struct {
	stdout, stderr string
	code           int
}

// cli runs a command line in-process, the way main does.
func cli(ctx context.Context, stdin string, args ...string) result {
	var stdout, stderr syncBuffer
	err := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	code := report(err, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

func ctxT(t *testing.T) context.Context { return smqtest.Context(t) }

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return smqtest.Recv(t, ch, what)
}

// watch returns a channel that gets the subscriber count of topic at each
// change.
func watch(t *testing.T, url, topic string) <-chan uint32 {
	t.Helper()
	c, err := client.Dial(ctxT(t), url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan uint32, 100)
	if err := c.Observe(ctxT(t), topic, func(_, n uint32) { ch <- n }); err != nil {
		t.Fatal(err)
	}
	return ch
}

func waitCount(t *testing.T, ch <-chan uint32, n uint32) {
	t.Helper()
	for recv(t, ch, fmt.Sprintf("%d subscribers", n)) != n {
	}
}

func TestPubSub(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, broker.Config{}, nil)
	for _, tc := range []struct {
		name     string
		subURL   string
		subArgs  []string
		pubURL   string
		pubArgs  []string
		stdin    string
		expected string
	}{
		{
			name:   "message",
			subURL: "http://" + addr + "/smq", subArgs: []string{"-count", "2"},
			pubURL: "ws://" + addr + "/smq", pubArgs: []string{"-m", "hello", "-count", "2"},
			expected: "hello\nhello\n",
		},
		{
			name:   "stdin verbose",
			subURL: "ws://" + addr + "/smq", subArgs: []string{"-count", "3", "-v"},
			pubURL: "http://" + addr + "/smq", pubArgs: []string{"-rate", "1000"},
			stdin:    "one\ntwo\n\nfour\n",
			expected: "(?s)^T from (0x[0-9a-f]{8}): one\nT from (0x[0-9a-f]{8}): two\nT from (0x[0-9a-f]{8}): \n$",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "cmd/" + tc.name
			subs := watch(t, tc.subURL, topic)
			waitCount(t, subs, 0)
			done := make(chan result, 1)
			go func() {
				done <- cli(ctxT(t), "", append([]string{"sub", "-url", tc.subURL, "-topic", topic}, tc.subArgs...)...)
			}()
			waitCount(t, subs, 1)
			pub := cli(ctxT(t), tc.stdin, append([]string{"pub", "-url", tc.pubURL, "-topic", topic}, tc.pubArgs...)...)
			if pub.code != 0 || pub.stdout != "" || pub.stderr != "" {
				t.Fatalf("pub: %+v", pub)
			}
			sub := recv(t, done, "sub to exit")
			wantErr := "" // -v reports on stderr
			if slices.Contains(tc.subArgs, "-v") {
				wantErr = fmt.Sprintf("smq: connected to %s as etid 0x[0-9a-f]{8}\nsmq: subscribed to %q \\(tid \\d+\\)\n", tc.subURL, topic)
			}
			if sub.code != 0 || !regexp.MustCompile("^"+wantErr+"$").MatchString(sub.stderr) {
				t.Fatalf("sub: %+v", sub)
			}
			if strings.HasPrefix(tc.expected, "(?s)") {
				want := strings.ReplaceAll(tc.expected, "T from", regexp.QuoteMeta(topic)+" from")
				if !regexp.MustCompile(want).MatchString(sub.stdout) {
					t.Errorf("sub printed %q, want %q", sub.stdout, want)
				}
			} else if sub.stdout != tc.expected {
				t.Errorf("sub printed %q, want %q", sub.stdout, tc.expected)
			}
		})
	}
}

func TestPubTo(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, broker.Config{}, nil)
	url := "http://" + addr + "/smq"
	c, err := client.Dial(ctxT(t), url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 1)
	if _, err := c.Subscribe(ctxT(t), client.Self, func(m *client.Message) { got <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	r := cli(ctxT(t), "", "pub", "-url", url, "-to", fmt.Sprint(c.ETID()), "-m", "direct")
	if r.code != 0 {
		t.Fatalf("pub: %+v", r)
	}
	if s := recv(t, got, "one-to-one message"); s != "direct" {
		t.Errorf("got %q", s)
	}
}

func TestInterrupt(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, broker.Config{}, nil)
	url := "ws://" + addr + "/smq"
	subs := watch(t, url, "forever")
	waitCount(t, subs, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() { done <- cli(ctx, "", "sub", "-url", url, "-topic", "forever") }()
	waitCount(t, subs, 1)
	cancel()
	if r := recv(t, done, "sub to exit"); r.code != 0 || r.stderr != "" {
		t.Errorf("interrupted sub: %+v", r)
	}
	waitCount(t, subs, 0)
}

func TestPing(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, broker.Config{Authenticate: func(r *broker.ConnectRequest) (smq.ConnackCode, string) {
		switch r.Connect.Credentials {
		case "nocert":
			return smq.CodeCertRequired, "no certificate presented"
		case "wrong":
			return smq.CodeBadCredentials, ""
		}
		return smq.CodeAccepted, ""
	}}, nil)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // regexp
		stderr string
	}{
		{"raw", []string{"-url", "http://" + addr + "/smq", "-count", "2"}, 0,
			`^connected to http://\S+: connack 0x00 accepted, etid 0x[0-9a-f]{8}, in \S+\npong in \S+\npong in \S+\n$`, ""},
		{"websocket", []string{"-url", "ws://" + addr + "/smq"}, 0,
			`^connected to ws://\S+: connack 0x00 accepted, etid 0x[0-9a-f]{8}, in \S+\npong in \S+\n$`, ""},
		{"refused", []string{"-url", "http://" + addr + "/smq", "-cred", "nocert"}, 1, `^$`,
			"smq: error: connection refused by broker: 0x04 client certificate required: no certificate presented " +
				"(hint: pass a client certificate with -cert FILE -key FILE and an https:// or wss:// url)\n"},
		{"refused without reason", []string{"-url", "ws://" + addr + "/smq", "-cred", "wrong"}, 1, `^$`,
			"smq: error: connection refused by broker: 0x03 incorrect credentials (hint: check -cred)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(ctxT(t), "", append([]string{"ping"}, tc.args...)...)
			if r.code != tc.code || r.stderr != tc.stderr || !regexp.MustCompile(tc.stdout).MatchString(r.stdout) {
				t.Errorf("got code %d\nstdout %q\nstderr %q\nwant code %d\nstdout ~ %q\nstderr %q",
					r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	dev := ca.Client(t, "device-1")
	addr := startBroker(t, broker.Config{}, ca)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // substring
	}{
		{"https", []string{"-url", "https://" + addr, "-ca", ca.CertFile, "-cert", dev.CertFile, "-key", dev.KeyFile}, 0, ""},
		{"wss", []string{"-url", "wss://" + addr, "-ca", ca.CertFile, "-cert", dev.CertFile, "-key", dev.KeyFile}, 0, ""},
		{"insecure", []string{"-url", "wss://" + addr, "-insecure", "-cert", dev.CertFile, "-key", dev.KeyFile}, 0, ""},
		{"unknown CA", []string{"-url", "https://" + addr}, 1, "(hint: pass the CA certificate that signed the broker's certificate with -ca FILE)"},
		{"plain url", []string{"-url", "http://" + addr, "-ca", ca.CertFile}, 2, "need an https:// or wss:// url"},
		{"cert without key", []string{"-url", "https://" + addr, "-cert", dev.CertFile}, 2, "-cert and -key go together"},
		{"ca not PEM", []string{"-url", "https://" + addr, "-ca", dev.KeyFile}, 1, "no PEM certificates found"},
		{"plain server", []string{"-url", "http://" + addr}, 1, "check the url's path, and its scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(ctxT(t), "", append([]string{"ping"}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("got code %d stderr %q, want code %d stderr with %q", r.code, r.stderr, tc.code, tc.stderr)
			}
			if tc.code != 0 && strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr %q is not one line", r.stderr)
			}
		})
	}
}

// TestUsage holds every command to Go's conventions: help on stdout with
// exit code 0, a bad command line as one line on stderr with exit code 2,
// a failure at run time with exit code 1.
func TestUsage(t *testing.T) {
	t.Parallel()
	dead := smqtest.DeadAddr(t)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // exact
	}{
		{[]string{"help"}, 0, "Usage:\n  smq sub", ""},
		{[]string{"-h"}, 0, "Usage:\n  smq sub", ""},
		{[]string{"-help"}, 0, "Usage:\n  smq sub", ""},
		{[]string{"--help"}, 0, "Usage:\n  smq sub", ""},
		{[]string{"help", "help"}, 0, "Usage:\n  smq sub", ""},
		{[]string{"help", "pub"}, 0, "Usage: smq pub [flags]", ""},
		{[]string{"help", "sub"}, 0, "-no-reconnect", ""},
		{[]string{"help", "ping"}, 0, "Usage: smq ping [flags]", ""},
		{[]string{"help", "demo-device"}, 0, "Usage: smq demo-device [flags]", ""},
		{[]string{"help", "bench"}, 0, "Usage: smq bench [flags]", ""},
		{[]string{"help", "version"}, 0, "Usage: smq version", ""},
		{[]string{"help", "completion"}, 0, "usage: smq completion bash|zsh", ""},
		{[]string{"sub", "-h"}, 0, "-topic topic", ""},
		{[]string{"pub", "-help"}, 0, "-topic topic", ""},
		{[]string{"ping", "--help"}, 0, "Usage: smq ping [flags]", ""},
		{[]string{"demo-device", "-h"}, 0, "Usage: smq demo-device [flags]", ""},
		{[]string{"bench", "-h"}, 0, "Usage: smq bench [flags]", ""},
		{[]string{"completion", "-h"}, 0, "completions/smq", ""},
		{[]string{"completion", "bash"}, 0, "complete -o default -F _smq smq", ""},
		{[]string{"help", "pub", "x"}, 2, "", "smq: error: help: unexpected argument \"x\" (see smq help)\n"},
		{[]string{"version", "x"}, 2, "", "smq: error: version: unexpected argument \"x\" (see smq help version)\n"},
		{[]string{"completion"}, 2, "", "smq: error: completion: want one shell, bash or zsh (see smq help completion)\n"},
		{[]string{"completion", "fish"}, 2, "", "smq: error: completion: unknown shell \"fish\": bash or zsh (see smq help completion)\n"},
		{[]string{"ping", "-count", "0"}, 2, "", "smq: error: -count must be at least 1\n"},
		{[]string{"bench", "-nope"}, 2, "", "smq: error: flag provided but not defined: -nope (see smq help bench)\n"},
		{[]string{"demo-device", "x"}, 2, "", "smq: error: unexpected argument \"x\" (see smq help demo-device)\n"},
		{[]string{"sub", "-topic", "t", "-url", "http://" + dead + "/smq"}, 1, "", ""}, // run time: stderr checked below
		{nil, 2, "", "smq: error: no command given (see smq help)\n"},
		{[]string{"frobnicate"}, 2, "", "smq: error: unknown command \"frobnicate\" (see smq help)\n"},
		{[]string{"help", "frobnicate"}, 2, "", "smq: error: unknown command \"frobnicate\" (see smq help)\n"},
		{[]string{"pub", "-x"}, 2, "", "smq: error: flag provided but not defined: -x (see smq help pub)\n"},
		{[]string{"pub", "-m", "x"}, 2, "", "smq: error: pub needs -topic or -to (see smq help pub)\n"},
		{[]string{"pub", "-to", "0", "-m", "x"}, 2, "",
			"smq: error: invalid value \"0\" for flag -to: not a non-zero 32-bit ETID (see smq help pub)\n"},
		{[]string{"sub"}, 2, "", "smq: error: sub needs -topic (see smq help sub)\n"},
		{[]string{"sub", "-topic", "t", "extra"}, 2, "", "smq: error: unexpected argument \"extra\" (see smq help sub)\n"},
		{[]string{"ping", "-uid", "short"}, 1, "",
			"smq: error: client: uid \"short\" is too short: the broker refuses uids of 5 bytes or fewer\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cli(ctxT(t), "", tc.args...)
			if tc.code == 1 && tc.stderr == "" && strings.HasPrefix(r.stderr, "smq: error: ") && strings.Count(r.stderr, "\n") == 1 {
				tc.stderr = r.stderr // one line of whatever the system says
			}
			if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || r.stderr != tc.stderr || (tc.code != 0 && r.stdout != "") {
				t.Errorf("got code %d\nstdout %q\nstderr %q\nwant code %d, stdout with %q, stderr %q",
					r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestPubErrors(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, broker.Config{PermitTopic: func(_ *broker.Client, _ smq.Type, topic string) bool {
		return topic != "forbidden"
	}}, nil)
	url := "http://" + addr + "/smq"
	long := strings.Repeat("x", client.MaxPayload+1)
	for _, tc := range []struct {
		name, stdin string
		args        []string
		stderr      string
	}{
		{"denied", "", []string{"-topic", "forbidden", "-m", "x"},
			"smq: error: client: request denied by broker: create topic \"forbidden\"\n"},
		{"long line", "ok\n" + long + "\n", []string{"-topic", "t"},
			"smq: error: line 2 of standard input is over 65520 bytes, the most one message holds\n"},
		{"long message", "", []string{"-topic", "t", "-m", long},
			"smq: error: -m is 65521 bytes, at most 65520 fit one message\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(ctxT(t), tc.stdin, append([]string{"pub", "-url", url}, tc.args...)...)
			if r.code == 0 || r.stderr != tc.stderr {
				t.Errorf("got code %d stderr %q, want %q", r.code, r.stderr, tc.stderr)
			}
		})
	}
}

// tlsListener wraps l in TLS with a server certificate for 127.0.0.1 from
// ca; client certificates are asked for and, when sent, verified.
func tlsListener(t *testing.T, l net.Listener, ca *testpki.CA) net.Listener {
	t.Helper()
	cfg := ca.Server(t, "127.0.0.1").ServerConfig(ca.Pool)
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	return tls.NewListener(l, cfg)
}
