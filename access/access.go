// Package access turns a client's verified identity into what its SMQ
// session may do: the topics it may subscribe to, publish to and observe,
// the sub-topic names it may create, and whom it may send one-to-one
// messages to.
//
// A Policy is a list of rules ([[permissions.NAME]] in the configuration).
// Each rule says whom it is for (certificate matchers, or anonymous
// clients) and what it grants; a session gets the union of the grants of
// every rule that is for it, and nothing else. Policy.For computes a
// session's Grants once, at its start, with the identity's values
// substituted into the patterns; the gateway then enforces them.
package access

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/smqgw/smqgw/tlsterm"
)

// Rule is one rule of a policy, as the configuration writes it.
type Rule struct {
	// CN, OU, DNS and URI (cn, ou, dns, uri) select the certificates the
	// rule is for, with the allow-lists' globs: each non-empty list must
	// match (OU, DNS and URI by any one of the certificate's values).
	CN  []string `toml:"cn"`
	OU  []string `toml:"ou"`
	DNS []string `toml:"dns"`
	URI []string `toml:"uri"`
	// Anonymous (anonymous) makes the rule for clients without a verified
	// certificate (a route with client_auth "off", or "optional" and no
	// certificate). Not with the matchers. A rule is for someone: it needs
	// a matcher or Anonymous.
	Anonymous bool `toml:"anonymous"`

	// Subscribe (subscribe) are the topic patterns the rule lets its
	// clients subscribe to.
	Subscribe []string `toml:"subscribe"`
	// Publish (publish) are the topic patterns it lets them create and
	// publish to.
	Publish []string `toml:"publish"`
	// Observe (observe) are the topic patterns whose subscriber counts it
	// lets them observe (and create, to learn the topic's ID).
	Observe []string `toml:"observe"`
	// SubTopics (subtopics) are the patterns of the sub-topic names it lets
	// them create (Createsub) and publish with.
	SubTopics []string `toml:"subtopics"`
	// OneToOne (one_to_one) is whom they may send one-to-one messages to
	// (and observe, to learn when they leave). Default "none".
	OneToOne OneToOne `toml:"one_to_one"`
}

// OneToOne says whom a session may send one-to-one messages to: the
// clients it may address by ETID.
type OneToOne int

const (
	// None: nobody.
	None OneToOne = iota
	// Reply: the clients that sent the session a message (to a topic it
	// subscribes to, or one-to-one), by the sender's ETID the broker put in
	// the message.
	Reply
	// Any: every client the gateway knows to be one (a session of the
	// gateway on the same upstream, or a sender as for Reply), and the
	// broker's own client (ETID 1). A topic ID is never taken for one.
	Any
)

var oneToOneNames = [...]string{None: "none", Reply: "reply", Any: "any"}

// String returns the configuration name of o.
func (o OneToOne) String() string {
	if o >= None && o <= Any {
		return oneToOneNames[o]
	}
	return "OneToOne(" + strconv.Itoa(int(o)) + ")"
}

// UnmarshalText implements encoding.TextUnmarshaler: "none", "reply" or
// "any".
func (o *OneToOne) UnmarshalText(text []byte) error {
	for v, name := range oneToOneNames {
		if string(text) == name {
			*o = OneToOne(v)
			return nil
		}
	}
	return fmt.Errorf("invalid one_to_one %q: want none, reply or any", text)
}

// MarshalText implements encoding.TextMarshaler.
func (o OneToOne) MarshalText() ([]byte, error) {
	if o < None || o > Any {
		return nil, fmt.Errorf("invalid one_to_one %d", int(o))
	}
	return []byte(oneToOneNames[o]), nil
}

// Rights are what a session may do with one topic.
type Rights uint8

const (
	CanSubscribe Rights = 1 << iota
	CanPublish
	CanObserve
)

// Error is a problem with one rule of a policy: its index, the key, and
// for a list the index of the bad element (-1 for the key as a whole).
type Error struct {
	Rule  int
	Key   string
	Index int
	Err   error
}

func (e *Error) Error() string {
	where := fmt.Sprintf("rule #%d: %s", e.Rule+1, e.Key)
	if e.Index >= 0 {
		where += fmt.Sprintf(" #%d", e.Index+1)
	}
	return where + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Policy is a compiled list of rules.
type Policy struct {
	rules []rule
}

type rule struct {
	who       tlsterm.Selector
	anonymous bool
	sub, pub  []template
	obs, subt []template
	oneToOne  OneToOne
}

// Compile checks and compiles rules. The error joins one *Error per
// problem.
func Compile(rules []Rule) (*Policy, error) {
	var errs []error
	p := &Policy{}
	for i, r := range rules {
		fail := func(key string, index int, err error) {
			errs = append(errs, &Error{Rule: i, Key: key, Index: index, Err: err})
		}
		who, err := tlsterm.NewSelector(r.CN, r.OU, r.DNS, r.URI)
		for _, e := range unjoin(err) {
			var se *tlsterm.SelectorError
			if errors.As(e, &se) {
				fail(se.List, se.Index, se.Err)
			}
		}
		switch {
		case r.Anonymous && !who.Empty():
			fail("anonymous", -1, errors.New("a rule for anonymous clients cannot also match certificates (cn, ou, dns, uri): write two rules"))
		case !r.Anonymous && who.Empty() && err == nil:
			fail("anonymous", -1, errors.New("the rule is for no one: set cn, ou, dns or uri, or anonymous = true"))
		}
		if r.OneToOne < None || r.OneToOne > Any {
			fail("one_to_one", -1, fmt.Errorf("invalid value %d", int(r.OneToOne)))
		}
		compile := func(key string, srcs []string) []template {
			var ts []template
			for j, src := range srcs {
				t, err := compileTemplate(src)
				if err != nil {
					fail(key, j, err)
					continue
				}
				if t.vars && r.Anonymous {
					fail(key, j, fmt.Errorf("pattern %q: an anonymous client has no certificate to substitute from", src))
					continue
				}
				ts = append(ts, t)
			}
			return ts
		}
		p.rules = append(p.rules, rule{
			who: who, anonymous: r.Anonymous,
			sub: compile("subscribe", r.Subscribe), pub: compile("publish", r.Publish),
			obs: compile("observe", r.Observe), subt: compile("subtopics", r.SubTopics),
			oneToOne: r.OneToOne,
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

// Grants are what one session may do: the union of the rules that are for
// its identity, with the identity substituted into their patterns.
type Grants struct {
	sub, pub, obs, subt patterns
	// OneToOne is whom the session may send one-to-one messages to.
	OneToOne OneToOne
	// Rules are the indexes of the rules that are for the session.
	Rules []int
}

// For returns the grants of a session with identity id (nil for a client
// without a verified certificate).
func (p *Policy) For(id *tlsterm.Identity) *Grants {
	g := &Grants{}
	var vals values
	if id != nil {
		vals = values{varOU: id.OU, varDNS: id.DNSNames}
		if id.CN != "" {
			vals[varCN] = []string{id.CN}
		}
	}
	add := func(ps *patterns, ts []template) {
		for _, t := range ts {
			*ps = append(*ps, t.expand(vals)...)
		}
	}
	for i, r := range p.rules {
		if r.anonymous != (id == nil) || id != nil && !r.who.Match(id) {
			continue
		}
		g.Rules = append(g.Rules, i)
		add(&g.sub, r.sub)
		add(&g.pub, r.pub)
		add(&g.obs, r.obs)
		add(&g.subt, r.subt)
		g.OneToOne = max(g.OneToOne, r.oneToOne)
	}
	return g
}

// Topic returns what the session may do with the named topic.
func (g *Grants) Topic(name string) Rights {
	var r Rights
	if g.sub.match(name) {
		r |= CanSubscribe
	}
	if g.pub.match(name) {
		r |= CanPublish
	}
	if g.obs.match(name) {
		r |= CanObserve
	}
	return r
}

// SubTopic reports whether the session may create the named sub-topic
// and publish with it.
func (g *Grants) SubTopic(name string) bool { return g.subt.match(name) }
