package proxytest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the proxy if the test binary dies
// without running its cleanups (a panic, a -timeout): nothing is left
// behind even then.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
