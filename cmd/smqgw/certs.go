package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smqgw/smqgw/certs"
	"github.com/smqgw/smqgw/config"
)

const certsUsage = `smqgw certs makes a development PKI for trying TLS and client certificates:
a CA, a server certificate, client certificates, and cluster node
certificates. Not for production.

Usage:
  smqgw certs init [-dir D] [-hosts h1,h2,...]
      create a CA (D/ca.pem, D/ca-key.pem) and a server certificate for the
      hosts (D/server.pem, D/server-key.pem); what exists is reused
  smqgw certs client [-dir D] [-password P] [-days N] [-ou OU]... [-force] NAME
      issue a client certificate for NAME from the CA in D: D/NAME.pem,
      D/NAME-key.pem and D/NAME.p12 (key, certificate and CA, for browsers)
  smqgw certs node [-dir D] -hosts h1,h2,... [-days N] [-force] NAME
      issue a cluster node certificate for NAME from the CA in D, for the
      node's route address in -hosts, as server and client of the [cluster]
      routes: D/NAME.pem and D/NAME-key.pem

Flags:
  -dir D        the PKI directory (default: the demo's, %s)
  -hosts LIST   init: DNS names and IP addresses of the server certificate,
                comma-separated (default %s);
                node (required): the node's route address, as the other
                nodes' routes name it, and any other names of the node
  -password P   client: the .p12 password (default: a random one, printed);
                other local users may see a password given on the command line
  -days N       client, node: days the certificate is valid (default %d)
  -ou OU        client: an organizational unit of the subject (OU=OU), as
                allow_ou and topic permissions match; repeat for more
  -force        client, node: replace the files of an existing NAME

Keys are written with mode 0600. NAME is letters, digits, '.', '-', '_' and '@'.

Example (from the repository root; configs/mtls.toml uses these files):
  go run ./cmd/smqgw certs init -dir pki
  go run ./cmd/smqgw certs client -dir pki device-1
  go run ./cmd/smqgw certs client -dir pki -ou operators alice   # configs/fleet.toml
  go run ./cmd/smqgw certs node -dir pki -hosts 10.0.0.1 gw-a    # configs/cluster-a.toml
`

// runCerts runs "smqgw certs ..." (args without "certs").
func runCerts(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("certs: no command given: %s (see smqgw certs -h)", certsCommandList())
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && !slices.Contains(certsCommands, args[1]) && args[1] != "help" {
			return usagef("certs: unknown command %q: %s (see smqgw certs -h)", args[1], certsCommandList())
		}
		if len(args) > 2 {
			return usagef("certs help: unexpected argument %q (see smqgw certs -h)", args[2])
		}
		printCertsUsage(stdout)
		return nil
	case "init":
		return certsInit(args[1:], stdout)
	case "client":
		return certsClient(args[1:], stdout)
	case "node":
		return certsNode(args[1:], stdout)
	}
	return usagef("certs: unknown command %q: %s (see smqgw certs -h)", args[0], certsCommandList())
}

// certsCommands are the certs commands, for help and completion.
var certsCommands = []string{"init", "client", "node"}

// certsCommandList lists certsCommands for messages: "init, client or node".
func certsCommandList() string {
	n := len(certsCommands)
	return strings.Join(certsCommands[:n-1], ", ") + " or " + certsCommands[n-1]
}

// defaultDevDir is the dev PKI directory of the zero-configuration demo;
// "" when there is no state directory.
func defaultDevDir() string {
	if s := config.Default().StateDir; s != "" {
		return filepath.Join(s, "dev")
	}
	return ""
}

func printCertsUsage(w io.Writer) {
	dir := defaultDevDir()
	if dir == "" {
		dir = "none: no state directory, pass -dir"
	}
	fmt.Fprintf(w, certsUsage, dir, strings.Join(config.DefaultDevHosts, ","),
		int(certs.DefaultClientValidity/(24*time.Hour)))
}

// parseCerts parses the flags of a certs command. It returns done when
// the command has nothing left to do (help was printed).
func parseCerts(fs *flag.FlagSet, args []string, stdout io.Writer) (done bool, err error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCertsUsage(stdout)
			return true, nil
		}
		return false, usagef("%s: %v (see smqgw certs -h)", fs.Name(), err)
	}
	return false, nil
}

func checkDir(cmd, dir string) error {
	if dir == "" {
		return usagef("%s: no state directory for the default -dir: pass -dir", cmd)
	}
	return nil
}

type initFlags struct {
	dir   string
	hosts []string
}

func newInitFlags(f *initFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("certs init", flag.ContinueOnError)
	fs.StringVar(&f.dir, "dir", defaultDevDir(), "the PKI `directory`")
	f.hosts = append([]string(nil), config.DefaultDevHosts...)
	fs.Func("hosts", "`names` and addresses of the server certificate, comma-separated", hostsFlag(&f.hosts))
	return fs
}

// hostsFlag parses a -hosts value, comma-separated names, into *hosts,
// replacing what was there.
func hostsFlag(hosts *[]string) func(string) error {
	return func(s string) error {
		*hosts = (*hosts)[:0]
		for h := range strings.SplitSeq(s, ",") {
			h = strings.TrimSpace(h)
			if h == "" {
				return errors.New("empty host name")
			}
			*hosts = append(*hosts, h)
		}
		return nil
	}
}

func certsInit(args []string, stdout io.Writer) error {
	var f initFlags
	fs := newInitFlags(&f)
	dir, hosts := &f.dir, &f.hosts
	if done, err := parseCerts(fs, args, stdout); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("certs init: unexpected argument %q (see smqgw certs -h)", fs.Arg(0))
	}
	if err := checkDir("certs init", *dir); err != nil {
		return err
	}
	d, err := certs.EnsureDev(*dir, *hosts)
	if err != nil {
		return err
	}

	state := func(created bool) string {
		if created {
			return "created"
		}
		return "kept"
	}
	until := ""
	if d.Server.Leaf != nil {
		until = " until " + d.Server.Leaf.NotAfter.Format(time.DateOnly)
	}
	fmt.Fprintf(stdout, "Dev PKI in %s:\n", *dir)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\tCA certificate (%s): clients trust it (smq -ca), routes accept what it issues (client_ca)\n",
		d.CAFile, state(d.CreatedCA))
	fmt.Fprintf(tw, "  %s\tCA private key (%s, mode 0600): signs client certificates; keep it private\n",
		filepath.Join(*dir, certs.DevCAKeyFile), state(d.CreatedCA))
	fmt.Fprintf(tw, "  %s\tserver certificate (%s) for %s%s: cert_file\n",
		filepath.Join(*dir, certs.DevServerFile), state(d.IssuedServer), serverNames(d), until)
	fmt.Fprintf(tw, "  %s\tserver private key (%s, mode 0600): key_file\n",
		filepath.Join(*dir, certs.DevServerKeyFile), state(d.IssuedServer))
	tw.Flush()
	if *dir == defaultDevDir() {
		fmt.Fprintln(stdout, "\nThe zero-configuration demo (smqgw with no -config) serves this server certificate.")
	}
	fmt.Fprintf(stdout, "\nNext: issue a client certificate with\n  smqgw certs client -dir %s NAME\n", shellQuote(*dir))
	if abs, err := filepath.Abs(d.CAFile); err == nil {
		fmt.Fprintf(stdout, "and require client certificates of this CA on a route (see configs/mtls.toml):\n"+
			"  client_auth = \"require\"\n  client_ca = [%q]\n", abs)
	}
	return nil
}

// serverNames lists the names the server certificate is valid for.
func serverNames(d *certs.Dev) string {
	if d.Server.Leaf == nil {
		return "its hosts"
	}
	names := append([]string(nil), d.Server.Leaf.DNSNames...)
	for _, ip := range d.Server.Leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return strings.Join(names, ", ")
}

type clientFlags struct {
	dir, password string
	days          int
	force         bool
	ous           []string
}

func newClientFlags(f *clientFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("certs client", flag.ContinueOnError)
	fs.StringVar(&f.dir, "dir", defaultDevDir(), "the PKI `directory`")
	fs.StringVar(&f.password, "password", "", "the .p12 `password`")
	fs.IntVar(&f.days, "days", int(certs.DefaultClientValidity/(24*time.Hour)), "`days` the certificate is valid")
	fs.BoolVar(&f.force, "force", false, "replace the files of an existing NAME")
	fs.Func("ou", "an organizational `unit` of the subject", func(v string) error { f.ous = append(f.ous, v); return nil })
	return fs
}

func certsClient(args []string, stdout io.Writer) error {
	var cf clientFlags
	fs := newClientFlags(&cf)
	dir, password, days, force := &cf.dir, &cf.password, &cf.days, &cf.force
	// Flags may come before or after NAME.
	name, done, err := parseNamed(fs, args, stdout, "smqgw certs client [-dir D] NAME")
	if done || err != nil {
		return err
	}
	if *days < 1 {
		return usagef("certs client: -days %d: must be at least 1 (see smqgw certs -h)", *days)
	}
	if err := checkDir("certs client", *dir); err != nil {
		return err
	}
	f, err := certs.IssueClient(*dir, name, certs.ClientOptions{
		Password: *password,
		Validity: time.Duration(*days) * 24 * time.Hour,
		Force:    *force,
		OU:       cf.ous,
	})
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Client certificate %q, issued by the dev CA in %s:\n", name, *dir)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	subject := "CN=" + name
	for _, ou := range cf.ous {
		subject += ", OU=" + ou
	}
	fmt.Fprintf(tw, "  %s\tcertificate: %s, for client authentication, until %s\n",
		f.CertFile, subject, f.Certificate.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(tw, "  %s\tits private key (mode 0600)\n", f.KeyFile)
	fmt.Fprintf(tw, "  %s\tkey, certificate and CA for browsers (PKCS#12, mode 0600)\n", f.P12File)
	tw.Flush()
	if f.GeneratedPassword {
		fmt.Fprintf(stdout, "\nPassword of %s: %s\n", f.P12File, f.Password)
	} else {
		fmt.Fprintf(stdout, "\nPassword of %s: the one given with -password\n", f.P12File)
	}

	fmt.Fprintf(stdout, "\nTry it against a gateway that requires client certificates of this CA (configs/mtls.toml):\n"+
		"  go run ./cmd/smq ping -url https://127.0.0.1:8443/smq -ca %s -cert %s -key %s\n",
		shellQuote(f.CAFile), shellQuote(f.CertFile), shellQuote(f.KeyFile))
	fmt.Fprintf(stdout, "\nIn a browser, import %s with its password as your certificate:\n", f.P12File)
	fmt.Fprintf(stdout, "  Firefox: Settings > Privacy & Security > Certificates > View Certificates > Your Certificates > Import\n")
	fmt.Fprintf(stdout, "  Chrome, Edge: Settings > Privacy and security > Security > Manage certificates > Import\n")
	fmt.Fprintf(stdout, "    (Chromium on Linux: pk12util -d sql:$HOME/.pki/nssdb -i %s)\n", shellQuote(f.P12File))
	fmt.Fprintf(stdout, "  macOS: open %s (Keychain Access, which may refuse its AES encryption: see the README)\n", shellQuote(f.P12File))
	fmt.Fprintf(stdout, "and trust %s as an authority for websites (Firefox: Authorities > Import), so that\n"+
		"the browser trusts the gateway's certificate too.\n", f.CAFile)
	return nil
}

// parseNamed parses the flags and the one NAME of a certs command that
// issues a certificate (synopsis, in the message when NAME is missing).
// Flags may come before or after NAME. It returns done when help was
// printed.
func parseNamed(fs *flag.FlagSet, args []string, stdout io.Writer, synopsis string) (name string, done bool, err error) {
	if done, err := parseCerts(fs, args, stdout); done || err != nil {
		return "", done, err
	}
	if fs.NArg() == 0 {
		return "", false, usagef("%s: NAME is missing: %s (see smqgw certs -h)", fs.Name(), synopsis)
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if done, err := parseCerts(fs, rest, stdout); done || err != nil {
		return "", done, err
	}
	if fs.NArg() > 0 {
		return "", false, usagef("%s: unexpected argument %q after NAME %q (see smqgw certs -h)", fs.Name(), fs.Arg(0), name)
	}
	return name, false, nil
}

type nodeFlags struct {
	dir   string
	hosts []string
	days  int
	force bool
}

func newNodeFlags(f *nodeFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("certs node", flag.ContinueOnError)
	fs.StringVar(&f.dir, "dir", defaultDevDir(), "the PKI `directory`")
	fs.Func("hosts", "the node's route address and other `names`, comma-separated", hostsFlag(&f.hosts))
	fs.IntVar(&f.days, "days", int(certs.DefaultNodeValidity/(24*time.Hour)), "`days` the certificate is valid")
	fs.BoolVar(&f.force, "force", false, "replace the files of an existing NAME")
	return fs
}

func certsNode(args []string, stdout io.Writer) error {
	var nf nodeFlags
	fs := newNodeFlags(&nf)
	name, done, err := parseNamed(fs, args, stdout, "smqgw certs node [-dir D] -hosts h1,h2,... NAME")
	if done || err != nil {
		return err
	}
	if len(nf.hosts) == 0 {
		return usagef("certs node: -hosts is missing: the node's route address (IP or name) must be in its certificate (see smqgw certs -h)")
	}
	if nf.days < 1 {
		return usagef("certs node: -days %d: must be at least 1 (see smqgw certs -h)", nf.days)
	}
	if err := checkDir("certs node", nf.dir); err != nil {
		return err
	}
	f, err := certs.IssueNode(nf.dir, name, certs.NodeOptions{
		Hosts:    nf.hosts,
		Validity: time.Duration(nf.days) * 24 * time.Hour,
		Force:    nf.force,
	})
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Node certificate %q, issued by the dev CA in %s:\n", name, nf.dir)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\tcertificate: CN=%s for %s, as server and client of cluster routes, until %s\n",
		f.CertFile, name, strings.Join(nf.hosts, ", "), f.Certificate.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(tw, "  %s\tits private key (mode 0600)\n", f.KeyFile)
	tw.Flush()
	fmt.Fprintf(stdout, "\nOn node %s, present it on the cluster routes and trust the CA that issues every\n"+
		"node's (with listen and routes as in configs/cluster-a.toml):\n", name)
	fmt.Fprintf(stdout, "  [certs.node]\n  cert_file = %q\n  key_file = %q\n  [cluster]\n  tls = \"node\"\n  ca = %q\n",
		absPath(f.CertFile), absPath(f.KeyFile), absPath(f.CAFile))
	return nil
}

// absPath returns p made absolute, for a configuration used elsewhere;
// p itself if that fails.
func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// shellQuote quotes s for a POSIX shell when it needs it, so that printed
// commands can be pasted.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/@:,+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
