package gateway

import (
	"testing"

	"github.com/smqgw/smqgw/smq"
)

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

// TestObservingBounded: a client sending Observe for ever new IDs cannot
// grow the session's table past maxObserved; IDs tracked before keep
// working, and Unobserve is never forwarded.
func TestObservingBounded(t *testing.T) {
	t.Parallel()
	s := &session{observing: map[uint32]bool{}}
	for id := range uint32(5 * maxObserved) {
		if !s.observe(smq.Observe{ID: id}.Append(nil)) {
			t.Fatalf("Observe %d not forwarded", id)
		}
	}
	if len(s.observing) != maxObserved {
		t.Fatalf("%d IDs tracked, want %d", len(s.observing), maxObserved)
	}
	if s.observe(smq.Unobserve{ID: 7}.Append(nil)) {
		t.Error("Unobserve forwarded")
	}
	change := smq.Change{ID: 7, Count: 1}.Append(nil)
	if s.changeWanted(change) {
		t.Error("a Change of an unobserved ID is still relayed")
	}
	s.observe(smq.Observe{ID: 7}.Append(nil))
	if !s.changeWanted(change) {
		t.Error("Observe again does not bring the Change messages back")
	}
}
