package app_test

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/internal/apptest"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
)

// TestSharedTicketKeys: two gateways with one session_ticket_key_file
// resume each other's TLS sessions, as behind one load balancer; the
// file is read again on SIGHUP, and a ticket sealed with a key no longer
// in it does not open.
func TestSharedTicketKeys(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tickets.key")
	apptest.WriteFile(t, keyFile, []byte("# first seals\n"+strings.Repeat("01", 32)+"\n"))
	conf := fmt.Sprintf("session_ticket_key_file = %q\n", keyFile) + apptest.Listener("edge", "files") + apptest.CertFiles(server)
	one := apptest.Start(t, t.TempDir(), conf)
	twoDir := t.TempDir()
	two := apptest.Start(t, twoDir, conf)
	client := &tls.Config{RootCAs: ca.Pool, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	resumes := func(b *apptest.Running) bool {
		t.Helper()
		return smqtest.Resumes(t, b.GW.Addr("edge").String(), client)
	}
	resumes(one)
	if !resumes(two) {
		t.Fatal("a ticket of one gateway did not open on the other with the same key file")
	}
	// A new key only, read on SIGHUP: the client's ticket (old key) no
	// longer opens on two.
	apptest.WriteFile(t, keyFile, []byte(strings.Repeat("02", 32)+"\n"))
	two.Server.Reload()
	if resumes(two) {
		t.Error("a ticket sealed with a key removed from the file still opened after SIGHUP")
	}
	if !resumes(two) {
		t.Error("no resumption with the new key")
	}
}

// TestTicketsOutliveRestart: with session_ticket_key_file a client resumes
// its TLS session on a restarted gateway (after a restart every device
// reconnects at once, and a resumed handshake skips the signature);
// without it the keys were the old process's, and the first handshake
// after the restart is a full one.
func TestTicketsOutliveRestart(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	keyFile := filepath.Join(t.TempDir(), "tickets.key")
	apptest.WriteFile(t, keyFile, []byte(strings.Repeat("0a", 32)+"\n"))
	for _, withFile := range []bool{true, false} {
		conf := apptest.Listener("edge", "files") + apptest.CertFiles(server)
		if withFile {
			conf = fmt.Sprintf("session_ticket_key_file = %q\n", keyFile) + conf
		}
		dir := t.TempDir()
		client := &tls.Config{RootCAs: ca.Pool, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
		before := apptest.Start(t, dir, conf)
		smqtest.Resumes(t, before.GW.Addr("edge").String(), client)
		before.Stop()
		after := apptest.Start(t, dir, conf)
		if got := smqtest.Resumes(t, after.GW.Addr("edge").String(), client); got != withFile {
			t.Errorf("with a key file %v: resumed after a restart %v, want %v", withFile, got, withFile)
		}
	}
}
