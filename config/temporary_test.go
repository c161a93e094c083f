package config_test

import (
	"strings"
	"testing"

	"github.com/smqgw/smqgw/config"
)

// TestTemporaryFailures: a route's temporary_failures is "close" unless
// set; "refuse" is kept; anything else is an error that names the line.
func TestTemporaryFailures(t *testing.T) {
	t.Parallel()
	src := strings.Join([]string{
		`[[listener]]`,                    // 1
		`name = "lan"`,                    // 2
		`address = "127.0.0.1:0"`,         // 3
		`  [[listener.route]]`,            // 4
		`  path = "/"`,                    // 5
		`  upstream = "embedded"`,         // 6
		`  [[listener.route]]`,            // 7
		`  path = "/old-clients"`,         // 8
		`  upstream = "embedded"`,         // 9
		`  temporary_failures = "refuse"`, // 10
	}, "\n")
	cfg, err := config.Parse([]byte(src), "gw.toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Listeners[0].Routes[0].TemporaryFailures; got != config.TemporaryClose {
		t.Errorf("default %q, want %q", got, config.TemporaryClose)
	}
	if got := cfg.Listeners[0].Routes[1].TemporaryFailures; got != config.TemporaryRefuse {
		t.Errorf("set %q, want %q", got, config.TemporaryRefuse)
	}
	_, err = config.Parse([]byte(strings.Replace(src, `"refuse"`, `"connack"`, 1)), "gw.toml")
	want := `gw.toml:10:3: temporary_failures in [[listener.route]]: invalid value "connack" (want "close" or "refuse")`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}
