// Command smqpkg builds smqgw's Debian packages: for each architecture it
// cross-compiles smqgw and smq (CGO_ENABLED=0, the version stamped into
// internal/version) and packs them with nfpm, with /etc/smqgw/smqgw.toml
// (a conffile), the systemd unit and the maintainer scripts of packaging/.
//
//	go run ./cmd/smqpkg -version v0.1.0 -out dist/
//
// It runs from anywhere inside the module; it needs the go command and, for
// the commit and date, git (else they are left out).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "smqpkg: error: %v\n", err)
		os.Exit(2)
	}
}

// An arch is one target: its Go settings and its Debian name.
type arch struct {
	deb, goarch, goarm string
}

var arches = []arch{
	{"amd64", "amd64", ""},
	{"arm64", "arm64", ""},
	{"armhf", "arm", "7"},
}

// options are the flags.
type options struct {
	version, commit, date string
	out                   string
	arches                []arch
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("smqpkg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.version, "version", "", "the `version` to stamp and package, as v1.2.3 (required)")
	fs.StringVar(&o.out, "out", "dist", "the `directory` for the packages")
	archList := fs.String("arch", "amd64,arm64,armhf", "the Debian `architectures`, comma-separated")
	fs.StringVar(&o.commit, "commit", "", "the commit to stamp (default: git rev-parse HEAD, +dirty for a modified tree)")
	fs.StringVar(&o.date, "date", "", "the build date to stamp, RFC 3339 (default: the commit's time)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: smqpkg -version v1.2.3 [-out DIR] [-arch amd64,arm64,armhf]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see smqpkg -h)", fs.Arg(0))
	}
	if !strings.HasPrefix(o.version, "v") || strings.ContainsAny(o.version, " /") {
		return fmt.Errorf("invalid -version %q: expected v1.2.3", o.version)
	}
	for _, name := range strings.Split(*archList, ",") {
		a, ok := findArch(name)
		if !ok {
			return fmt.Errorf("unknown -arch %q: expected amd64, arm64 or armhf", name)
		}
		o.arches = append(o.arches, a)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if o.commit == "" {
		o.commit = gitCommit(ctx, root)
	}
	mtime := time.Now().UTC().Truncate(time.Second)
	if o.date == "" {
		if t, err := gitTime(ctx, root); err == nil {
			mtime = t
		}
		o.date = mtime.Format(time.RFC3339)
	} else if mtime, err = time.Parse(time.RFC3339, o.date); err != nil {
		return fmt.Errorf("invalid -date %q: expected RFC 3339", o.date)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("smqpkg: %w", err)
	}
	work, err := os.MkdirTemp("", "smqpkg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	unit, err := packagedUnit(filepath.Join(root, "configs", "smqgw.service"))
	if err != nil {
		return err
	}
	unitFile := filepath.Join(work, "smqgw.service")
	if err := os.WriteFile(unitFile, unit, 0o644); err != nil {
		return err
	}
	for _, a := range o.arches {
		bin := filepath.Join(work, a.deb)
		for _, cmd := range []string{"smqgw", "smq"} {
			if err := build(ctx, root, a, o, cmd, filepath.Join(bin, cmd)); err != nil {
				return err
			}
		}
		file, err := pack(root, a, o, bin, unitFile, mtime)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, file)
	}
	return nil
}

func findArch(name string) (arch, bool) {
	for _, a := range arches {
		if a.deb == name {
			return a, true
		}
	}
	return arch{}, false
}

// build cross-compiles ./cmd/NAME for a into file, stamping the version.
func build(ctx context.Context, root string, a arch, o options, name, file string) error {
	pkg := "github.com/smqgw/smqgw/internal/version"
	ldflags := fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s -X %s.Date=%s", pkg, o.version, pkg, o.commit, pkg, o.date)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", file, "./cmd/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a.goarch, "GOARM="+a.goarm)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/%s for %s: %w", name, a.deb, err)
	}
	return nil
}

// pack writes the .deb of one architecture into o.out and returns its path.
func pack(root string, a arch, o options, bin, unitFile string, mtime time.Time) (string, error) {
	pkg := filepath.Join(root, "packaging")
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:       "smqgw",
		Arch:       a.deb,
		Version:    o.version,
		Section:    "net",
		Priority:   "optional",
		Maintainer: "The smqgw authors <smqgw@users.noreply.github.com>",
		Description: "TLS gateway for SMQ, the pub/sub protocol of the Barracuda App Server and Mako Server\n" +
			"smqgw terminates TLS for browsers (wss://) and devices (raw SMQ over TLS), checks\n" +
			"their client certificates, and relays sessions to an SMQ broker or its embedded one.\n" +
			"Also holds smq, the command-line SMQ client.",
		Homepage: "https://github.com/smqgw/smqgw",
		License:  "Apache-2.0",
		MTime:    mtime,
		Overridables: nfpm.Overridables{
			Contents: files.Contents{
				{Source: filepath.Join(bin, "smqgw"), Destination: "/usr/bin/smqgw", FileInfo: &files.ContentFileInfo{Mode: 0o755}},
				{Source: filepath.Join(bin, "smq"), Destination: "/usr/bin/smq", FileInfo: &files.ContentFileInfo{Mode: 0o755}},
				{Source: filepath.Join(pkg, "smqgw.toml"), Destination: "/etc/smqgw/smqgw.toml", Type: files.TypeConfigNoReplace, FileInfo: &files.ContentFileInfo{Mode: 0o644}},
				{Source: unitFile, Destination: "/lib/systemd/system/smqgw.service", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
				{Source: filepath.Join(root, "LICENSE"), Destination: "/usr/share/doc/smqgw/copyright", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
			},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(pkg, "postinst"),
				PreRemove:   filepath.Join(pkg, "prerm"),
				PostRemove:  filepath.Join(pkg, "postrm"),
			},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("smqpkg: %s: %w", a.deb, err)
	}
	file := filepath.Join(o.out, deb.Default.ConventionalFileName(info))
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(file)
		return "", fmt.Errorf("smqpkg: %s: %w", a.deb, err)
	}
	return file, f.Close()
}

// packagedUnit returns the unit at file with the programs in /usr/bin, where
// the package puts them, instead of /usr/local/bin.
func packagedUnit(file string) ([]byte, error) {
	unit, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	const from, to = "=/usr/local/bin/smqgw ", "=/usr/bin/smqgw "
	if !bytes.Contains(unit, []byte(from)) {
		return nil, fmt.Errorf("smqpkg: %s: no %q to rewrite", file, from)
	}
	return bytes.ReplaceAll(unit, []byte(from), []byte(to)), nil
}

// moduleRoot returns the directory of smqgw's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("smqpkg: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("smqpkg: not inside the smqgw module (run it from the checkout)")
	}
	return filepath.Dir(mod), nil
}

// gitCommit returns HEAD's commit, with "+dirty" when the tree is
// modified, or "" without git.
func gitCommit(ctx context.Context, root string) string {
	out, err := git(ctx, root, "rev-parse", "HEAD")
	if err != nil {
		return ""
	}
	if st, err := git(ctx, root, "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		out += "+dirty"
	}
	return out
}

// gitTime returns HEAD's commit time.
func gitTime(ctx context.Context, root string) (time.Time, error) {
	out, err := git(ctx, root, "log", "-1", "--format=%cI")
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339, out)
	return t.UTC(), err
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}
