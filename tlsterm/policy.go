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
	"maps"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	// CRLs are certificate revocation lists from ClientCAs and from the
	// intermediate CAs below them. Every certificate of a verified chain
	// except the root is looked up in the CRLs of its issuer: those whose
	// issuer name is the certificate's issuer name (and whose authority key
	// ID is the certificate's, when both have one) and whose signature
	// verifies against the issuing certificate of the chain. A certificate
	// one of them lists is refused with 0x05, whatever the entry's reason
	// (certificateHold included), except removeFromCRL. With several
	// verified chains, a revocation on any of them refuses.
	//
	// A CRL that no issuer in a chain signed is never applied, and NewPolicy
	// cannot tell: a CertPool does not expose its certificates, and
	// intermediates come from the clients. So a CRL from the wrong CA (or
	// signed by an old key) is silently ignored; check it when loading. A
	// CRL past its NextUpdate is still applied: refusing every client
	// because a CRL was not refreshed in time is worse, so the loader warns
	// instead. Only direct CRLs are understood: NewPolicy rejects an
	// indirect one (entries naming another certificate issuer); a delta CRL
	// is applied as if it were complete, which revokes only what it lists.
	//
	// Empty revokes nothing. CRLs need ClientCAs: a certificate admitted by
	// its pinned key alone has no issuer to revoke it (remove its pin
	// instead). NewPolicy indexes the lists, so changing the slice later
	// does not change the policy; the DER the lists hold must not change.
	CRLs []*x509.RevocationList
}

// Policy is a validated PolicyConfig. It is immutable (but for an internal
// cache of CRL signature checks) and safe for concurrent use, so a reload
// can build a new one and swap it in atomically. The zero Policy, like a
// nil *Policy, is Off: it accepts every client.
type Policy struct {
	mode  Mode
	roots *x509.CertPool
	cn    globs
	ou    globs
	dns   globs
	uri   globs
	pins  map[[sha256.Size]byte]bool
	crls  map[string][]*crl // by the CRL's raw issuer name
}

// crl is a revocation list indexed for Check.
type crl struct {
	list    *x509.RevocationList
	serials map[string]struct{} // serialKey of every revoked serial number

	// sigs caches whether list's signature verifies against an issuing
	// certificate, by the certificate's DER. It is replaced, never
	// modified, under mu, so Check reads it without locking.
	mu   sync.Mutex
	sigs atomic.Pointer[map[string]bool]
}

// maxSigCache bounds crl.sigs. Only issuers on verified chains are
// checked, so in practice a handful are cached; past the bound, signatures
// are checked on every use rather than growing the cache.
const maxSigCache = 64

// reasonRemoveFromCRL is the CRL entry reason that undoes a revocation in a
// delta CRL (RFC 5280, section 5.3.1).
const reasonRemoveFromCRL = 8

// oidCertificateIssuer is the CRL entry extension of an indirect CRL that
// names the issuer of the following entries.
var oidCertificateIssuer = []int{2, 5, 29, 29}

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
	for i, l := range cfg.CRLs {
		c, err := indexCRL(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("tlsterm: client_crl %d: %w", i+1, err))
			continue
		}
		if p.crls == nil {
			p.crls = make(map[string][]*crl)
		}
		p.crls[string(l.RawIssuer)] = append(p.crls[string(l.RawIssuer)], c)
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
			{"client_crl", len(cfg.CRLs) > 0},
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
		if cfg.ClientCAs == nil && len(cfg.CRLs) > 0 {
			errs = append(errs, errors.New("tlsterm: client_crl needs client_ca: a CRL revokes certificates a CA issued, and pinned keys have none (remove a revoked key from pins instead)"))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// indexCRL indexes the serial numbers l revokes.
func indexCRL(l *x509.RevocationList) (*crl, error) {
	if l == nil {
		return nil, errors.New("no CRL (nil)")
	}
	list := *l // a shallow copy: reassigned fields do not reach the policy
	c := &crl{list: &list, serials: make(map[string]struct{}, len(l.RevokedCertificateEntries))}
	var buf [40]byte
	for _, e := range l.RevokedCertificateEntries {
		for _, ext := range e.Extensions {
			if ext.Id.Equal(oidCertificateIssuer) {
				return nil, fmt.Errorf("CRL from %q is indirect (it revokes certificates of other issuers): not supported", l.Issuer.String())
			}
		}
		if e.SerialNumber == nil || e.ReasonCode == reasonRemoveFromCRL {
			continue
		}
		c.serials[string(serialKey(buf[:0], e.SerialNumber))] = struct{}{}
	}
	return c, nil
}

// serialKey appends the key of serial number n in crl.serials to dst: a
// sign byte and the big-endian magnitude. It allocates only for serial
// numbers longer than dst's capacity.
func serialKey(dst []byte, n *big.Int) []byte {
	sign := byte(0)
	if n.Sign() < 0 {
		sign = 1
	}
	size := (n.BitLen() + 7) / 8
	if cap(dst)-len(dst) < 1+size {
		dst = append(make([]byte, 0, len(dst)+1+size), dst...)
	}
	dst = append(dst, sign)
	start := len(dst)
	dst = dst[:start+size]
	n.FillBytes(dst[start:]) // the absolute value
	return dst
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

// CASubjects returns the DER subjects of the CAs client certificates must
// chain to, for the acceptable CA names of a TLS CertificateRequest; nil
// for a policy without CAs (pins only, or off): then any certificate may
// be offered.
func (p *Policy) CASubjects() [][]byte {
	if p == nil || p.roots == nil {
		return nil
	}
	// Subjects is deprecated for system pools only; this one holds just
	// the CAs given.
	return p.roots.Subjects()
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
// within its validity dates), not be revoked by CRLs, and pass every
// allow-list, or it is refused with 0x05 and a specific reason.
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
	chains, err := leaf.Verify(opts)
	if err == nil {
		return p.revoked(chains)
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

// revoked returns "" or the refusal reason for a certificate on one of the
// verified chains that a CRL of its issuer lists. Each chain is walked down
// from the root, so a revoked intermediate is reported rather than the leaf
// it issued: it is the cause, and it refuses all its leaves. Roots are not
// checked: they are trusted by configuration.
func (p *Policy) revoked(chains [][]*x509.Certificate) string {
	if len(p.crls) == 0 {
		return ""
	}
	var buf [40]byte
	for _, chain := range chains {
		for i := len(chain) - 2; i >= 0; i-- {
			c, issuer := chain[i], chain[i+1]
			if !p.listed(c, issuer, buf[:0]) {
				continue
			}
			if i == 0 {
				return "certificate revoked"
			}
			return "CA certificate " + quote(c.Subject.CommonName) + " revoked"
		}
	}
	return ""
}

// listed reports whether a trustworthy CRL of issuer lists c. buf is
// scratch space for the serial number's key.
func (p *Policy) listed(c, issuer *x509.Certificate, buf []byte) bool {
	crls := p.crls[string(c.RawIssuer)]
	if len(crls) == 0 {
		return false
	}
	key := serialKey(buf, c.SerialNumber)
	for _, l := range crls {
		if _, ok := l.serials[string(key)]; !ok {
			continue
		}
		if len(l.list.AuthorityKeyId) > 0 && len(c.AuthorityKeyId) > 0 &&
			!bytes.Equal(l.list.AuthorityKeyId, c.AuthorityKeyId) {
			continue // another key of an issuer of the same name
		}
		if !bytes.Equal(l.list.RawIssuer, issuer.RawSubject) {
			continue
		}
		if l.signedBy(issuer) {
			return true
		}
	}
	return false
}

// signedBy reports whether l's signature verifies against issuer, from the
// cache when it can.
func (l *crl) signedBy(issuer *x509.Certificate) bool {
	if m := l.sigs.Load(); m != nil {
		if ok, found := (*m)[string(issuer.Raw)]; found {
			return ok
		}
	}
	ok := l.list.CheckSignatureFrom(issuer) == nil
	l.mu.Lock()
	defer l.mu.Unlock()
	var old map[string]bool
	if m := l.sigs.Load(); m != nil {
		old = *m
	}
	if len(old) >= maxSigCache {
		return ok
	}
	m := maps.Clone(old)
	if m == nil {
		m = make(map[string]bool, 1)
	}
	m[string(issuer.Raw)] = ok
	l.sigs.Store(&m)
	return ok
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
