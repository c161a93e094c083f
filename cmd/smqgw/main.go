// Command smqgw is the SMQ gateway: it terminates TLS for WebSocket and raw
// SMQ clients, checks their certificates, and relays their sessions to an
// SMQ broker (its own embedded one by default).
//
//	smqgw                      the zero-configuration demo
//	smqgw -config FILE         run with a configuration file
//	smqgw -t -config FILE      check a configuration file and exit
//	smqgw certs init|client    make a dev CA, server and client certificates
//	                           (see smqgw certs -h)
//	smqgw version              print the version and build details
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
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "smqgw: error: %v\n", err)
		}
		os.Exit(1)
	}
}

// run loads the configuration and serves until ctx is done. If ready is not
// nil, the running gateway is sent on it once every listener is up.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- *gateway.Gateway) error {
	if len(args) > 0 && args[0] == "certs" {
		return runCerts(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintln(stdout, version())
		return nil
	}
	fs := flag.NewFlagSet("smqgw", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration `file` (TOML); none: the zero-configuration demo")
	check := fs.Bool("t", false, "check the configuration and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: smqgw [-config FILE] [-t]\n       smqgw certs init|client ... (dev certificates; see smqgw certs -h)\n       smqgw version\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see smqgw -h)", fs.Arg(0))
	}
	var cfg *config.Config
	if *file == "" {
		cfg = config.Default()
	} else {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			return err
		}
	}
	if *check {
		fmt.Fprintf(stdout, "smqgw: configuration %s is valid\n", describe(*file))
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

// version describes this build: the module version (or "devel"), the
// commit and its time when built from a checkout, and the Go version.
func version() string {
	v, rev, at, dirty := "devel", "", "", false
	goVersion := runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := "smqgw " + v
	if rev != "" {
		out += " commit " + rev[:min(12, len(rev))]
		if dirty {
			out += "+dirty"
		}
		if at != "" {
			out += " (" + at + ")"
		}
	}
	return out + " " + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
