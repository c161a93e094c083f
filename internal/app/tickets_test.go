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
