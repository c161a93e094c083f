//go:build unix

package childproc

import (
	"os/exec"
	"reflect"
	"sync"
	"syscall"
	"time"
)

// KillAfter is how long Stop waits after SIGTERM before SIGKILL.
const KillAfter = 3 * time.Second

// Process is a program running as the test's own child, leader of a
// process group of its own, its standard output and error in Out.
type Process struct {
	Cmd *exec.Cmd
	Out Tail

	done     chan struct{} // closed when Cmd.Wait returns
	err      error         // Cmd.Wait's result, set before done is closed
	stopOnce sync.Once
	crashed  bool // set by Stop: the process had exited already
}

// Start starts cmd (its Path, Args, Dir and Env as given) in a process
// group of its own, writing its output to Out. Where the platform can
// (Linux, FreeBSD), the child gets SIGTERM if the test binary dies without
// running its cleanups (a -timeout panic, a kill).
func Start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = &p.Out
	cmd.Stderr = &p.Out
	cmd.WaitDelay = KillAfter // in case a child of the program holds the output pipe
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited (Cmd.Wait's result), once Done is closed.
func (p *Process) Err() error { return p.err }

// Crashed reports, once Stop has returned, whether the process had exited
// before Stop.
func (p *Process) Crashed() bool { return p.crashed }

// Stop ends the process group and waits for the process: SIGTERM, then
// SIGKILL after KillAfter; Cmd.Wait has reaped it when Stop returns. It
// may be called more than once.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		// The process leads the group. It is signalled only while Cmd.Wait
		// has not returned, so the id is still its own.
		pgid := p.Cmd.Process.Pid
		select {
		case <-p.done:
			p.crashed = true
		default:
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(KillAfter):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				<-p.done
			}
		}
		// The programs run here start no children, so the group should be
		// empty now; sweep whatever is not. While a member lives, no other
		// group can take the id.
		if syscall.Kill(-pgid, 0) == nil {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
}

// setParentDeathSignal sets SIGTERM as the parent-death signal. The field
// exists on Linux and FreeBSD only, hence reflection rather than a file per
// platform.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig")
	if f.IsValid() && f.Type() == reflect.TypeFor[syscall.Signal]() {
		f.Set(reflect.ValueOf(syscall.SIGTERM))
	}
}
