package tlsterm_test

import (
	"fmt"

	"github.com/smqgw/smqgw/tlsterm"
)

// NewPolicy reports every problem of a configuration at once.
func ExampleNewPolicy() {
	mode, err := tlsterm.ParseMode("require")
	if err != nil {
		panic(err)
	}
	_, err = tlsterm.NewPolicy(tlsterm.PolicyConfig{
		Mode:    mode,
		AllowCN: []string{"device-[0-9]*"},
		Pins:    []string{"sha256:xyz"},
	})
	fmt.Println(err)
	// Output:
	// tlsterm: invalid allow_cn pattern "device-[0-9]*": only * is a wildcard: write \[ for a literal [
	// tlsterm: invalid pin "sha256:xyz": expected sha256:<base64>: illegal base64 data at input byte 0
}
