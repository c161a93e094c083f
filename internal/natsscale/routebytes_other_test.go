//go:build !linux

package natsscale

// routeBytes is not measured outside Linux.
func routeBytes() (uint64, bool) { return 0, false }

// cpuTime is not measured outside Linux.
func cpuTime() (int64, bool) { return 0, false }
