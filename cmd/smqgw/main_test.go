package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/smq"
)

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-grace", "2s"}, io.Discard, ready) }()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}

	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := smq.Request{Path: "/smq", Host: addr.String(), SendHTTPResponse: true}
	if _, err := conn.Write(req.Append(nil)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if head, err := smq.ReadResponse(br); err != nil || !head {
		t.Fatalf("bootstrap answer: head=%v err=%v", head, err)
	}
	r := smq.NewReader(br)
	read := func(want smq.Type) smq.Message {
		t.Helper()
		msg, err := r.Read()
		if err != nil {
			t.Fatalf("reading %v: %v", want, err)
		}
		m, err := smq.Decode(msg)
		if err != nil || m.Type() != want {
			t.Fatalf("got %v (%v), want %v", m, err, want)
		}
		return m
	}
	read(smq.TypeInit)
	frame, _ := smq.AppendRawMessage(nil, smq.Connect{Version: 1, UID: "cmd-test-client"})
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	if ack := read(smq.TypeConnack).(smq.Connack); ack.Code != smq.CodeAccepted || ack.ETID == 0 {
		t.Fatalf("connack %+v", ack)
	}

	cancel()
	if d := read(smq.TypeDisconnect).(smq.Disconnect); d.Reason != "shutdown" {
		t.Fatalf("disconnect reason %q, want shutdown", d.Reason)
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after Disconnect: %v, want EOF", err)
	}
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-listen", "256.0.0.1:1"}} {
		var out strings.Builder
		err := run(context.Background(), args, &out, nil)
		if err == nil {
			t.Errorf("%q: run succeeded", args)
		}
	}
}
