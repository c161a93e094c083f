package upstream_test

import (
	"context"
	"testing"

	"github.com/smqgw/smqgw/upstream"
)

// TestConnNamesURL: a Dial's connection names the URL it was made to,
// which after a failover is not the first.
func TestConnNamesURL(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	dead, live := "http://"+deadAddr(t)+"/smq", "ws://"+b.Addr+"/smq"
	d, err := upstream.New(upstream.Config{Name: "lan", URLs: []string{dead, live}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial(context.Background(), upstream.Request{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc, ok := c.(*upstream.Conn)
	if !ok || uc.URL != live || !uc.WebSocket() {
		t.Fatalf("Dial returned %T %+v, want an *upstream.Conn at %s", c, c, live)
	}
	readInit(t, c)
}
