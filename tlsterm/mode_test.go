package tlsterm_test

import (
	"testing"

	"github.com/smqgw/smqgw/tlsterm"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want tlsterm.Mode
		err  string
	}{
		{in: "off", want: tlsterm.Off},
		{in: "optional", want: tlsterm.Optional},
		{in: "require", want: tlsterm.Require},
		{in: "x", err: `tlsterm: invalid client_auth "x": want off, optional or require`},
		{in: "", err: `tlsterm: invalid client_auth "": want off, optional or require`},
		{in: "Require", err: `tlsterm: invalid client_auth "Require": want off, optional or require`},
		{in: "required", err: `tlsterm: invalid client_auth "required": want off, optional or require`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := tlsterm.ParseMode(tt.in)
			var m tlsterm.Mode = 99
			uerr := m.UnmarshalText([]byte(tt.in))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("ParseMode error %v, want %q", err, tt.err)
				}
				if uerr == nil || uerr.Error() != tt.err || m != 99 {
					t.Fatalf("UnmarshalText error %v (mode %v), want %q and no change", uerr, m, tt.err)
				}
				return
			}
			if err != nil || got != tt.want || uerr != nil || m != tt.want {
				t.Fatalf("ParseMode = %v, %v; UnmarshalText = %v, %v; want %v", got, err, m, uerr, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("String = %q", s)
			}
			if b, err := got.MarshalText(); err != nil || string(b) != tt.in {
				t.Errorf("MarshalText = %q, %v", b, err)
			}
		})
	}
	if s := tlsterm.Mode(7).String(); s != "Mode(7)" {
		t.Errorf("String of an unknown mode = %q", s)
	}
	if _, err := tlsterm.Mode(-1).MarshalText(); err == nil || err.Error() != "tlsterm: invalid client_auth Mode(-1)" {
		t.Errorf("MarshalText of an unknown mode: %v", err)
	}
	var zero tlsterm.Mode
	if zero != tlsterm.Off {
		t.Error("the zero Mode is not Off")
	}
}
