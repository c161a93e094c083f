// Command smq is a command-line SMQ client: it subscribes and prints what
// arrives, publishes messages or lines of standard input, and checks that a
// broker (or the smqgw gateway) accepts a connection.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smqgw/smqgw/client"
	"github.com/smqgw/smqgw/internal/complete"
	"github.com/smqgw/smqgw/internal/version"
	"github.com/smqgw/smqgw/proxyclient"
	"github.com/smqgw/smqgw/smq"
)

// defaultURL is where smqgw's zero-configuration demo serves SMQ.
const defaultURL = "http://127.0.0.1:9000/smq"

const usage = `smq is a command-line SMQ client.

Usage:
  smq sub  -topic T [-count N] [-v] [-no-reconnect]     print the messages of topic T
  smq pub  (-topic T | -to ETID) [-m MSG] [-count N] [-rate R]
                                                        publish MSG, or each line of stdin
  smq ping [-count N]                                   connect, show the Connack, measure round trips
  smq demo-device [-topic T] [-interval D]              a simulated LAN device: publishes a temperature,
                                                        obeys on/off sent to its ETID and answers with its state
  smq bench [-mode pubsub|rr|idle] [-pubs N] [-subs M] [-size B] [-rate R] [-duration D] [-procs K] [-json]
                                                        load test: throughput, latency, lost and reordered messages
  smq version                                           print the version and build details
  smq completion bash|zsh                               print a shell completion script
  smq help [COMMAND]                                    show this help, or a command's flags

Common flags:
  -url URL       broker URL: http:// or https:// (raw SMQ), ws:// or wss:// (WebSocket)
                 (default ` + defaultURL + `)
  -uid UID       client UID, more than 5 bytes (default: random)
  -cred SECRET   credentials sent in Connect
  -ca FILE       PEM CA certificates that verify the broker (default: system roots)
  -cert FILE     PEM client certificate, with -key FILE
  -insecure      do not verify the broker's certificate (tests only)
  -timeout D     connect and request timeout (default 10s)
  -proxy URL     through an HTTP CONNECT (http://, https://) or SOCKS5 (socks5://,
                 socks5h://) proxy, user:password@ allowed; "env": HTTPS_PROXY,
                 HTTP_PROXY, ALL_PROXY, NO_PROXY (default: direct)

smq sub reconnects and subscribes again when the connection is lost (as
mosquitto_sub does) unless given -no-reconnect. ETIDs print in hex (0x0a1b2c3d),
as the console shows them; -to takes them in hex or decimal.

Examples:
  smq sub -topic sensors/temp -v
  smq pub -topic sensors/temp -m 21.5
  tail -f app.log | smq pub -url wss://gw.example.com/smq -cert dev.pem -key dev.key -topic logs
  smq ping -url wss://gw.example.com/smq -proxy socks5h://proxy.lan:1080
  smq bench -url wss://127.0.0.1:8443/smq -ca ca.pem -pubs 50 -subs 1 -duration 10s
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(err, os.Stderr))
}

// usageError is an error in the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// report prints err as one line on stderr and returns the exit code: 0 for
// none, 2 for a bad command line, 1 for anything else.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	msg := "smq: error: " + err.Error()
	if h := hint(err); h != "" {
		msg += " (hint: " + h + ")"
	}
	fmt.Fprintln(stderr, strings.ReplaceAll(msg, "\n", " "))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// hint suggests a fix for errors that have one.
func hint(err error) string {
	var re *client.RefusedError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &re):
		switch re.Code {
		case smq.CodeCertRequired:
			return "pass a client certificate with -cert FILE -key FILE and an https:// or wss:// url"
		case smq.CodeCertNotAccepted:
			return "the broker does not accept this client certificate; check -cert"
		case smq.CodeBadCredentials:
			return "check -cred"
		case smq.CodeServerUnavailable:
			return "the broker or the gateway's upstream is unavailable; try again later"
		}
	case errors.As(err, &ua):
		return "pass the CA certificate that signed the broker's certificate with -ca FILE"
	case errors.As(err, &he):
		return "connect with a host name the broker's certificate is valid for"
	case errors.As(err, &rh):
		return "the server does not speak TLS; use http:// or ws://"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "is a broker listening there? smqgw with no arguments serves one on 127.0.0.1:9000"
	case errors.Is(err, smq.ErrBadBootstrap), strings.Contains(err.Error(), "upgrade refused"):
		return "check the url's path, and its scheme: https:// or wss:// for a TLS server"
	case errors.Is(err, context.DeadlineExceeded):
		return "the broker did not answer in time; raise -timeout or check the url"
	}
	return ""
}

// run runs one smq command. It returns nil when interrupted through ctx.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("no command given (see smq help)")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return usagef("help: unexpected argument %q (see smq help)", args[1])
		}
		if len(args) > 0 && args[0] != "help" {
			switch args[0] {
			case "version":
				fmt.Fprintln(stdout, "Usage: smq version (or smq -version)\n\nPrints the version, commit, build date and Go version.")
				return nil
			case "completion":
				return complete.Run("smq", commands(), []string{"-h"}, stdout, usagef)
			}
			if fs, _ := newCommand(args[0]); fs != nil {
				printUsage(stdout, fs)
				return nil
			}
			return usagef("unknown command %q (see smq help)", args[0])
		}
		fmt.Fprint(stdout, usage)
		return nil
	case "version", "-version", "--version":
		if len(args) > 0 {
			return usagef("version: unexpected argument %q (see smq help version)", args[0])
		}
		fmt.Fprintln(stdout, "smq "+version.Get().String())
		return nil
	case "completion":
		return complete.Run("smq", commands(), args, stdout, usagef)
	}
	fs, cmdRun := newCommand(cmd)
	if fs == nil {
		return usagef("unknown command %q (see smq help)", cmd)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, fs)
			return nil
		}
		return usagef("%v (see smq help %s)", err, cmd)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (see smq help %s)", fs.Arg(0), cmd)
	}
	return cmdRun(ctx, stdin, stdout, stderr)
}

type cmdFunc func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error

// newCommand returns the flags of a command and the function that runs it
// once they are parsed; nil for an unknown command.
func newCommand(name string) (*flag.FlagSet, cmdFunc) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c common
	c.register(fs)
	switch name {
	case "sub":
		var s subCmd
		s.common = &c
		fs.StringVar(&s.topic, "topic", "", "`topic` to subscribe to (\"self\": messages sent to this client's ETID)")
		fs.IntVar(&s.count, "count", 0, "exit after `N` messages (0: run until interrupted)")
		fs.BoolVar(&s.verbose, "v", false, "print each message's topic and sender, and status on stderr")
		fs.BoolVar(&s.noReconnect, "no-reconnect", false, "exit when the connection is lost (default: reconnect and subscribe again, with backoff)")
		return fs, s.run
	case "pub":
		var p pubCmd
		p.common = &c
		fs.StringVar(&p.topic, "topic", "", "`topic` to publish to")
		fs.Func("to", "publish one-to-one to the client with this `ETID` instead of a topic", func(s string) error {
			v, err := strconv.ParseUint(s, 0, 32)
			if err != nil || v == 0 {
				return fmt.Errorf("not a non-zero 32-bit ETID")
			}
			p.to = uint32(v)
			return nil
		})
		fs.Func("m", "publish `MSG` instead of the lines of standard input", func(s string) error {
			p.msg = &s
			return nil
		})
		fs.IntVar(&p.count, "count", 0, "publish `N` messages: MSG N times (default 1), or at most N lines")
		fs.Float64Var(&p.rate, "rate", 0, "publish at most `R` messages per second (0: no limit)")
		return fs, p.run
	case "demo-device":
		d := &deviceCmd{common: &c}
		d.register(fs)
		return fs, d.run
	case "bench":
		b := &benchCmd{common: &c, fs: fs}
		b.register(fs)
		return fs, b.run
	case "ping":
		var p pingCmd
		p.common = &c
		fs.IntVar(&p.count, "count", 1, "send `N` pings")
		return fs, p.run
	}
	return nil, nil
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: smq %s [flags]\n\nFlags:\n", fs.Name())
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// common holds the flags every command has.
type common struct {
	url, uid, cred string
	ca, cert, key  string
	insecure       bool
	timeout        time.Duration
	proxy          string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", defaultURL, "broker `URL`: http://, https:// (raw SMQ), ws://, wss:// (WebSocket)")
	fs.StringVar(&c.uid, "uid", "", "client `UID`, more than 5 bytes (default: random)")
	fs.StringVar(&c.cred, "cred", "", "`credentials` sent in Connect")
	fs.StringVar(&c.ca, "ca", "", "PEM `file` of CA certificates that verify the broker (default: system roots)")
	fs.StringVar(&c.cert, "cert", "", "PEM `file` with the client certificate (needs -key)")
	fs.StringVar(&c.key, "key", "", "PEM `file` with the client certificate's private key")
	fs.BoolVar(&c.insecure, "insecure", false, "do not verify the broker's certificate (tests only)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "connect and request `duration`")
	fs.StringVar(&c.proxy, "proxy", "", "reach the broker through a proxy: `URL` http://, https:// (HTTP CONNECT), socks5://, socks5h://, with user:password@; \"env\": HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY (default: direct)")
}

// options turns the common flags into client options.
func (c *common) options() (client.Options, error) {
	opts := client.Options{UID: c.uid, Credentials: c.cred, ConnectTimeout: c.timeout,
		InsecureSkipVerify: c.insecure, Proxy: c.proxy}
	if _, err := proxyclient.Parse(c.proxy, proxyclient.Options{}); err != nil {
		return opts, usagef("-proxy: %v", err)
	}
	secure := strings.HasPrefix(c.url, "https://") || strings.HasPrefix(c.url, "wss://")
	if !secure && (c.ca != "" || c.cert != "" || c.key != "" || c.insecure) {
		return opts, usagef("-ca, -cert, -key and -insecure need an https:// or wss:// url, not %q", c.url)
	}
	if c.timeout <= 0 {
		return opts, usagef("-timeout must be positive")
	}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return opts, fmt.Errorf("reading -ca: %w", err)
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pem) {
			return opts, fmt.Errorf("-ca %q: no PEM certificates found", c.ca)
		}
	}
	if (c.cert == "") != (c.key == "") {
		return opts, usagef("-cert and -key go together")
	}
	if c.cert != "" {
		cert, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return opts, fmt.Errorf("loading -cert %q and -key %q: %w", c.cert, c.key, err)
		}
		opts.Certificate = &cert
	}
	return opts, nil
}

// dial connects with the common flags. An interrupt while connecting is not
// an error.
func (c *common) dial(ctx context.Context, opts client.Options) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cl, err := client.Dial(dctx, c.url, opts)
	if err != nil && ctx.Err() != nil {
		return nil, errInterrupted
	}
	return cl, err
}

// errInterrupted ends a command interrupted by the user; run reports it as
// success.
var errInterrupted = errors.New("interrupted")

func (c *common) opctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

type subCmd struct {
	*common
	topic       string
	count       int
	verbose     bool
	noReconnect bool
}

func (s *subCmd) run(ctx context.Context, _ io.Reader, stdout, stderr io.Writer) error {
	if s.topic == "" {
		return usagef("sub needs -topic (see smq help sub)")
	}
	if s.count < 0 {
		return usagef("-count must not be negative")
	}
	opts, err := s.options()
	if err != nil {
		return err
	}
	opts.Reconnect = !s.noReconnect
	if s.verbose {
		first := true // reported below, in order with the subscription
		opts.OnState = func(sc client.StateChange) {
			switch sc.State {
			case client.Reconnecting:
				fmt.Fprintf(stderr, "smq: connection lost, reconnecting: %v\n", sc.Err)
			case client.Connected:
				if !first {
					fmt.Fprintf(stderr, "smq: connected to %s as etid %s\n", s.url, etid(sc.ETID))
				}
				first = false
			}
		}
	}
	c, err := s.dial(ctx, opts)
	if err != nil {
		return ignoreInterrupt(err)
	}
	defer c.Close()
	if s.verbose {
		fmt.Fprintf(stderr, "smq: connected to %s as etid %s\n", s.url, etid(c.ETID()))
	}
	quit := make(chan struct{})
	defer close(quit)
	msgs := make(chan *client.Message, 64)
	octx, cancel := s.opctx(ctx)
	tid, err := c.Subscribe(octx, s.topic, func(m *client.Message) {
		select {
		case msgs <- m:
		case <-quit:
		}
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if s.verbose {
		fmt.Fprintf(stderr, "smq: subscribed to %q (tid %d)\n", s.topic, tid)
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	for n := 0; s.count == 0 || n < s.count; n++ {
		select {
		case m := <-msgs:
			if s.verbose {
				fmt.Fprintf(w, "%s from %s", m.Topic, etid(m.PTID))
				switch {
				case m.SubTopic != "":
					fmt.Fprintf(w, " (sub-topic %s)", m.SubTopic)
				case m.SubTID != 0:
					fmt.Fprintf(w, " (sub-topic %d)", m.SubTID)
				}
				w.WriteString(": ")
			}
			w.Write(m.Payload)
			if len(m.Payload) == 0 || m.Payload[len(m.Payload)-1] != '\n' {
				w.WriteByte('\n')
			}
			if len(msgs) == 0 {
				if err := w.Flush(); err != nil {
					return fmt.Errorf("writing output: %w", err)
				}
			}
		case <-c.Done():
			return c.Err()
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

type pubCmd struct {
	*common
	topic string
	to    uint32
	msg   *string
	count int
	rate  float64
}

func (p *pubCmd) run(ctx context.Context, stdin io.Reader, _, stderr io.Writer) error {
	switch {
	case p.topic == "" && p.to == 0:
		return usagef("pub needs -topic or -to (see smq help pub)")
	case p.topic != "" && p.to != 0:
		return usagef("-topic and -to exclude each other")
	case p.count < 0:
		return usagef("-count must not be negative")
	case p.rate < 0:
		return usagef("-rate must not be negative")
	case p.msg != nil && len(*p.msg) > client.MaxPayload:
		return usagef("-m is %d bytes, at most %d fit one message", len(*p.msg), client.MaxPayload)
	}
	opts, err := p.options()
	if err != nil {
		return err
	}
	c, err := p.dial(ctx, opts)
	if err != nil {
		return ignoreInterrupt(err)
	}
	defer c.Close()

	next := p.source(ctx, stdin)
	var tick <-chan time.Time
	if p.rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / p.rate))
		defer t.Stop()
		tick = t.C
	}
	for n := 0; p.count == 0 || n < p.count; n++ {
		payload, err := next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return ignoreInterrupt(err)
		}
		if tick != nil && n > 0 {
			select {
			case <-tick:
			case <-ctx.Done():
				return nil
			}
		}
		octx, cancel := p.opctx(ctx)
		if p.to != 0 {
			err = c.PublishTo(octx, p.to, payload)
		} else {
			err = c.Publish(octx, p.topic, payload)
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return nil
}

// source returns the function that yields the payloads: -m's message (once
// unless -count says otherwise), or the lines of stdin until io.EOF.
func (p *pubCmd) source(ctx context.Context, stdin io.Reader) func() ([]byte, error) {
	if p.msg != nil {
		if p.count == 0 {
			p.count = 1
		}
		msg := []byte(*p.msg)
		return func() ([]byte, error) { return msg, nil }
	}
	type line struct {
		b   []byte
		err error
	}
	lines := make(chan line)
	done := ctx.Done()
	// A goroutine reads so that an interrupt does not wait for input. It
	// ends at the end of input or at the interrupt.
	go func() {
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 0, 4<<10), client.MaxPayload+1) // a full line and its newline
		n := 0
		for sc.Scan() {
			n++
			select {
			case lines <- line{b: append([]byte(nil), sc.Bytes()...)}:
			case <-done:
				return
			}
		}
		err := sc.Err()
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line %d of standard input is over %d bytes, the most one message holds", n+1, client.MaxPayload)
		} else if err != nil {
			err = fmt.Errorf("reading standard input: %w", err)
		} else {
			err = io.EOF
		}
		select {
		case lines <- line{err: err}:
		case <-done:
		}
	}()
	return func() ([]byte, error) {
		select {
		case l := <-lines:
			return l.b, l.err
		case <-done:
			return nil, errInterrupted
		}
	}
}

type pingCmd struct {
	*common
	count int
}

func (p *pingCmd) run(ctx context.Context, _ io.Reader, stdout, _ io.Writer) error {
	if p.count < 1 {
		return usagef("-count must be at least 1")
	}
	opts, err := p.options()
	if err != nil {
		return err
	}
	start := time.Now()
	c, err := p.dial(ctx, opts)
	if err != nil {
		return ignoreInterrupt(err)
	}
	defer c.Close()
	fmt.Fprintf(stdout, "connected to %s: connack %v, etid %s, in %v\n",
		p.url, smq.CodeAccepted, etid(c.ETID()), time.Since(start).Round(time.Microsecond))
	for range p.count {
		octx, cancel := p.opctx(ctx)
		rtt, err := c.Ping(octx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(stdout, "pong in %v\n", rtt.Round(time.Microsecond))
	}
	return nil
}

// etid formats an ETID as the console does: 0x and 8 hex digits.
func etid(id uint32) string { return fmt.Sprintf("0x%08x", id) }

func ignoreInterrupt(err error) error {
	if errors.Is(err, errInterrupted) {
		return nil
	}
	return err
}
