package app

import (
	"testing"
	"time"
)

// TestReleaser feeds the memory policy session counts, one a tick, and
// checks on which ticks it releases.
func TestReleaser(t *testing.T) {
	const rise, every = 1000, 10 * time.Second
	ramp := func(from, to, steps int) []int { // steps ticks from from to to
		var c []int
		for i := 1; i <= steps; i++ {
			c = append(c, from+(to-from)*i/steps)
		}
		return c
	}
	repeat := func(n, count int) []int {
		c := make([]int, count)
		for i := range c {
			c[i] = n
		}
		return c
	}
	cat := func(parts ...[]int) []int {
		var c []int
		for _, p := range parts {
			c = append(c, p...)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		counts []int // the first is the count when the policy starts
		want   []int // ticks (indexes into counts) that release
	}{
		{"burst then quiet: once", cat([]int{0}, ramp(0, 9000, 5), repeat(9000, 60)), []int{6}},
		{"burst too small", cat([]int{0}, ramp(0, 999, 3), repeat(999, 30)), nil},
		{"still rising: not yet", cat([]int{0}, ramp(0, 9000, 30)), nil},
		// As many ending as starting: the count stays, whatever the churn.
		{"constant churn", repeat(5000, 120), nil},
		{"churn around a level", cat([]int{5000}, func() []int {
			var c []int
			for i := range 120 {
				c = append(c, 5000+(i%3)*10)
			}
			return c
		}()), nil},
		// A second burst within every waits for it; the count then must
		// still be quiet.
		{"two bursts, rate-limited", cat([]int{0}, []int{3000}, repeat(3000, 2), []int{6000}, repeat(6000, 20)), []int{2, 12}},
		// Sessions ending lower the mark: a reconnect storm is a burst.
		{"reconnect storm", cat([]int{9000}, repeat(9000, 20), []int{0}, repeat(0, 3), []int{9000}, repeat(9000, 3)), []int{26}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := releaser{rise: rise, every: every}
			start := time.Unix(1000, 0)
			var got []int
			for i, n := range tc.counts {
				if r.tick(start.Add(time.Duration(i)*time.Second), n) {
					got = append(got, i)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("released at ticks %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("released at ticks %v, want %v", got, tc.want)
				}
			}
		})
	}
}
