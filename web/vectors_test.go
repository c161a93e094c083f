package web

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/smqgw/smqgw/smq"
)

// vector is one message as smq.js must encode and decode it: its fields
// (as smq.js names them) and its bytes.
type vector struct {
	Name   string         `json:"name"`
	Fields map[string]any `json:"fields"`
	Hex    string         `json:"hex"`
}

// vectors are the messages smq.js uses, encoded by the Go codec.
func vectors() []vector {
	pub := &smq.Publish{TID: 0x01020304, PTID: 0xA0B0C0D0, SubTID: 7, Payload: []byte("héllo")}
	v := func(name string, m smq.Message, fields map[string]any) vector {
		fields["type"] = int(m.Type())
		return vector{name, fields, hex.EncodeToString(m.Append(nil))}
	}
	return []vector{
		v("Init", smq.Init{Version: 1, Seed: 0xDEADBEEF, IP: "192.0.2.7"}, map[string]any{"version": 1, "seed": 0xDEADBEEF, "ip": "192.0.2.7"}),
		v("Connect", smq.Connect{Version: 1, UID: "browser-1", Credentials: "s3cret", Info: "console"},
			map[string]any{"version": 1, "uid": "browser-1", "credentials": "s3cret", "info": "console"}),
		v("Connack accepted", smq.Connack{Code: 0, ETID: 0x11223344}, map[string]any{"code": 0, "etid": 0x11223344, "reason": ""}),
		v("Connack refused", smq.Connack{Code: smq.CodeCertRequired, Reason: "client certificate required: none presented"},
			map[string]any{"code": 4, "etid": 0, "reason": "client certificate required: none presented"}),
		v("Subscribe", smq.Subscribe{Topic: "sensors/température"}, map[string]any{"topic": "sensors/température"}),
		v("Suback", smq.Suback{Status: smq.AckOK, ID: 99, Topic: "sensors/température"}, map[string]any{"status": 0, "id": 99, "topic": "sensors/température"}),
		v("Suback denied", smq.Suback{Status: smq.AckDenied, Topic: "secret"}, map[string]any{"status": 1, "id": 0, "topic": "secret"}),
		v("Create", smq.Create{Topic: "demo"}, map[string]any{"topic": "demo"}),
		v("Createack", smq.Createack{Status: smq.AckOK, ID: 0xFFFFFFFF, Topic: "demo"}, map[string]any{"status": 0, "id": 0xFFFFFFFF, "topic": "demo"}),
		v("Createsub", smq.Createsub{Topic: "cmd"}, map[string]any{"topic": "cmd"}),
		v("Createsuback", smq.Createsuback{Status: smq.AckOK, ID: 5, Topic: "cmd"}, map[string]any{"status": 0, "id": 5, "topic": "cmd"}),
		v("Publish", pub, map[string]any{"tid": 0x01020304, "ptid": 0xA0B0C0D0, "subtid": 7, "payload": "héllo"}),
		v("Unsubscribe", smq.Unsubscribe{TID: 42}, map[string]any{"tid": 42}),
		v("Observe", smq.Observe{ID: 42}, map[string]any{"id": 42}),
		v("Unobserve", smq.Unobserve{ID: 42}, map[string]any{"id": 42}),
		v("Change", smq.Change{ID: 42, Count: 3}, map[string]any{"id": 42, "count": 3}),
		v("Disconnect", smq.Disconnect{Reason: "shutdown"}, map[string]any{"reason": "shutdown"}),
		v("Ping", smq.Ping{}, map[string]any{}),
		v("Pong", smq.Pong{}, map[string]any{}),
	}
}

const vectorFile = "testdata/vectors.json"

// TestVectors: the vectors smq.js is tested with are what the Go codec
// encodes (SMQGW_UPDATE_VECTORS=1 rewrites the file). Not parallel: it
// rewrites the file before TestJSClient's node reads it.
func TestVectors(t *testing.T) {
	want, err := json.MarshalIndent(vectors(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if os.Getenv("SMQGW_UPDATE_VECTORS") == "1" {
		if err := os.WriteFile(vectorFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is not what the Go codec encodes: run SMQGW_UPDATE_VECTORS=1 go test ./web", vectorFile)
	}
	for _, v := range vectors() {
		b, _ := hex.DecodeString(v.Hex)
		if _, err := smq.Decode(b); err != nil {
			t.Errorf("%s: the Go codec does not decode its own bytes: %v", v.Name, err)
		}
	}
}
