package certs

import (
	"io/fs"
	"os"
	"time"
)

// DefaultWatchInterval is how often smqgw looks at its certificate, key, CA
// and CRL files for changes.
const DefaultWatchInterval = 5 * time.Second

// Watcher notices changes to a set of files by polling: it compares each
// file's identity, size and modification time with what it saw last, so
// replacing a file by rename (as certbot, cert-manager and Kubernetes
// secret volumes do) and writing it in place are both seen, and so is a
// file that disappears or comes back. Polling needs no platform support and
// cannot miss a change that happens while a reload runs. A Watcher is not
// safe for concurrent use.
type Watcher struct {
	files []string
	last  []fs.FileInfo
}

// NewWatcher records the current state of files.
func NewWatcher(files ...string) *Watcher {
	w := &Watcher{files: append([]string(nil), files...)}
	w.last = w.stat()
	return w
}

// Changed reports whether any file changed since NewWatcher or the last
// call that returned true.
func (w *Watcher) Changed() bool {
	now := w.stat()
	if sameStats(w.last, now) {
		return false
	}
	w.last = now
	return true
}

func (w *Watcher) stat() []fs.FileInfo {
	st := make([]fs.FileInfo, len(w.files))
	for i, f := range w.files {
		st[i], _ = os.Stat(f) // nil when missing: a change when it comes back
	}
	return st
}

func sameStats(a, b []fs.FileInfo) bool {
	for i := range a {
		x, y := a[i], b[i]
		switch {
		case x == nil || y == nil:
			if x != y {
				return false
			}
		case !os.SameFile(x, y) || x.Size() != y.Size() || !x.ModTime().Equal(y.ModTime()):
			return false
		}
	}
	return true
}
