//go:build !linux

package proxytest

import "os/exec"

// dieWithParent does nothing where the kernel cannot tie a child's life to
// its parent's; the test's cleanup still stops the proxy.
func dieWithParent(*exec.Cmd) {}
