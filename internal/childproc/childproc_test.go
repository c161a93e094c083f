//go:build unix

package childproc

import (
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestTail(t *testing.T) {
	b := &Tail{Max: 16}
	b.Write([]byte("one\ntwo\n"))
	if got := b.String(); got != "one\ntwo\n" {
		t.Errorf("String = %q", got)
	}
	if got := b.Last(5); got != "two\n" {
		t.Errorf("Last(5) = %q, want from a line start", got)
	}
	b.Write([]byte("three\nfour\n")) // 19 bytes: the last 8 stay
	if got := b.String(); got != "[...]\nee\nfour\n" {
		t.Errorf("String after a cut = %q", got)
	}
	if !b.Contains("four") || b.Contains("one") {
		t.Errorf("Contains: kept %q", b.String())
	}
}

func TestPorts(t *testing.T) {
	var r Ports
	a, b := r.TCP(t), r.TCPAndUDP(t)
	if a == b {
		t.Fatalf("port %d handed out twice", a)
	}
	r.Release()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP port %d not free after Release: %v", b, err)
	}
	l.Close()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP port %d not free after Release: %v", b, err)
	}
	c.Close()
}

// TestStop: Stop ends a running child and its group, reaps it, and does
// not call it crashed; a child that exited by itself is.
func TestStop(t *testing.T) {
	p, err := Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Skipf("no sleep command: %v", err)
	}
	p.Stop()
	p.Stop() // idempotent
	if p.Cmd.ProcessState == nil || p.Crashed() {
		t.Errorf("after Stop: state %v, crashed %v", p.Cmd.ProcessState, p.Crashed())
	}
	if err := syscall.Kill(-p.Cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d: %v, want ESRCH", p.Cmd.Process.Pid, err)
	}

	q, err := Start(exec.Command("sh", "-c", "echo bye; exit 3"))
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	<-q.Done()
	q.Stop()
	if !q.Crashed() || q.Err() == nil || !strings.Contains(q.Out.String(), "bye") {
		t.Errorf("crashed %v, err %v, output %q", q.Crashed(), q.Err(), q.Out.String())
	}
}
