// Package redact hides the secrets in the user info of URLs that may not
// parse, so that a message can quote them.
package redact

import "strings"

// Password hides the password of user:password@ as url.URL.Redacted does:
// "http://user:xxxxx@host". A user without a password is left as it is.
func Password(s string) string {
	return redact(s, false)
}

// Secret hides the password of user:password@, as Password does, and the
// whole user info when it has no colon, a token: "nats://xxxxx@host".
func Secret(s string) string {
	return redact(s, true)
}

// redact hides the secret in the user info of s's authority (the part
// after "://", if any, up to the path, query or fragment, and before its
// last "@"): the text after the first colon, or with token the whole user
// info when it has no colon.
func redact(s string, token bool) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	authority := s[start:]
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	if colon := strings.Index(authority[:at], ":"); colon >= 0 {
		return s[:start+colon+1] + "xxxxx" + s[start+at:]
	}
	if !token {
		return s
	}
	return s[:start] + "xxxxx" + s[start+at:]
}
