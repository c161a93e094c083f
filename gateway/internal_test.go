package gateway

import "testing"

// TestReasonsNamed: every close reason has its own log and metrics label.
func TestReasonsNamed(t *testing.T) {
	t.Parallel()
	seen := map[string]Reason{}
	for r := ReasonNone; r <= ReasonBusy; r++ {
		name := r.String()
		if name == "" || name == "unknown" {
			t.Errorf("reason %d has no name", r)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("reasons %d and %d are both %q", other, r, name)
		}
		seen[name] = r
	}
	if got := Reason(len(reasonInfo)).String(); got != "unknown" {
		t.Errorf("an undefined reason is %q", got)
	}
}
