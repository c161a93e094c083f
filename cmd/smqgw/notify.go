package main

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// notify tells systemd (Type=notify) about the service's state through
// $NOTIFY_SOCKET: "READY=1" once serving, "RELOADING=1" during a reload,
// "STOPPING=1" on shutdown. Without the variable it does nothing. Errors
// are returned for logging; the gateway runs on regardless.
func notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	// A name starting with "@" is in the abstract namespace; the net
	// package maps it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// reloading is the notification that a reload starts, with the monotonic
// clock systemd's Type=notify-reload wants.
func reloading() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}
