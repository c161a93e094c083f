// Package completetest checks the completion scripts of package complete
// in the commands' tests.
package completetest

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// Check fails tb unless script, a completion script for shell ("bash" or
// "zsh"), names every one of words as a word of its own and parses in that
// shell. bash is needed when CI=true; zsh, not among Debian's basics, is
// left out where it is not installed.
func Check(tb testing.TB, shell, script string, words []string) {
	tb.Helper()
	for _, w := range words {
		if !regexp.MustCompile(`[ "(|/]` + regexp.QuoteMeta(w) + `[ ")|]`).MatchString(script) {
			tb.Errorf("the %s script does not name %q", shell, w)
		}
	}
	sh, err := exec.LookPath(shell)
	if err != nil {
		if shell == "bash" && os.Getenv("CI") == "true" {
			tb.Fatalf("bash is needed: %v", err)
		}
		tb.Skipf("%s is not installed", shell)
	}
	cmd := exec.Command(sh, "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Errorf("%s -n: %v\n%s", shell, err, out)
	}
}
