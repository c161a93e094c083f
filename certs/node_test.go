package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIssueNode(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	ca := readCA(t, d)
	f, err := IssueNode(d.Dir, "gw-a", NodeOptions{Hosts: []string{"10.0.0.1", "gw-a.internal", "::1"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(d.Dir, "gw-a.pem"); f.CertFile != want {
		t.Errorf("CertFile %s, want %s", f.CertFile, want)
	}
	if want := filepath.Join(d.Dir, "gw-a-key.pem"); f.KeyFile != want {
		t.Errorf("KeyFile %s, want %s", f.KeyFile, want)
	}
	if f.CAFile != d.CAFile || f.Name != "gw-a" {
		t.Errorf("CAFile %s, name %q", f.CAFile, f.Name)
	}

	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	if !leaf.Equal(f.Certificate) {
		t.Error("CertFile does not hold NodeFiles.Certificate")
	}
	if leaf.Subject.CommonName != "gw-a" {
		t.Errorf("subject %s, want CN=gw-a", leaf.Subject)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(leaf.ExtKeyUsage, want) || len(leaf.UnknownExtKeyUsage) > 0 {
		t.Errorf("extended key usage %v %v, want serverAuth and clientAuth", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || leaf.IsCA {
		t.Errorf("key usage %v, CA %v", leaf.KeyUsage, leaf.IsCA)
	}
	if !slices.Equal(leaf.DNSNames, []string{"gw-a.internal"}) {
		t.Errorf("DNS names %q", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve.Params().Name != "P-256" {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := time.Until(leaf.NotAfter); life < DefaultNodeValidity-time.Minute || life > DefaultNodeValidity {
		t.Errorf("valid for %v more, want %v", life, DefaultNodeValidity)
	}

	// It chains to the CA as a server, for each of its hosts, and as a client.
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, host := range []string{"10.0.0.1", "gw-a.internal", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("verify as server %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.0.0.2"}); err == nil {
		t.Error("verifies for a host it was not issued for")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify for clientAuth: %v", err)
	}

	checkModes(t, map[string]fs.FileMode{f.CertFile: 0o644, f.KeyFile: 0o600})
	if _, err := os.Stat(filepath.Join(d.Dir, "gw-a.p12")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a node has a .p12 file: %v", err)
	}

	// Validity.
	g, err := IssueNode(d.Dir, "gw-b", NodeOptions{Hosts: []string{"10.0.0.2"}, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(g.Certificate.NotAfter); life < 47*time.Hour || life > 48*time.Hour {
		t.Errorf("valid for %v more, want 48h", life)
	}
}

func checkModes(t *testing.T, modes map[string]fs.FileMode) {
	t.Helper()
	for file, want := range modes {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(file), st.Mode().Perm(), want)
		}
	}
}

// TestIssueNodeRefuses: bad names, hosts and validities are refused
// before anything is written.
func TestIssueNodeRefuses(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	hosts := []string{"10.0.0.1"}
	for _, tc := range []struct {
		name string
		opts NodeOptions
		want string
	}{
		{"../up", NodeOptions{Hosts: hosts}, `certs: invalid node name "../up"`},
		{"ca", NodeOptions{Hosts: hosts}, `certs: invalid node name "ca"`},
		{"gw-key", NodeOptions{Hosts: hosts}, `certs: invalid node name "gw-key"`},
		{"gw", NodeOptions{}, `certs: node "gw": no hosts`},
		{"gw", NodeOptions{Hosts: []string{""}}, `certs: invalid host "": empty`},
		{"gw", NodeOptions{Hosts: []string{"10.0.0.1:6222"}}, `certs: invalid host "10.0.0.1:6222": want a DNS name or an IP address, without the port`},
		{"gw", NodeOptions{Hosts: []string{"gw.test:6222"}}, "without the port"},
		{"gw", NodeOptions{Hosts: []string{"a b"}}, `certs: invalid host "a b"`},
		{"gw", NodeOptions{Hosts: hosts, Validity: -time.Hour}, "certs: invalid validity -1h0m0s"},
		{"gw", NodeOptions{Hosts: hosts, Validity: 20 * 365 * 24 * time.Hour}, "outlives the dev CA"},
	} {
		_, err := IssueNode(d.Dir, tc.name, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %+v: %v, want %q", tc.name, tc.opts, err, tc.want)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(d.Dir, "gw*"))
	if len(matches) > 0 {
		t.Errorf("refused nodes left files behind: %q", matches)
	}
}

func TestIssueNodeRefusesToOverwrite(t *testing.T) {
	t.Parallel()
	d := devPKI(t)
	opts := NodeOptions{Hosts: []string{"10.0.0.1"}}
	first, err := IssueNode(d.Dir, "gw-a", opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = IssueNode(d.Dir, "gw-a", opts)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "-force") || !strings.Contains(err.Error(), `node "gw-a" exists`) {
		t.Fatalf("second issue: %v, want a refusal naming the node and -force", err)
	}
	again, _ := os.ReadFile(first.CertFile)
	if string(again) != string(pemCert(first.Certificate)) {
		t.Error("refused issue changed the certificate")
	}
	// The key alone blocks the name, and so does a client of that name.
	os.Remove(first.CertFile)
	if _, err := IssueNode(d.Dir, "gw-a", opts); !errors.Is(err, fs.ErrExist) {
		t.Errorf("with the key left: %v, want a refusal", err)
	}
	if _, err := IssueClient(d.Dir, "dev-1", ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueNode(d.Dir, "dev-1", opts); !errors.Is(err, fs.ErrExist) {
		t.Errorf("over a client: %v, want a refusal", err)
	}

	second, err := IssueNode(d.Dir, "gw-a", NodeOptions{Hosts: []string{"10.0.0.9"}, Force: true})
	if err != nil {
		t.Fatalf("with Force: %v", err)
	}
	if second.Certificate.Equal(first.Certificate) || !second.Certificate.IPAddresses[0].Equal(net.ParseIP("10.0.0.9")) {
		t.Error("Force did not issue a new certificate")
	}
	if _, err := tls.LoadX509KeyPair(second.CertFile, second.KeyFile); err != nil {
		t.Errorf("replaced pair: %v", err)
	}
}

func TestIssueNodeWithoutCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := IssueNode(dir, "gw-a", NodeOptions{Hosts: []string{"10.0.0.1"}})
	want := "certs: no dev CA in " + dir + ": run `smqgw certs init -dir " + dir + "` first"
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want %q", err, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("wrote %d files without a CA", len(entries))
	}
}
