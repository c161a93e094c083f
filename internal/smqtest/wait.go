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
