package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/smqgw/smqgw/config"
)

// TestPackagedConfig: the package's /etc/smqgw/smqgw.toml and the
// container image's are valid as installed (smqgw -t accepts them).
func TestPackagedConfig(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", t.TempDir())
	for _, f := range []string{"smqgw.toml", "container.toml"} {
		if _, err := config.Load(filepath.Join("..", "..", "packaging", f)); err != nil {
			t.Error(err)
		}
	}
}

// TestPackagedUnit: the packaged unit runs the programs where the package
// puts them.
func TestPackagedUnit(t *testing.T) {
	unit, err := packagedUnit(filepath.Join("..", "..", "configs", "smqgw.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStartPre=/usr/bin/smqgw -t -config /etc/smqgw/smqgw.toml\n", "ExecStart=/usr/bin/smqgw -config /etc/smqgw/smqgw.toml\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("packaged unit has no %q", want)
		}
	}
	if bytes.Contains(unit, []byte("=/usr/local/bin/")) {
		t.Errorf("packaged unit still runs a program from /usr/local/bin:\n%s", unit)
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, `invalid -version "": expected v1.2.3`},
		{[]string{"-version", "1.2.3"}, `invalid -version "1.2.3": expected v1.2.3`},
		{[]string{"-version", "v1.2.3", "-arch", "amd64,mips"}, `unknown -arch "mips": expected amd64, arm64 or armhf`},
		{[]string{"-version", "v1.2.3", "extra"}, `unexpected argument "extra" (see smqpkg -h)`},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := run(t.Context(), tt.args, &out, &errOut)
		if err == nil || err.Error() != tt.want {
			t.Errorf("run(%q) = %v, want %q", tt.args, err, tt.want)
		}
	}
}
