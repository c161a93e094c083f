package config_test

import (
	"strings"
	"testing"

	"github.com/smqgw/smqgw/access"
	"github.com/smqgw/smqgw/config"
)

// TestPermissionsProblems: every problem of [[permissions.NAME]] rules and
// of a route's reference to them is reported at once, each at its
// FILE:LINE:COL.
func TestPermissionsProblems(t *testing.T) {
	t.Parallel()
	src := lines(
		`[[listener]]`,
		`name = "a"`,
		`address = ":1"`,
		`[[listener.route]]`,
		`path = "/"`,
		`upstream = "embedded"`,
		`permissions = "flet"`, // 7
		``,
		`[[permissions.fleet]]`, // 9
		`ou = ["operators"]`,
		`publish = ["devices/+/commands", "devices/#/x"]`, // 11
		`one_to_one = "some"`,                             // 12
		``,
		`[[permissions.fleet]]`, // 14
		`subscribe = ["x"]`,
		``,
		`[[permissions.fleet]]`,
		`cn = ["device-*"]`,
		`subscribe = ["devices/{name}"]`, // 19
		`observe = "devices/#"`,          // 20
		`delete = ["x"]`,                 // 21
	)
	_, name := testDir(t)
	_, err := config.Parse([]byte(src), name)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	wants := []want{
		{7, `permissions in [[listener.route]]: no [[permissions.flet]] rules (did you mean "fleet"?)`},
		{11, `publish in [[permissions.fleet]]: "#" must be the last level`},
		{12, `one_to_one in [[permissions.fleet]]: invalid value "some" (want "none", "reply" or "any")`},
		{14, `rule #2 of [[permissions.fleet]]: the rule is for no one`},
		{19, `subscribe in [[permissions.fleet]]: unknown substitution {name}: use {cn}, {ou} or {dns}`},
		{20, `observe in [[permissions.fleet]]: want an array of strings`},
		{21, `unknown key "delete" in [[permissions.fleet]]`},
	}
	got := problems(t, err)
	if len(got) != len(wants) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(wants), err)
	}
	for i, w := range wants {
		if got[i].Line != w.line || got[i].Col == 0 || !strings.Contains(got[i].Msg, w.msg) {
			t.Errorf("problem %d = %d:%d %q\nwant line %d containing %q", i, got[i].Line, got[i].Col, got[i].Msg, w.line, w.msg)
		}
	}
}

// TestPermissionsDecoded: the worked example of the README decodes into
// the rules, and the route names them.
func TestPermissionsDecoded(t *testing.T) {
	t.Parallel()
	src := withListener(
		`permissions = "fleet"`,
		`[[permissions.fleet]]`,
		`ou = ["operators"]`,
		`publish = ["devices/+/commands"]`,
		`subscribe = ["devices/#"]`,
		`one_to_one = "reply"`,
		`[[permissions.fleet]]`,
		`cn = ["device-*"]`,
		`publish = ["devices/{cn}/#"]`,
		`subscribe = ["devices/{cn}/commands"]`,
		`[[permissions.fleet]]`,
		`anonymous = true`,
		`subscribe = ["public/#"]`,
	)
	_, name := testDir(t)
	c, err := config.Parse([]byte(src), name)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Listeners[0].Routes[0].Permissions; got != "fleet" {
		t.Errorf("route permissions = %q", got)
	}
	rules := c.Permissions["fleet"]
	if len(rules) != 3 {
		t.Fatalf("%d rules, want 3: %+v", len(rules), rules)
	}
	if r := rules[0]; r.OU[0] != "operators" || r.Publish[0] != "devices/+/commands" || r.OneToOne != access.Reply {
		t.Errorf("rule 1: %+v", r)
	}
	if r := rules[1]; r.CN[0] != "device-*" || r.Subscribe[0] != "devices/{cn}/commands" || r.OneToOne != access.None {
		t.Errorf("rule 2: %+v", r)
	}
	if r := rules[2]; !r.Anonymous || r.Subscribe[0] != "public/#" {
		t.Errorf("rule 3: %+v", r)
	}
}
