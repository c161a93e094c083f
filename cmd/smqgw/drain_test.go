package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
)

// TestSIGTERMDrains runs the real smqgw binary, connects a raw and a
// WebSocket client, sends SIGTERM, and checks that both see their
// connection end without a Disconnect, which the reference clients would
// take as final (the raw one the end of the stream, the WebSocket close
// 1001 "shutdown"), and the process exits 0 within the grace period. On
// the way it checks the systemd notifications: READY, RELOADING and READY
// again around a SIGHUP, STOPPING.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	bin := buildCmd(t, "smqgw")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`state_dir = %q
[limits]
shutdown_grace = "3s"
`, filepath.Join(dir, "state")) + apptest.Listener("lan", "")
	file := filepath.Join(dir, "smqgw.toml")
	apptest.WriteFile(t, file, []byte(cfg))
	// systemd's notification socket, as Type=notify provides it.
	notes, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notes.Close()
	expectNote := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		_ = notes.SetReadDeadline(time.Now().Add(smqtest.WaitFor))
		n, err := notes.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), want) {
			t.Fatalf("systemd notification %q, %v; want %q", buf[:n], err, want)
		}
	}
	cmd := exec.Command(bin, "-config", file)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &smqtest.SyncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("smqgw log:\n%s", logs)
		}
	})
	// The banner says it is serving, and where: "  lan    ws://ADDR/smq ...".
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := ""
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); found == "" && len(f) > 1 && f[0] == "lan" {
				found = strings.TrimSuffix(strings.TrimPrefix(f[1], "ws://"), "/smq")
				listening <- found
			}
		}
		if found == "" {
			listening <- ""
		}
	}()
	addr := <-listening
	if addr == "" {
		t.Fatal("smqgw did not start")
	}
	expectNote("READY=1")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expectNote("RELOADING=1\nMONOTONIC_USEC=")
	expectNote("READY=1")

	raw := smqtest.Connect(t, addr, "drain-raw")
	ws := smqtest.ConnectWS(t, addr, "drain-ws")
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectNote("STOPPING=1")
	raw.ExpectClosed()
	err = ws.ExpectClosed()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "shutdown" {
		t.Errorf("WebSocket: %v, want close 1001 \"shutdown\"", err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("smqgw exited with %v, want 0", exitErr)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("exit took %v, longer than the 3s grace period", d)
		}
	case <-time.After(smqtest.WaitFor):
		t.Fatal("smqgw did not exit")
	}
}
