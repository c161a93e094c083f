//go:build unix

package bindtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// HookScript writes an executable shell script into a t.TempDir that sets
// TXT records in s with Debian's nsupdate (package bind9-dnsutils), and
// returns its path. It follows the convention of lego's exec provider and
// of acme.sh's hooks:
//
//	script present FQDN VALUE   adds the TXT record FQDN VALUE (TTL 60)
//	script cleanup FQDN VALUE   removes it
//
// FQDN may end in a dot or not and must lie in s.Zone; VALUE must be
// base64url, as DNS-01 values are. The script exits 0 once named accepted
// the update, and otherwise non-zero with nsupdate's message on stderr
// ("update failed: NOTAUTH(BADSIG)" for a wrong key). The key is written
// into the script, which only its owner can read.
//
// Without nsupdate, HookScript skips t, or fails it if the environment
// variable CI is "true".
func HookScript(t testing.TB, s *Server) string {
	t.Helper()
	nsupdate := LookPath(t, "nsupdate")
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		t.Fatalf("bindtest: %v", err)
	}
	script := fmt.Sprintf(`#!/bin/sh
# DNS-01 hook written by bindtest.HookScript: present|cleanup FQDN VALUE.
set -eu
usage() { echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2; }
[ $# -eq 3 ] || usage
case $1 in
present) op=add ;;
cleanup) op=delete ;;
*) usage ;;
esac
fqdn=$2
value=$3
case $fqdn in
''|*[!A-Za-z0-9._*-]*) echo "$0: invalid name \"$fqdn\"" >&2; exit 2 ;;
*.) ;;
*) fqdn=$fqdn. ;;
esac
case $value in
''|*[!A-Za-z0-9_-]*) echo "$0: invalid value \"$value\": want base64url" >&2; exit 2 ;;
esac
# -t: seconds before nsupdate gives up on the server.
exec %s -t 10 -y %s <<EOF
server 127.0.0.1 %s
zone %s
update $op $fqdn 60 TXT "$value"
send
EOF
`, shellQuote(nsupdate), shellQuote(s.KeyAlgorithm+":"+s.KeyName+":"+s.KeySecret), port, s.Zone)
	path := filepath.Join(t.TempDir(), "dns-hook")
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatalf("bindtest: %v", err)
	}
	return path
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
