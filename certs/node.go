package certs

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// DefaultNodeValidity is how long a dev node certificate is valid when
// NodeOptions.Validity is zero.
const DefaultNodeValidity = 365 * 24 * time.Hour

// NodeOptions are the options of IssueNode.
type NodeOptions struct {
	// Hosts are the DNS names and IP addresses the certificate is issued
	// for: the node's route address, as the other nodes' routes name it.
	// Required: a node certificate without it is refused by every peer
	// that connects to the node.
	Hosts []string
	// Validity is how long the certificate is valid, from now. Default
	// (zero): DefaultNodeValidity, one year. It may not outlive the CA.
	Validity time.Duration
	// Force replaces the files of an existing node (or client) of the same
	// name. Default false: IssueNode refuses, so that a key in use is not
	// lost by mistake.
	Force bool
}

// NodeFiles are the files IssueNode wrote for one node.
type NodeFiles struct {
	Name        string
	CertFile    string // dir/NAME.pem: the certificate (PEM, mode 0644)
	KeyFile     string // dir/NAME-key.pem: its private key (PEM, mode 0600)
	CAFile      string // dir/ca.pem: the CA that issued it, which the nodes trust
	Certificate *x509.Certificate
}

// IssueNode issues a cluster node certificate for name from the dev CA in
// dir (made by EnsureDev): an ECDSA P-256 key, subject CN=name and O
// "smqgw development", the hosts of opts as subject alternative names,
// key usage digitalSignature, extended key usages serverAuth and
// clientAuth, as mutual-TLS cluster routes present one certificate both
// ways. It writes the certificate and the key (see NodeFiles). Names
// follow the rules of IssueClient.
func IssueNode(dir, name string, opts NodeOptions) (*NodeFiles, error) {
	if err := checkName("node", name); err != nil {
		return nil, err
	}
	if len(opts.Hosts) == 0 {
		return nil, fmt.Errorf("certs: node %q: no hosts: the node's route address must be in its certificate", name)
	}
	for _, h := range opts.Hosts {
		if err := checkHost(h); err != nil {
			return nil, err
		}
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("certs: invalid validity %v: must be positive", opts.Validity)
	}
	ca, caKey, err := loadDevCA(dir)
	if err != nil {
		return nil, err
	}
	f := &NodeFiles{
		Name:     name,
		CertFile: filepath.Join(dir, name+".pem"),
		KeyFile:  filepath.Join(dir, name+"-key.pem"),
		CAFile:   filepath.Join(dir, DevCAFile),
	}
	if !opts.Force {
		if err := checkFree("node", name, dir, f.CertFile, f.KeyFile); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	notAfter, err := leafNotAfter(now, opts.Validity, DefaultNodeValidity, ca, dir)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"smqgw development"}, CommonName: name},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	addHosts(tmpl, opts.Hosts)
	der, key, err := issue(tmpl, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: node %q: %w", name, err)
	}
	if f.Certificate, err = x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("certs: node %q: %w", name, err)
	}
	if err := writePair(f.CertFile, f.KeyFile, der, key); err != nil {
		return nil, fmt.Errorf("certs: node %q: %w", name, err)
	}
	return f, nil
}

// checkHost returns an error unless h is an IP address or looks like a
// DNS name; a route address with its port is the likely mistake.
func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("certs: invalid host %q: %s", h, why)
	}
	if h == "" {
		return bad("empty")
	}
	if _, _, err := net.SplitHostPort(h); err == nil {
		return bad("want a DNS name or an IP address, without the port")
	}
	if strings.ContainsFunc(h, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune(".-_", c))
	}) {
		return bad("want a DNS name or an IP address")
	}
	return nil
}
