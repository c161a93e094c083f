package redact

import "testing"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, password, secret string }{
		{"http://u:p@h:8080", "http://u:xxxxx@h:8080", "http://u:xxxxx@h:8080"},
		{"u:p@h:8080", "u:xxxxx@h:8080", "u:xxxxx@h:8080"},
		{"nats://token@h:4222", "nats://token@h:4222", "nats://xxxxx@h:4222"},
		{"nats://h:4222", "nats://h:4222", "nats://h:4222"},
		{"tls://u:p@a@h:4222/x@y", "tls://u:xxxxx@h:4222/x@y", "tls://u:xxxxx@h:4222/x@y"},
		{"http://h/a:b@c", "http://h/a:b@c", "http://h/a:b@c"},
		{"http://u:p@h?x@y#z@w", "http://u:xxxxx@h?x@y#z@w", "http://u:xxxxx@h?x@y#z@w"},
		{"", "", ""},
	} {
		if got := Password(tc.in); got != tc.password {
			t.Errorf("Password(%q) = %q, want %q", tc.in, got, tc.password)
		}
		if got := Secret(tc.in); got != tc.secret {
			t.Errorf("Secret(%q) = %q, want %q", tc.in, got, tc.secret)
		}
	}
}
