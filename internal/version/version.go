// Package version says which build of smqgw this is: the version, commit
// and build date stamped by the release build (go build -ldflags "-X
// github.com/smqgw/smqgw/internal/version.Version=v1.2.3 ..."), else what
// the Go toolchain recorded in the binary (go install ...@v1.2.3 records
// the module version; a build in a git checkout records the commit and its
// time).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Stamped by the release build with -ldflags -X; empty otherwise.
var (
	Version string
	Commit  string
	Date    string
)

// Info is one build's identity.
type Info struct {
	Version   string `json:"version"`    // "v1.2.3", or "devel"
	Commit    string `json:"commit"`     // the git commit, "" if unknown; "+dirty" when built from a modified tree
	Date      string `json:"date"`       // the commit's or the build's time (RFC 3339), "" if unknown
	GoVersion string `json:"go_version"` // the Go toolchain that built it
}

// Get returns this binary's Info.
func Get() Info {
	return get(Version, Commit, Date, debug.ReadBuildInfo)
}

func get(v, commit, date string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: v, Commit: commit, Date: date, GoVersion: runtime.Version()}
	bi, ok := read()
	if ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				if info.Date == "" {
					info.Date = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && commit == "" && info.Commit != "" {
			info.Commit += "+dirty"
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	return info
}

// String is the one line a version command prints: "smqgw v1.2.3 (commit
// 0123abcd, 2026-12-06T10:00:00Z, go1.26.8)" with name first.
func (i Info) String() string {
	s := i.Version
	var extra []any
	format := ""
	if i.Commit != "" {
		format += "commit %s, "
		c := i.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		extra = append(extra, c)
	}
	if i.Date != "" {
		format += "%s, "
		extra = append(extra, i.Date)
	}
	format += "%s"
	extra = append(extra, i.GoVersion)
	return s + " (" + fmt.Sprintf(format, extra...) + ")"
}
