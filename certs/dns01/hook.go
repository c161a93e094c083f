package dns01

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// DefaultHookTimeout bounds one run of a hook.
const DefaultHookTimeout = 2 * time.Minute

// hookOutput is how much of a hook's standard error an error quotes.
const hookOutput = 2 << 10

// Hook sets TXT records by running a program, with the convention of
// lego's exec provider and acme.sh hooks:
//
//	PATH present _acme-challenge.example.com. VALUE
//	PATH cleanup _acme-challenge.example.com. VALUE
//
// The name is fully qualified, with its final dot. Exit status 0 is
// success; otherwise the error quotes the end of the program's standard
// error. The program need not wait for the record to propagate: the
// caller checks that (Propagation).
type Hook struct {
	// Path is the program. Required.
	Path string
	// Timeout bounds each run; the program is killed after it. Default
	// DefaultHookTimeout.
	Timeout time.Duration
}

// Present runs "Path present FQDN VALUE".
func (h *Hook) Present(ctx context.Context, fqdn, value string) error {
	return h.run(ctx, "present", fqdn, value)
}

// CleanUp runs "Path cleanup FQDN VALUE".
func (h *Hook) CleanUp(ctx context.Context, fqdn, value string) error {
	return h.run(ctx, "cleanup", fqdn, value)
}

func (h *Hook) run(ctx context.Context, op, fqdn, value string) error {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !strings.HasSuffix(fqdn, ".") {
		fqdn += "."
	}
	cmd := exec.CommandContext(ctx, h.Path, op, fqdn, value)
	var stderr tail
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second // a child left holding stderr does not hold us
	err := cmd.Run()
	if err == nil {
		return nil
	}
	what := fmt.Sprintf("dns01: hook %s %s %s", h.Path, op, fqdn)
	out := stderr.String()
	if out != "" {
		out = ": " + out
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("%s: did not finish within %v, killed%s", what, timeout, out)
	case errors.As(err, &ee):
		return fmt.Errorf("%s: %v%s", what, ee, out)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tail keeps the last hookOutput bytes written to it, trimmed of
// surrounding space; it is safe for concurrent use.
type tail struct {
	mu  sync.Mutex
	buf []byte
	cut bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*hookOutput {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-hookOutput:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	cut := t.cut
	if len(b) > hookOutput {
		b, cut = b[len(b)-hookOutput:], true
	}
	s := strings.TrimSpace(string(bytes.ToValidUTF8(b, []byte("?"))))
	if cut && s != "" {
		s = "..." + s
	}
	return s
}
