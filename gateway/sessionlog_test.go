package gateway_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/smqgw/smqgw/broker"
	"github.com/smqgw/smqgw/gateway"
	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
)

// TestSessionLogsFollow: a session logs a start line and an end line with
// the same session ID, which the broker gets as X-Smq-Session (a client's
// own copy is dropped); the end line has the UID, the broker's ETID and
// the upstream URL; a refused certificate is named by subject and
// fingerprint.
func TestSessionLogsFollow(t *testing.T) {
	t.Parallel()
	headers := make(chan string, 4)
	r := newRig(t, rigOptions{broker: broker.Config{
		Authenticate: func(req *broker.ConnectRequest) (smq.ConnackCode, string) {
			headers <- fmt.Sprint(req.Peer.Header.Values(gateway.HeaderSession))
			return smq.CodeAccepted, ""
		},
	}})
	device := r.clientCA.Client(t, "device-log")
	c := r.rawTLS(t, "", &device.TLS)
	c.WriteBytes(r.bootstrap("/require", gateway.HeaderSession+": forged"))
	c.ReadInit()
	etid := c.Login("logged-device")
	sent := smqtest.Recv(t, headers, "the broker's Connect")
	c.Close()
	end := r.logs.nextSession(t)
	id, _ := end["session"].(string)
	if len(id) != 16 || sent != "["+id+"]" {
		t.Fatalf("session %q; the broker got X-Smq-Session %s", id, sent)
	}
	for k, want := range map[string]string{
		"uid": "logged-device", "etid": fmt.Sprintf("%#x", etid), "upstream_url": "http://" + r.brokerAddr + "/smq",
		"identity": device.Cert.Subject.String(),
	} {
		if end[k] != want {
			t.Errorf("end line %s = %v, want %q", k, end[k], want)
		}
	}
	var start map[string]any
	for _, rec := range r.logs.records(t, "session start") {
		if rec["session"] == id {
			start = rec
		}
	}
	fp := sha256.Sum256(device.Cert.Raw)
	if start == nil || start["route"] != "/require" || start["transport"] != "raw" ||
		start["client"] != c.NetConn.LocalAddr().String() || start["cert"] != device.Cert.Subject.String() ||
		start["cert_fingerprint"] != "sha256:"+hex.EncodeToString(fp[:]) {
		t.Errorf("start line %v", start)
	}

	// A certificate from another CA: refused 0x05, and the line says whose.
	stranger := testpki.NewCA(t).Client(t, "stranger")
	s := r.rawTLS(t, "", &stranger.TLS)
	s.WriteBytes(r.bootstrap("/require"))
	s.ReadInit()
	s.Send(smq.Connect{Version: 1, UID: "stranger-1"})
	s.ExpectConnack(smq.CodeCertNotAccepted)
	refused := r.logs.nextSession(t)
	sfp := sha256.Sum256(stranger.Cert.Raw)
	if refused["reason"] != "refused" || refused["cert"] != stranger.Cert.Subject.String() ||
		refused["cert_fingerprint"] != "sha256:"+hex.EncodeToString(sfp[:]) {
		t.Errorf("refusal line %v", refused)
	}
}
