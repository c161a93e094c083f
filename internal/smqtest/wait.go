package smqtest

import (
	"context"
	"testing"
	"time"
)

// WaitFor bounds every wait in tests that use Context and Recv.
const WaitFor = 10 * time.Second

// Context returns a context that ends after WaitFor or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	t.Cleanup(cancel)
	return ctx
}

// Recv receives from ch, failing the test after WaitFor; what names the
// awaited event in the failure.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(WaitFor):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// WaitUntil polls cond every 10 ms until it holds, failing the test after
// WaitFor; what names the awaited state in the failure. For states with no
// event to wait on, such as a line in a log.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
