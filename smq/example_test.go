package smq_test

import (
	"bufio"
	"bytes"
	"fmt"

	"github.com/smqgw/smqgw/smq"
)

// Encode a Publish as one raw frame, then read it back from the stream and
// decode it.
func Example() {
	pub := &smq.Publish{TID: 0x1234, PTID: 0xabcd, Payload: []byte("hello")}
	frame, err := smq.AppendRawMessage(nil, pub)
	if err != nil {
		panic(err)
	}
	fmt.Printf("raw frame: % x\n", frame)

	r := smq.NewReader(bufio.NewReader(bytes.NewReader(frame)))
	msg, err := r.Read() // type + body, without the length
	if err != nil {
		panic(err)
	}
	m, err := smq.Decode(msg)
	if err != nil {
		panic(err)
	}
	p := m.(*smq.Publish)
	fmt.Printf("%v to %#x from %#x: %s\n", m.Type(), p.TID, p.PTID, p.Payload)
	// Output:
	// raw frame: 00 14 08 00 00 12 34 00 00 ab cd 00 00 00 00 68 65 6c 6c 6f
	// Publish to 0x1234 from 0xabcd: hello
}

// Refusing a client at the SMQ level: a Connack with a code and a reason.
func ExampleConnackCode() {
	c := smq.Connack{Code: smq.CodeCertRequired, Reason: "a client certificate is required"}
	frame, _ := smq.AppendRawMessage(nil, c)
	fmt.Println(c.Code)
	fmt.Printf("% x\n", frame[:8])
	// Output:
	// 0x04 client certificate required
	// 00 28 03 04 00 00 00 00
}
