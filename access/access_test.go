package access

import (
	"errors"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/tlsterm"
)

func TestPatternMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		yes, no []string
	}{
		{"devices/#", []string{"devices", "devices/", "devices/a", "devices/a/b"}, []string{"device", "devicesx", "x/devices", ""}},
		{"#", []string{"", "a", "a/b", "/"}, nil},
		{"devices/+/commands", []string{"devices/7/commands", "devices//commands"}, []string{"devices/7", "devices/7/commands/x", "devices/7/8/commands"}},
		{"+", []string{"", "a"}, []string{"a/b", "/"}},
		{"+/#", []string{"", "a", "a/b/c"}, nil},
		{"", []string{""}, []string{"a", "/"}},
		{"/a", []string{"/a"}, []string{"a", "/a/b"}},
		{"a/b", []string{"a/b"}, []string{"a", "a/b/", "a/bc", "A/b"}},
	}
	for _, tt := range tests {
		tpl, err := compileTemplate(tt.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tt.pattern, err)
		}
		ps := patterns(tpl.expand(nil))
		for _, name := range tt.yes {
			if !ps.match(name) {
				t.Errorf("%q does not match %q", tt.pattern, name)
			}
		}
		for _, name := range tt.no {
			if ps.match(name) {
				t.Errorf("%q matches %q", tt.pattern, name)
			}
		}
	}
}

func TestPatternErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ pattern, err string }{
		{"a/#/b", `"#" must be the last level`},
		{"a+b", `"+" and "#" are wildcards only as a whole level`},
		{"a/x#", `"+" and "#" are wildcards only as a whole level`},
		{"devices/{name}", "unknown substitution {name}"},
		{"devices/{cn", `"{" without "}"`},
		{"devices/cn}", `"}" without "{"`},
		{"o/{ou}-{cn}", "two substitutions in one level"},
		{"a\x00b", "NUL"},
		{"\xff", "UTF-8"},
	}
	for _, tt := range tests {
		_, err := compileTemplate(tt.pattern)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: got %v, want %q", tt.pattern, err, tt.err)
		}
	}
}

func TestSubstitution(t *testing.T) {
	t.Parallel()
	p, err := Compile([]Rule{{CN: []string{"*"},
		Publish:   []string{"devices/{cn}/#"},
		Subscribe: []string{"teams/{ou}/{cn}-in"},
		Observe:   []string{"hosts/{dns}"}}})
	if err != nil {
		t.Fatal(err)
	}
	g := p.For(&tlsterm.Identity{CN: "device-7", OU: []string{"lab", "ops"}, DNSNames: []string{"a.example"}})
	checks := []struct {
		name string
		want Rights
	}{
		{"devices/device-7/telemetry", CanPublish},
		{"devices/device-7", CanPublish},
		{"devices/device-8/telemetry", 0},
		{"teams/lab/device-7-in", CanSubscribe},
		{"teams/ops/device-7-in", CanSubscribe},
		{"teams/dev/device-7-in", 0},
		{"hosts/a.example", CanObserve},
		{"hosts/b.example", 0},
	}
	for _, c := range checks {
		if got := g.Topic(c.name); got != c.want {
			t.Errorf("Topic(%q) = %b, want %b", c.name, got, c.want)
		}
	}

	// Values are literal: a CN that looks like a wildcard matches only
	// itself, one with '/' matches nothing.
	g = p.For(&tlsterm.Identity{CN: "+"})
	if g.Topic("devices/x/y") != 0 || g.Topic("devices/+/y") != CanPublish {
		t.Error(`CN "+" acts as a wildcard`)
	}
	g = p.For(&tlsterm.Identity{CN: "a/b"})
	if g.Topic("devices/a/b/c") != 0 {
		t.Error(`CN "a/b" spans levels`)
	}
	// No OU: the pattern with {ou} grants nothing.
	g = p.For(&tlsterm.Identity{CN: "d"})
	if g.Topic("teams//d-in") != 0 || g.Topic("teams/+/d-in") != 0 {
		t.Error("{ou} without an OU grants something")
	}
}

func TestRulesFor(t *testing.T) {
	t.Parallel()
	p, err := Compile([]Rule{
		{OU: []string{"operators"}, Publish: []string{"devices/+/commands"}, Subscribe: []string{"devices/#"}, OneToOne: Reply},
		{CN: []string{"device-*"}, Publish: []string{"devices/{cn}/#"}, Subscribe: []string{"devices/{cn}/commands"}},
		{Anonymous: true, Subscribe: []string{"public/#"}},
		{CN: []string{"admin"}, OneToOne: Any},
	})
	if err != nil {
		t.Fatal(err)
	}
	op := p.For(&tlsterm.Identity{CN: "alice", OU: []string{"operators"}})
	dev := p.For(&tlsterm.Identity{CN: "device-7"})
	anon := p.For(nil)
	opDev := p.For(&tlsterm.Identity{CN: "device-9", OU: []string{"operators"}})
	checks := []struct {
		who  string
		g    *Grants
		name string
		want Rights
	}{
		{"operator", op, "devices/device-7/commands", CanPublish | CanSubscribe},
		{"operator", op, "devices/device-7/telemetry", CanSubscribe},
		{"operator", op, "public/news", 0},
		{"device", dev, "devices/device-7/commands", CanPublish | CanSubscribe},
		{"device", dev, "devices/device-7/telemetry", CanPublish},
		{"device", dev, "devices/device-8/commands", 0},
		{"anonymous", anon, "public/news", CanSubscribe},
		{"anonymous", anon, "devices/device-7/commands", 0},
		{"operator device (union)", opDev, "devices/device-9/telemetry", CanPublish | CanSubscribe},
	}
	for _, c := range checks {
		if got := c.g.Topic(c.name); got != c.want {
			t.Errorf("%s: Topic(%q) = %b, want %b", c.who, c.name, got, c.want)
		}
	}
	if op.OneToOne != Reply || dev.OneToOne != None || anon.OneToOne != None {
		t.Errorf("one_to_one: operator %v, device %v, anonymous %v", op.OneToOne, dev.OneToOne, anon.OneToOne)
	}
	if g := p.For(&tlsterm.Identity{CN: "admin"}); g.OneToOne != Any || len(g.Rules) != 1 || g.Rules[0] != 3 {
		t.Errorf("admin: %v, rules %v", g.OneToOne, g.Rules)
	}
	if len(anon.Rules) != 1 || anon.Rules[0] != 2 {
		t.Errorf("anonymous rules %v", anon.Rules)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	_, err := Compile([]Rule{
		{CN: []string{"ok"}, Publish: []string{"a/#", "a/#/b"}},
		{Subscribe: []string{"x"}},
		{Anonymous: true, CN: []string{"x"}},
		{Anonymous: true, Publish: []string{"devices/{cn}"}},
		{CN: []string{"a?"}},
	})
	var got []string
	for _, e := range unjoin(err) {
		var ae *Error
		if !errors.As(e, &ae) {
			t.Fatalf("%v is not an *access.Error", e)
		}
		got = append(got, e.Error())
	}
	want := []string{
		`rule #1: publish #2: "#" must be the last level`,
		"rule #2: anonymous: the rule is for no one",
		"rule #3: anonymous: a rule for anonymous clients cannot also match certificates",
		"rule #4: publish #1: pattern \"devices/{cn}\": an anonymous client has no certificate",
		"rule #5: cn #1: only * is a wildcard",
	}
	if len(got) != len(want) {
		t.Fatalf("errors:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestOneToOneText(t *testing.T) {
	t.Parallel()
	for _, o := range []OneToOne{None, Reply, Any} {
		b, err := o.MarshalText()
		var back OneToOne
		if err != nil || back.UnmarshalText(b) != nil || back != o {
			t.Errorf("%v: %s %v", o, b, err)
		}
	}
	var o OneToOne
	if err := o.UnmarshalText([]byte("some")); err == nil || !strings.Contains(err.Error(), "want none, reply or any") {
		t.Errorf("bad value: %v", err)
	}
}

// BenchmarkTopic is the cost of computing a topic's rights, done once per
// topic a session is granted (not per message).
func BenchmarkTopic(b *testing.B) {
	p, err := Compile([]Rule{
		{OU: []string{"operators"}, Publish: []string{"devices/+/commands"}, Subscribe: []string{"devices/#"}},
		{CN: []string{"device-*"}, Publish: []string{"devices/{cn}/#"}, Subscribe: []string{"devices/{cn}/commands"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	g := p.For(&tlsterm.Identity{CN: "device-7", OU: []string{"operators"}})
	b.ReportAllocs()
	for b.Loop() {
		if g.Topic("devices/device-7/telemetry") == 0 {
			b.Fatal("denied")
		}
	}
}
