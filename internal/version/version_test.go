package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	t.Parallel()
	build := func(v string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{Main: debug.Module{Version: v}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	for _, tc := range []struct {
		name            string
		v, commit, date string
		read            func() (*debug.BuildInfo, bool)
		want            Info
		wantString      string
	}{
		{"stamped", "v1.2.3", "0123456789abcdef0123", "2026-12-06T10:00:00Z", build("(devel)", "vcs.revision", "ffff"),
			Info{"v1.2.3", "0123456789abcdef0123", "2026-12-06T10:00:00Z", runtime.Version()},
			"v1.2.3 (commit 0123456789ab, 2026-12-06T10:00:00Z, " + runtime.Version() + ")"},
		{"go install @version", "", "", "", build("v0.9.0"),
			Info{"v0.9.0", "", "", runtime.Version()}, "v0.9.0 (" + runtime.Version() + ")"},
		{"checkout, modified", "", "", "", build("(devel)", "vcs.revision", "abc", "vcs.time", "2026-12-01T00:00:00Z", "vcs.modified", "true"),
			Info{"devel", "abc+dirty", "2026-12-01T00:00:00Z", runtime.Version()}, "devel (commit abc+dirty, 2026-12-01T00:00:00Z, " + runtime.Version() + ")"},
		{"no build info", "", "", "", func() (*debug.BuildInfo, bool) { return nil, false },
			Info{"devel", "", "", runtime.Version()}, "devel (" + runtime.Version() + ")"},
	} {
		got := get(tc.v, tc.commit, tc.date, tc.read)
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
		if s := got.String(); s != tc.wantString {
			t.Errorf("%s: String() = %q, want %q", tc.name, s, tc.wantString)
		}
	}
	if !strings.HasPrefix(Get().GoVersion, "go") {
		t.Errorf("Get().GoVersion = %q", Get().GoVersion)
	}
}
