package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/smqgw/smqgw/client"
)

// A subscriber that stays subscribed across broker restarts, and a reply to
// the sender of each message.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://127.0.0.1:9000/smq", client.Options{Reconnect: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Subscribe(ctx, "sensors/temp", func(m *client.Message) {
		fmt.Printf("%s from %d: %s\n", m.Topic, m.PTID, m.Payload)
		_ = c.PublishTo(context.Background(), m.PTID, []byte("thanks"))
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, "sensors/temp", []byte("21.5")); err != nil {
		log.Fatal(err)
	}
	<-c.Done()
	log.Print(c.Err())
}
