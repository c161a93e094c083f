package tlsterm

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/smqgw/smqgw/smq"
)

// PolicyConfig describes a route's client-certificate policy. It is
// validated once by NewPolicy. Each allow-list applies only when it is
// non-empty, and a certificate must pass all that apply.
//
// Patterns in the allow-lists use a small glob syntax: '*' matches any run of
// characters, including none and including '.', '/' and ':' (unlike
// path.Match and unlike DNS wildcards, "*.example.com" matches
// "a.b.example.com" too); '\' makes the next '*', '\', '?', '[' or ']'
// literal; unescaped '?', '[' and ']' are errors; everything else matches
// itself exactly. A pattern without '*' is an exact match.
type PolicyConfig struct {
	// Mode says whether a certificate is ignored, optional or required. The
	// zero value, Off, accepts every client and ignores certificates; then
	// all other fields must be empty.
	Mode Mode

	// ClientCAs are the roots a client certificate must chain to, with the
	// clientAuth extended key usage; intermediates are taken from what the
	// client sends. Nil means no CA: then Pins must be set, and a pinned key
	// alone admits a certificate (self-signed devices), though its validity
	// dates are still checked. NewPolicy keeps a copy.
	ClientCAs *x509.CertPool

	// AllowCN are patterns for the subject common name. Empty allows any.
	AllowCN []string
	// AllowOU are patterns for the subject organizational units: one of the
	// certificate's OUs must match. Empty allows any (and none).
	AllowOU []string
	// AllowDNS are patterns for DNS subject alternative names, compared
	// case-insensitively: one of the certificate's DNS names must match.
	// Empty allows any (and none).
	AllowDNS []string
	// AllowURI are exact URIs or patterns for URI subject alternative names,
	// such as SPIFFE IDs ("spiffe://example.org/device/*"): one of the
	// certificate's URIs must match. Empty allows any (and none).
	AllowURI []string

	// Pins are "sha256:<base64>" digests of SubjectPublicKeyInfos (see
	// SPKIPin); when set, the leaf's key must be one of them. Empty pins
	// nothing.
	Pins []string
}

// Policy is a validated PolicyConfig. It is immutable and safe for
// concurrent use, so a reload can build a new one and swap it in atomically.
// The zero Policy, like a nil *Policy, is Off: it accepts every client.
type Policy struct {
	mode  Mode
	roots *x509.CertPool
	cn    globs
	ou    globs
	dns   globs
	uri   globs
	pins  map[[sha256.Size]byte]bool
}

// NewPolicy validates cfg and compiles it. It reports every problem at once,
// joined with errors.Join.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	var errs []error
	p := &Policy{mode: cfg.Mode}
	if !cfg.Mode.valid() {
		errs = append(errs, fmt.Errorf("tlsterm: invalid client_auth %s: want off, optional or require", cfg.Mode))
	}
	if cfg.ClientCAs != nil {
		p.roots = cfg.ClientCAs.Clone()
	}
	compile := func(key string, patterns []string, fold bool) globs {
		var gs globs
		for _, pat := range patterns {
			s := pat
			if fold {
				s = strings.ToLower(s)
			}
			g, err := compileGlob(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("tlsterm: invalid %s pattern %q: %w", key, pat, err))
				continue
			}
			gs = append(gs, g)
		}
		return gs
	}
	p.cn = compile("allow_cn", cfg.AllowCN, false)
	p.ou = compile("allow_ou", cfg.AllowOU, false)
	p.dns = compile("allow_dns", cfg.AllowDNS, true)
	p.uri = compile("allow_uri", cfg.AllowURI, false)
	for _, pin := range cfg.Pins {
		d, err := parsePin(pin)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if p.pins == nil {
			p.pins = make(map[[sha256.Size]byte]bool)
		}
		p.pins[d] = true
	}

	switch cfg.Mode {
	case Off:
		var set []string
		for _, f := range []struct {
			key string
			set bool
		}{
			{"client_ca", cfg.ClientCAs != nil},
			{"allow_cn", len(cfg.AllowCN) > 0},
			{"allow_ou", len(cfg.AllowOU) > 0},
			{"allow_dns", len(cfg.AllowDNS) > 0},
			{"allow_uri", len(cfg.AllowURI) > 0},
			{"pins", len(cfg.Pins) > 0},
		} {
			if f.set {
				set = append(set, f.key)
			}
		}
		if len(set) > 0 {
			verb := "are"
			if len(set) == 1 {
				verb = "is"
			}
			errs = append(errs, fmt.Errorf("tlsterm: client_auth \"off\" ignores client certificates, but %s %s set: use optional or require, or remove them",
				strings.Join(set, ", "), verb))
		}
	case Optional, Require:
		if cfg.ClientCAs == nil && len(cfg.Pins) == 0 {
			errs = append(errs, fmt.Errorf("tlsterm: client_auth %q needs client_ca (a CA bundle) or pins: without either no client certificate can be verified", cfg.Mode))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// parsePin decodes "sha256:<base64>".
func parsePin(pin string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	b64, ok := strings.CutPrefix(pin, "sha256:")
	if !ok {
		return d, fmt.Errorf("tlsterm: invalid pin %q: expected sha256:<base64>", pin)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return d, fmt.Errorf("tlsterm: invalid pin %q: expected sha256:<base64>: %w", pin, err)
	}
	if len(raw) != sha256.Size {
		return d, fmt.Errorf("tlsterm: invalid pin %q: digest is %d bytes, want %d", pin, len(raw), sha256.Size)
	}
	copy(d[:], raw)
	return d, nil
}

// SPKIPin returns the pin of cert's public key: "sha256:" and the standard
// base64 of the SHA-256 digest of its SubjectPublicKeyInfo. It is the same
// for every certificate issued for one key, so a pin survives renewal with
// the same key. Shell equivalent:
//
//	openssl x509 -in cert.pem -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
func SPKIPin(cert *x509.Certificate) string {
	d := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + base64.StdEncoding.EncodeToString(d[:])
}

// Mode returns the policy's mode.
func (p *Policy) Mode() Mode {
	if p == nil {
		return Off
	}
	return p.mode
}

// Decision is the outcome of Policy.Check.
type Decision struct {
	// Code is smq.CodeAccepted, smq.CodeCertRequired (0x04) or
	// smq.CodeCertNotAccepted (0x05).
	Code smq.ConnackCode
	// Reason says why a client is refused, in a few words fit for a Connack
	// and a log line; empty when accepted.
	Reason string
	// Identity is the accepted certificate's identity; nil when refused or
	// when no certificate was checked (Off, or Optional without one).
	Identity *Identity
}

// Accepted reports whether the client may proceed.
func (d Decision) Accepted() bool { return d.Code == smq.CodeAccepted }

// Identity describes an accepted client certificate (the leaf).
type Identity struct {
	Subject     string   // distinguished name, RFC 2253 style ("CN=device-1,OU=lab,O=Example")
	CN          string   // subject common name
	OU          []string // subject organizational units
	DNSNames    []string // DNS subject alternative names
	URIs        []string // URI subject alternative names, such as SPIFFE IDs
	Fingerprint string   // "sha256:" and the lowercase hex SHA-256 of the certificate's DER
	SPKI        string   // the key's pin, as SPKIPin
}

func newIdentity(c *x509.Certificate) *Identity {
	fp := sha256.Sum256(c.Raw)
	id := &Identity{
		Subject:     c.Subject.String(),
		CN:          c.Subject.CommonName,
		OU:          append([]string(nil), c.Subject.OrganizationalUnit...),
		DNSNames:    append([]string(nil), c.DNSNames...),
		Fingerprint: "sha256:" + hex.EncodeToString(fp[:]),
		SPKI:        SPKIPin(c),
	}
	for _, u := range c.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	return id
}

// Check decides whether the client of a completed handshake may proceed. It
// must run on every connection, resumed ones included (a resumed session
// carries the original peer certificates, and the policy may have changed
// since). now is the time to check validity at; zero means time.Now().
//
// Off accepts everyone without an identity. Without a certificate, Require
// refuses with 0x04 and Optional accepts without an identity. A presented
// certificate, in either mode, must verify (chain to ClientCAs with the
// clientAuth usage, or carry a pinned key when there are no ClientCAs, and be
// within its validity dates) and pass every allow-list, or it is refused
// with 0x05 and a specific reason.
func (p *Policy) Check(cs *tls.ConnectionState, now time.Time) Decision {
	if p == nil || p.mode == Off {
		return Decision{Code: smq.CodeAccepted}
	}
	if cs == nil || len(cs.PeerCertificates) == 0 {
		if p.mode == Require {
			return Decision{Code: smq.CodeCertRequired, Reason: "client certificate required"}
		}
		return Decision{Code: smq.CodeAccepted}
	}
	if now.IsZero() {
		now = time.Now()
	}
	chain := cs.PeerCertificates
	leaf := chain[0]
	if reason := p.verify(chain, now); reason != "" {
		return refuse(reason)
	}
	if reason := p.allowed(leaf); reason != "" {
		return refuse(reason)
	}
	return Decision{Code: smq.CodeAccepted, Identity: newIdentity(leaf)}
}

func refuse(reason string) Decision {
	return Decision{Code: smq.CodeCertNotAccepted, Reason: reason}
}

// verify authenticates the leaf: by chain when there are roots, otherwise by
// pin (and dates). It returns "" or a refusal reason.
func (p *Policy) verify(chain []*x509.Certificate, now time.Time) string {
	leaf := chain[0]
	if p.roots == nil {
		if r := validity(leaf, true, now); r != "" {
			return r
		}
		if !p.pinned(leaf) {
			return "public key not pinned"
		}
		return ""
	}
	opts := x509.VerifyOptions{
		Roots:       p.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	_, err := leaf.Verify(opts)
	if err == nil {
		return ""
	}
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv):
		switch inv.Reason {
		case x509.Expired:
			if r := validity(inv.Cert, inv.Cert == leaf, now); r != "" {
				return r
			}
		case x509.IncompatibleUsage:
			return "certificate not valid for client authentication"
		case x509.NotAuthorizedToSign:
			return "certificate issued by a certificate that is not a CA"
		case x509.CANotAuthorizedForThisName:
			return "certificate name not permitted by its CA"
		case x509.TooManyIntermediates:
			return "certificate chain too long"
		}
	case errors.As(err, &ua):
		// Go reports a CA certificate that fails its own checks (such as
		// an expired intermediate) as an unknown authority, and keeps the
		// real cause private. Look for it on the path the client sent.
		if c := invalidIssuer(chain, now); c != nil {
			return validity(c, false, now)
		}
		return "certificate signed by an unknown authority"
	}
	return shorten(strings.TrimPrefix(err.Error(), "x509: "), 120)
}

// validity returns "" when now is within c's validity period, or the reason
// it is not.
func validity(c *x509.Certificate, isLeaf bool, now time.Time) string {
	what := "certificate"
	if !isLeaf {
		what = "CA certificate " + quote(c.Subject.CommonName)
	}
	switch {
	case now.Before(c.NotBefore):
		return what + " not valid before " + c.NotBefore.UTC().Format(time.DateOnly)
	case now.After(c.NotAfter):
		return what + " expired " + c.NotAfter.UTC().Format(time.DateOnly)
	}
	return ""
}

// invalidIssuer follows the issuer path the client sent, starting at the
// leaf, and returns the first CA certificate on it that is outside its
// validity period, or nil.
func invalidIssuer(chain []*x509.Certificate, now time.Time) *x509.Certificate {
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		if !bytes.Equal(child.RawIssuer, parent.RawSubject) || child.CheckSignatureFrom(parent) != nil {
			return nil
		}
		if validity(parent, false, now) != "" {
			return parent
		}
	}
	return nil
}

func (p *Policy) pinned(c *x509.Certificate) bool {
	return p.pins[sha256.Sum256(c.RawSubjectPublicKeyInfo)]
}

// allowed applies the allow-lists and, with roots, the pins. It returns "" or
// a refusal reason.
func (p *Policy) allowed(c *x509.Certificate) string {
	if len(p.cn) > 0 && !p.cn.any(c.Subject.CommonName) {
		return "CN " + quote(c.Subject.CommonName) + " not allowed"
	}
	if len(p.ou) > 0 && !anyOf(p.ou, c.Subject.OrganizationalUnit, false) {
		return notAllowed("OU", "OUs", "certificate has no OU", c.Subject.OrganizationalUnit)
	}
	if len(p.dns) > 0 && !anyOf(p.dns, c.DNSNames, true) {
		return notAllowed("DNS name", "DNS names", "certificate has no DNS name", c.DNSNames)
	}
	if len(p.uri) > 0 {
		uris := make([]string, len(c.URIs))
		for i, u := range c.URIs {
			uris[i] = u.String()
		}
		if !anyOf(p.uri, uris, false) {
			return notAllowed("URI SAN", "URI SANs", "certificate has no URI SAN", uris)
		}
	}
	if p.roots != nil && len(p.pins) > 0 && !p.pinned(c) {
		return "public key not pinned"
	}
	return ""
}

func anyOf(gs globs, names []string, fold bool) bool {
	for _, n := range names {
		if fold {
			n = strings.ToLower(n)
		}
		if gs.any(n) {
			return true
		}
	}
	return false
}

// notAllowed words a failed allow-list: `OU "a" not allowed`,
// `OUs "a", "b" not allowed`, or none when names is empty. At most three
// names are listed.
func notAllowed(one, many, none string, names []string) string {
	const max = 3
	switch len(names) {
	case 0:
		return none
	case 1:
		return one + " " + quote(names[0]) + " not allowed"
	}
	q := make([]string, 0, max)
	for _, n := range names[:min(len(names), max)] {
		q = append(q, quote(n))
	}
	s := many + " " + strings.Join(q, ", ")
	if len(names) > max {
		s += " and " + strconv.Itoa(len(names)-max) + " more"
	}
	return s + " not allowed"
}

// quote quotes a certificate-supplied name for a reason, shortened so a
// hostile certificate cannot make the reason huge.
func quote(s string) string { return strconv.Quote(shorten(s, 64)) }

// shorten cuts s to at most n bytes on a character boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
