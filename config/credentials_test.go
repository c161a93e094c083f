package config_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/smqgw/smqgw/config"
)

// TestCredentialsDirectory: a file path may begin with
// $CREDENTIALS_DIRECTORY, where systemd puts the unit's LoadCredential=
// files (issue 18: keys a DynamicUser cannot read otherwise).
func TestCredentialsDirectory(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	creds, _ := testDir(t) // ca.pem, cert.pem, key.pem
	_, name := testDir(t)
	tests := []struct {
		cert, key string
		want      string // the cert_file loaded
	}{
		{"$CREDENTIALS_DIRECTORY/cert.pem", "${CREDENTIALS_DIRECTORY}/key.pem", filepath.Join(creds, "cert.pem")},
		{"${CREDENTIALS_DIRECTORY}/cert.pem", "key.pem", filepath.Join(creds, "cert.pem")},
		{"cert.pem", "$CREDENTIALS_DIRECTORY/key.pem", filepath.Join(filepath.Dir(name), "cert.pem")},
	}
	for _, tt := range tests {
		t.Run(tt.cert+","+tt.key, func(t *testing.T) {
			t.Setenv("CREDENTIALS_DIRECTORY", creds)
			src := withListener(`[certs.x]`, `cert_file = "`+tt.cert+`"`, `key_file = "`+tt.key+`"`)
			c, err := config.Parse([]byte(src), name)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Certs["x"].CertFile; got != tt.want {
				t.Errorf("cert_file = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCredentialsDirectoryProblems: only a leading $CREDENTIALS_DIRECTORY
// followed by "/" is expanded, and an unset one is a problem at its key.
func TestCredentialsDirectoryProblems(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/smqgw")
	_, name := testDir(t)
	tests := []struct {
		name, env, cert string
		want            string
	}{
		{"unset", "", "$CREDENTIALS_DIRECTORY/cert.pem",
			`cert_file in [certs.x]: $CREDENTIALS_DIRECTORY is not set: systemd sets it for a unit with LoadCredential=`},
		{"relative", "creds", "${CREDENTIALS_DIRECTORY}/cert.pem", `$CREDENTIALS_DIRECTORY is not set`},
		{"another name", "/creds", "$CREDENTIALS_DIRECTORYX/cert.pem", `cannot read "` + filepath.Dir(name) + `/$CREDENTIALS_DIRECTORYX/cert.pem"`},
		{"not leading", "/creds", "/etc/$CREDENTIALS_DIRECTORY/cert.pem", `cannot read "/etc/$CREDENTIALS_DIRECTORY/cert.pem"`},
		{"missing file", "/creds", "$CREDENTIALS_DIRECTORY/cert.pem", `cannot read "/creds/cert.pem"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CREDENTIALS_DIRECTORY", tt.env)
			src := withListener(`[certs.x]`, `cert_file = "`+tt.cert+`"`, `key_file = "key.pem"`)
			_, err := config.Parse([]byte(src), name)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			got := problems(t, err)
			if len(got) != 1 || got[0].Line != 8 || !strings.Contains(got[0].Msg, tt.want) {
				t.Errorf("problems:\n%v\nwant one at line 8 with %q", err, tt.want)
			}
		})
	}
}
