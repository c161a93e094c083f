// Command smqgw is the SMQ gateway: it terminates TLS for WebSocket and raw
// SMQ clients, checks their certificates, and relays their sessions to an
// SMQ broker (its own embedded one by default).
//
//	smqgw                      the zero-configuration demo
//	smqgw -config FILE         run with a configuration file
//	smqgw -t -config FILE      check a configuration file and exit
//	smqgw -t -no-files -config FILE
//	                           check it without reading the files it names
//	smqgw certs init|client|node
//	                           make a dev CA, server, client and cluster node
//	                           certificates (see smqgw help certs)
//	smqgw version              print the version and build details
//	smqgw completion bash|zsh  print a shell completion script
//	smqgw help [COMMAND]       print usage
//
// SIGHUP reloads the configuration file (and with it every certificate,
// key, client CA and CRL file) for new sessions, leaving established ones
// alone; SIGINT and SIGTERM drain and shut down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/app"
	"github.com/smqgw/smqgw/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	stop()
	os.Exit(report(err, os.Stderr))
}

const usage = `smqgw is the SMQ gateway: it terminates TLS for WebSocket and raw SMQ
clients, checks their certificates, and relays their sessions to an SMQ
broker (its own embedded one by default).

Usage:
  smqgw [-config FILE]             serve: the zero-configuration demo, or FILE
  smqgw -t [-no-files] -config FILE
                                   check a configuration and exit
  smqgw certs init|client|node ...
                                   make a dev CA, server, client and cluster
                                   node certificates (see smqgw help certs)
  smqgw version                    print the version and build details
  smqgw completion bash|zsh        print a shell completion script
  smqgw help [COMMAND]             show this help, or a command's

Flags:
`

// usageError is an error in the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// report prints err on stderr and returns the exit code: 0 for none, 2
// for a bad command line, 1 for anything else. A configuration's problems
// are printed one per line, each starting with FILE:LINE:COL, as compilers
// print theirs; any other error is one line "smqgw: error: ...".
func report(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintln(stderr, ce)
		return 1
	}
	fmt.Fprintf(stderr, "smqgw: error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// rootFlags are smqgw's own flags.
type rootFlags struct {
	file    string
	check   bool
	noFiles bool
	version bool
}

func newRootFlags(f *rootFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("smqgw", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.file, "config", "", "configuration `file` (TOML); none: the zero-configuration demo")
	fs.BoolVar(&f.check, "t", false, "check the configuration and exit")
	fs.BoolVar(&f.noFiles, "no-files", false, "with -t: check syntax and semantics only, without opening the certificate, key, CA and other files the configuration names (for CI of a configuration repository)")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	return fs
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usage)
	var f rootFlags
	fs := newRootFlags(&f)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func printVersion(w io.Writer) {
	fmt.Fprintln(w, "smqgw "+version.Get().String())
}

// help runs "smqgw help [COMMAND]".
func help(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		printUsage(stdout)
		return nil
	}
	if len(args) > 1 && args[0] != "certs" {
		return usagef("help: unexpected argument %q (see smqgw -h)", args[1])
	}
	switch args[0] {
	case "certs":
		return runCerts(append([]string{"help"}, args[1:]...), stdout)
	case "version":
		fmt.Fprintln(stdout, "usage: smqgw version (or smqgw -version)\n\nPrints the version, commit, build date and Go version.")
		return nil
	case "completion":
		return runCompletionCmd([]string{"-h"}, stdout)
	case "help":
		printUsage(stdout)
		return nil
	}
	return usagef("help: unknown command %q (see smqgw -h)", args[0])
}

// run loads the configuration and serves until ctx is done. If ready is not
// nil, the running gateway is sent on it once every listener is up.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- *gateway.Gateway) error {
	if len(args) > 0 {
		switch args[0] {
		case "certs":
			return runCerts(args[1:], stdout)
		case "version":
			if len(args) > 1 {
				return usagef("version: unexpected argument %q (see smqgw help version)", args[1])
			}
			printVersion(stdout)
			return nil
		case "completion":
			return runCompletionCmd(args[1:], stdout)
		case "help":
			return help(args[1:], stdout)
		}
	}
	var f rootFlags
	fs := newRootFlags(&f)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return nil
		}
		return usagef("%v (see smqgw -h)", err)
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q (see smqgw -h)", fs.Arg(0))
	case f.version:
		printVersion(stdout)
		return nil
	case f.noFiles && !f.check:
		return usagef("-no-files goes with -t (see smqgw -h)")
	}
	file := &f.file
	var cfg *config.Config
	if *file == "" {
		cfg = config.Default()
	} else {
		var err error
		load := config.Load
		if f.noFiles {
			load = config.LoadNoFiles
		}
		if cfg, err = load(*file); err != nil {
			return err
		}
	}
	if f.check {
		if f.noFiles {
			fmt.Fprintf(stdout, "smqgw: configuration %s is valid (the files it names were not read)\n", describe(*file))
		} else {
			fmt.Fprintf(stdout, "smqgw: configuration %s is valid\n", describe(*file))
		}
		return nil
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	log := newLogger(stderr, cfg.Log.Format, level)
	// From here on SIGHUP reloads (once serving) instead of killing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv, err := app.Start(cfg, *file, log, level)
	if err != nil {
		return err
	}
	gw := srv.Gateway()
	banner(stdout, gw, cfg, srv.Built())
	notifyState(log, "READY=1\nSTATUS=serving")
	if ready != nil {
		ready <- gw
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			notifyState(log, reloading())
			srv.Reload()
			notifyState(log, "READY=1\nSTATUS=serving")
		}
	}
	notifyState(log, "STOPPING=1\nSTATUS=draining sessions")
	srv.Shutdown()
	return nil
}

// notifyState tells systemd the state, logging a failure.
func notifyState(log *slog.Logger, state string) {
	if err := notify(state); err != nil {
		log.Warn("cannot notify systemd", "err", err)
	}
}

func describe(file string) string {
	if file == "" {
		return "(built-in demo)"
	}
	return file
}

func newLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// banner tells a person where to connect.
func banner(w io.Writer, gw *gateway.Gateway, cfg *config.Config, built *app.Built) {
	fmt.Fprintln(w, "smqgw is running.")
	var try string
	for _, l := range cfg.Listeners {
		addr := gw.Addr(l.Name).String()
		path := "/smq"
		if len(l.Routes) > 0 && l.Routes[0].Path != "/" {
			path = strings.TrimSuffix(l.Routes[0].Path, "/")
		}
		if l.TLS != "" {
			fmt.Fprintf(w, "  %-6s wss://%s%s   https://%s%s (raw SMQ over TLS)\n", l.Name, addr, path, addr, path)
			if try == "" {
				try = "https://" + addr + path
			}
		} else {
			fmt.Fprintf(w, "  %-6s ws://%s%s   http://%s%s (plain, for LAN devices)\n", l.Name, addr, path, addr, path)
		}
	}
	for _, l := range cfg.Listeners {
		for _, r := range l.Routes {
			if r.Console {
				scheme := "http"
				if l.TLS != "" {
					scheme = "https"
				}
				fmt.Fprintf(w, "  %-6s %s://%s%s (the console, in a browser)\n", "web", scheme, gw.Addr(l.Name), r.Path)
			}
		}
	}
	if a := gw.AdminAddr(); a != nil {
		fmt.Fprintf(w, "  %-6s http://%s/metrics   /healthz   /readyz\n", "admin", a)
	}
	if built.DevCAFile != "" {
		fmt.Fprintf(w, "  dev CA to trust: %s\n", built.DevCAFile)
		if try != "" {
			fmt.Fprintf(w, "  try: go run ./cmd/smq sub -url %s -ca %s -topic demo\n", try, built.DevCAFile)
		}
	}
}
