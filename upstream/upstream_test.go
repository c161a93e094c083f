package upstream_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smqgw/smqgw/upstream"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  upstream.Config
		want string
	}{
		{upstream.Config{Name: "lan"}, `upstream: upstream lan has no urls`},
		{upstream.Config{URLs: []string{"ftp://h/"}}, `upstream: invalid url "ftp://h/": unsupported scheme "ftp": want http, https, ws or wss`},
		{upstream.Config{URLs: []string{"h:80/smq"}}, `upstream: invalid url "h:80/smq": unsupported scheme "h"`},
		{upstream.Config{URLs: []string{"//h/smq"}}, `upstream: invalid url "//h/smq": no scheme`},
		{upstream.Config{URLs: []string{"http://"}}, `upstream: invalid url "http://": no host`},
		{upstream.Config{URLs: []string{"http:///smq"}}, `upstream: invalid url "http:///smq": no host`},
		{upstream.Config{URLs: []string{"http://:80/smq"}}, `upstream: invalid url "http://:80/smq": no host`},
		{upstream.Config{URLs: []string{"http:h"}}, `upstream: invalid url "http:h": no host`},
		{upstream.Config{URLs: []string{"http://u:p@h/"}}, `upstream: invalid url "http://u:xxxxx@h/": user info is not supported`},
		{upstream.Config{URLs: []string{"http://h:0/"}}, `upstream: invalid url "http://h:0/": invalid port "0"`},
		{upstream.Config{URLs: []string{"http://h:65536/"}}, `upstream: invalid url "http://h:65536/": invalid port "65536"`},
		{upstream.Config{URLs: []string{"http://[::1/"}}, `upstream: invalid url "http://[::1/": missing ']' in host`},
		{upstream.Config{URLs: []string{"http://h/", "ws://h/", "x"}}, `upstream: invalid url "x": no scheme`},
		{upstream.Config{URLs: []string{"http://h/"}, DialTimeout: -time.Second}, `upstream: invalid dial timeout -1s: must not be negative`},
		{upstream.Config{URLs: []string{"http://h/"}, Backoff: -time.Second}, `upstream: invalid backoff -1s: must not be negative`},
	}
	for _, tt := range tests {
		_, err := upstream.New(tt.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%q: %v\nwant %s", tt.cfg.URLs, err, tt.want)
		}
	}
	good := []string{"http://10.0.0.5/smq.lsp", "HTTPS://broker.example:8443/smq?x=1", "ws://[::1]:80/", "wss://h"}
	d, err := upstream.New(upstream.Config{Name: "lan", URLs: good})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "lan" || strings.Join(d.URLs(), " ") != strings.Join(good, " ") {
		t.Errorf("%q %q", d.Name(), d.URLs())
	}
}

func TestReason(t *testing.T) {
	t.Parallel()
	if r := upstream.Reason(nil); r != "" {
		t.Errorf("Reason(nil) = %q", r)
	}
	if r := upstream.Reason(errors.New("two\nlines")); r != "two lines" {
		t.Errorf("%q", r)
	}
	e := &upstream.Error{Upstream: "lan"}
	for i := range 10 {
		e.Attempts = append(e.Attempts, upstream.Attempt{URL: fmt.Sprint("http://h", i),
			Err: fmt.Errorf("dial tcp h%d:80: connect: connection refused ü", i)})
	}
	r := upstream.Reason(fmt.Errorf("wrapped: %w", e))
	if len(r) > upstream.MaxReason || !strings.HasPrefix(r, "upstream lan unreachable: dial tcp h0:80: connect: connection refused ü; dial tcp h1:80") ||
		!strings.HasSuffix(r, "...") || !strings.Contains(e.Error(), "http://h9: dial tcp h9:80") {
		t.Errorf("reason %q (%d bytes)", r, len(r))
	}
	if strings.ToValidUTF8(r, "?") != r {
		t.Errorf("reason %q was cut inside a character", r)
	}
}
