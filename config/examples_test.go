package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/smqgw/smqgw/config"
)

// fileKeys are the keys whose values name files the loader checks. An
// example file's real paths (/etc/smqgw/...) do not exist here, so
// materialize creates them under a temporary directory.
var fileKeys = map[string]bool{"client_ca": true, "client_crl": true, "cert_file": true, "key_file": true, "acme_directory_ca": true, "ca_file": true,
	"ca": true, "nats_ca": true, "nats_cert": true, "nats_key": true, "nats_creds": true}

// TestExamples loads every configs/*.toml, so that a new example is
// covered by adding the file.
func TestExamples(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	files, err := filepath.Glob("../configs/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := config.Load(materialize(t, file))
			if err != nil {
				t.Fatalf("%s:\n%v", file, err)
			}
			if len(c.Listeners) == 0 {
				t.Errorf("no listeners")
			}
		})
	}
}

// materialize copies the config file into a temporary directory, creates
// every file it references there (under dir/files/PATH) and rewrites the
// references to match. It returns the copy's path.
func materialize(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	dir := t.TempDir()
	src := string(data)
	for _, ref := range fileRefs(raw) {
		target := filepath.Join(dir, "files", ref)
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, []byte("test placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		quoted := fmt.Sprintf("%q", ref)
		if !strings.Contains(src, quoted) {
			t.Fatalf("%s: cannot find %s to rewrite", file, quoted)
		}
		src = strings.ReplaceAll(src, quoted, fmt.Sprintf("%q", target))
	}
	out := filepath.Join(dir, filepath.Base(file))
	if err := os.WriteFile(out, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// fileRefs returns the values of the fileKeys anywhere in v.
func fileRefs(v any) []string {
	var refs []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if !fileKeys[k] {
				refs = append(refs, fileRefs(e)...)
				continue
			}
			switch e := e.(type) {
			case string:
				refs = append(refs, e)
			case []any:
				for _, s := range e {
					if s, ok := s.(string); ok {
						refs = append(refs, s)
					}
				}
			}
		}
	case []map[string]any:
		for _, e := range v {
			refs = append(refs, fileRefs(e)...)
		}
	case []any:
		for _, e := range v {
			refs = append(refs, fileRefs(e)...)
		}
	}
	return refs
}
