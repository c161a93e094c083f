package web

import (
	"os"
	"os/exec"
	"testing"
)

// TestJSClient runs smq.js's own tests (smq.test.js) with node's test
// runner. Without node the test is skipped, except in CI, where .ci/run
// installs it.
func TestJSClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is required in CI (.ci/run installs Debian's nodejs)")
		}
		t.Skip("node is not installed")
	}
	out, err := exec.Command(node, "--test", "smq.test.js").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test smq.test.js: %v\n%s", err, out)
	}
}
