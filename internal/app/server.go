package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"github.com/smqgw/smqgw/config"
	"github.com/smqgw/smqgw/gateway"
)

// Server is a running smqgw: the gateway, the parts built from the
// configuration, and their upkeep. Reload puts a new configuration in
// force; Shutdown drains and stops.
type Server struct {
	file  string // "" for the zero-configuration demo
	log   *slog.Logger
	level *slog.LevelVar

	mu      sync.Mutex // serialises Reload and Shutdown
	cfg     *config.Config
	built   *Built
	gw      *gateway.Gateway
	stopRun func() // stops built.Run
	// stopRelease stops the memory policy (memory.go).
	stopRelease func()
}

// Start builds cfg (read from file, "" for the built-in demo) and serves
// it: the listeners, the admin endpoint if configured, and the
// certificates' upkeep (ACME obtains its own now that the listeners are
// up; files are reloaded when they change). level is the log level in
// force, which Reload sets.
func Start(cfg *config.Config, file string, log *slog.Logger, level *slog.LevelVar) (*Server, error) {
	built, err := Build(cfg, log)
	if err != nil {
		return nil, err
	}
	gw, err := gateway.New(built.Config)
	if err != nil {
		built.closeNode()
		return nil, err
	}
	if err := gw.Start(); err != nil {
		built.closeNode()
		return nil, err
	}
	if cfg.Admin.Address != "" {
		if err := gw.StartAdmin(cfg.Admin.Address); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.Limits.ShutdownGrace)
			defer cancel()
			_ = gw.Shutdown(sctx)
			built.closeNode()
			return nil, err
		}
	}
	s := &Server{file: file, log: log, level: level, cfg: cfg, built: built, gw: gw}
	s.runBuilt()
	s.stopRelease = releaseMemory(gw)
	return s, nil
}

// Gateway returns the gateway.
func (s *Server) Gateway() *gateway.Gateway { return s.gw }

// Built returns the parts in force.
func (s *Server) Built() *Built {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.built
}

// Config returns the configuration in force.
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// runBuilt starts the current build's certificate upkeep.
func (s *Server) runBuilt() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b := s.built
	wg.Go(func() { b.Run(ctx) })
	s.stopRun = func() { cancel(); wg.Wait() }
}

// Reload re-reads the configuration file and puts it in force for new
// sessions (SIGHUP); established sessions go on. A file that does not
// validate, or whose certificates or CAs do not load, is rejected with
// each problem logged, and the running configuration stays. Changes that
// need a restart are logged by name. The embedded broker is kept, with
// its sessions and topics; its [broker] limits change in place (the queue
// sizes for sessions that start afterwards). The demo, with no file,
// reloads its certificates.
func (s *Server) Reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.built.Metrics
	if s.file == "" {
		s.log.Info("SIGHUP: reloading certificates (the zero-configuration demo has no file to re-read)")
		m.Reloaded(s.built.Reload()) // each failure is logged; what failed stays as it was
		return
	}
	s.log.Info("SIGHUP: reloading the configuration", "file", s.file)
	reject := func(err error) {
		var ce *config.Error
		switch {
		case errors.As(err, &ce):
			for _, p := range ce.Problems {
				s.log.Error("reload rejected: " + p.String())
			}
		default:
			for _, e := range splitErrors(err) {
				s.log.Error("reload rejected: " + e.Error())
			}
		}
		s.log.Error("reload rejected: the running configuration stays in force", "file", s.file)
		m.Reloaded(err)
	}
	cfg, err := config.Load(s.file)
	if err != nil {
		reject(err)
		return
	}
	next, err := s.built.Rebuild(cfg)
	if err != nil {
		reject(err)
		return
	}
	restart, err := s.gw.Apply(next.Config)
	if err != nil {
		if next.node != s.built.node {
			next.closeNode() // started by this rebuild, for a broker not put in force
		}
		reject(err)
		return
	}
	old := s.cfg
	if cfg.Admin.Address != old.Admin.Address {
		restart = append(restart, fmt.Sprintf("admin.address %q (still %q)", cfg.Admin.Address, old.Admin.Address))
		cfg.Admin = old.Admin
	}
	if !reflect.DeepEqual(cfg.Cluster, old.Cluster) && s.built.broker() != nil {
		// The node lives as long as the embedded broker, which is kept.
		restart = append(restart, "[cluster] (the node keeps its settings)")
		cfg.Cluster = old.Cluster
	}
	if cfg.Log.Format != old.Log.Format {
		restart = append(restart, fmt.Sprintf("log.format %q (still %q)", cfg.Log.Format, old.Log.Format))
		cfg.Log.Format = old.Log.Format
	}
	s.level.Set(cfg.Log.Level)
	if br := next.EmbeddedBroker(); br != nil {
		br.SetLimits(cfg.Broker) // kept across reloads: its limits change in place
	}
	for _, r := range restart {
		s.log.Warn("reload: this change needs a restart", "change", r)
	}
	s.stopRun()
	s.built, s.cfg = next, cfg
	s.runBuilt()
	m.Reloaded(nil)
	s.log.Info("configuration reloaded: new sessions use it, established ones go on", "file", s.file,
		"needs_restart", len(restart))
}

// Shutdown stops the certificate upkeep, drains the sessions for the
// configured shutdown_grace and closes what is left, then stops the
// embedded broker and its cluster node.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopRun()
	s.stopRelease()
	grace := s.cfg.Limits.ShutdownGrace
	s.log.Info("shutting down", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.gw.Shutdown(sctx)
	if b := s.built.EmbeddedBroker(); b != nil {
		_ = b.Shutdown(sctx)
	}
	if n := s.built.ClusterNode(); n != nil {
		if err := n.Close(); err != nil {
			s.log.Warn("cluster node", "err", err)
		}
	}
	if err != nil {
		s.log.Warn("sessions cut at the end of the grace period", "err", err)
	}
}

// closeNode closes the cluster node of a build that did not start.
func (b *Built) closeNode() {
	if b.node != nil {
		_ = b.node.Close()
	}
}

// splitErrors undoes errors.Join.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
