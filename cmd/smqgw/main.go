// Command smqgw is the SMQ gateway. For now it runs the embedded SMQ broker
// on a plain listener; TLS termination and upstream routing come with the
// gateway itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/smqgw/smqgw/broker"
)

// defaultListen is where the zero-configuration demo serves SMQ.
const defaultListen = "127.0.0.1:9000"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "smqgw: error: %v\n", err)
		}
		os.Exit(1)
	}
}

// run starts the broker and serves until ctx is done. If ready is not nil,
// the listening address is sent on it once the listener is up.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- net.Addr) error {
	fs := flag.NewFlagSet("smqgw", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultListen, "`address` to serve SMQ on (raw and WebSocket, plain)")
	grace := fs.Duration("grace", 5*time.Second, "how long to wait for clients on shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see smqgw -h)", fs.Arg(0))
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("cannot listen: %w", err)
	}
	b := broker.New(broker.Config{Logger: log})
	log.Info("serving SMQ (embedded broker)", "address", l.Addr().String(),
		"raw", "http://"+l.Addr().String()+"/smq", "websocket", "ws://"+l.Addr().String()+"/smq")
	if ready != nil {
		ready <- l.Addr()
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", *grace)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	_ = b.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, broker.ErrClosed) {
		return err
	}
	return nil
}
