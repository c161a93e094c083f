package natsscale

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// routeBytes is the number of bytes the process's TCP sockets have
// received, from the kernel's counters (TCP_INFO): in these benchmarks the
// only TCP connections are the routes between the servers (clients are
// in-process), so it is what the routes carried, both ways, after any
// compression, without TCP/IP headers.
func routeBytes() (uint64, bool) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	var sum uint64
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			continue // not TCP, or closed meanwhile
		}
		sum += ti.Bytes_received
	}
	return sum, true
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() (int64, bool) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), true
}
