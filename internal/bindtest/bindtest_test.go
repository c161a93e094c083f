//go:build unix

package bindtest

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestUpdate: an update signed with the key adds a TXT record that a query
// then sees, and a second one removes it, for each key algorithm.
func TestUpdate(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"", "hmac-sha1", "hmac-sha512"} {
		t.Run("alg="+alg, func(t *testing.T) {
			t.Parallel()
			s := Start(t, Options{Algorithm: alg})
			if want := cmp.Or(alg, "hmac-sha256"); s.KeyAlgorithm != want {
				t.Errorf("KeyAlgorithm = %q, want %q", s.KeyAlgorithm, want)
			}
			if s.Zone != DefaultZone || !strings.HasPrefix(s.Addr, "127.0.0.1:") {
				t.Errorf("Zone %q, Addr %q", s.Zone, s.Addr)
			}
			const name = "_acme-challenge.example.test."
			if got := s.TXT(t, name); len(got) != 0 {
				t.Fatalf("TXT before the update: %q", got)
			}
			s.Update(t, name, "value-1")
			s.Update(t, "_acme-challenge.example.test", "value-2") // not fully qualified
			got := s.TXT(t, name)
			slices.Sort(got)
			if want := []string{"value-1", "value-2"}; !slices.Equal(got, want) {
				t.Errorf("TXT after the updates: %q, want %q", got, want)
			}
			s.Delete(t, name, "value-1")
			if got, want := s.TXT(t, name), []string{"value-2"}; !slices.Equal(got, want) {
				t.Errorf("TXT after a delete: %q, want %q", got, want)
			}
			s.Delete(t, name, "value-2")
			if got := s.TXT(t, name); len(got) != 0 {
				t.Errorf("TXT after the deletes: %q", got)
			}
		})
	}
}

// TestUpdateRefused records what named answers to the updates an RFC 2136
// client must report: a wrong secret, a key it does not know, and a zone it
// does not serve.
func TestUpdateRefused(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	const name = "_acme-challenge.example.test."

	// named answers NOTAUTH with an unsigned TSIG record carrying the
	// TSIG error. miekg/dns returns such an answer with ErrAuth, as it does
	// every NOTAUTH answer, without verifying its TSIG.
	for _, tt := range []struct {
		name, key, secret string
		tsigErr           int
	}{
		{"wrong secret", "", wrongSecret, dns.RcodeBadSig},
		{"unknown key name", "no-such-key", s.KeySecret, dns.RcodeBadKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := s.update(s.Zone, tt.key, tt.secret, true, name, "v")
			if r == nil || !errors.Is(err, dns.ErrAuth) {
				t.Fatalf("answer %v, error %v; want one with ErrAuth", r, err)
			}
			if r.Rcode != dns.RcodeNotAuth {
				t.Errorf("rcode %s, want NOTAUTH", dns.RcodeToString[r.Rcode])
			}
			if tsig := r.IsTsig(); tsig == nil || int(tsig.Error) != tt.tsigErr || tsig.MAC != "" {
				t.Errorf("TSIG %v, want an unsigned one with error %s", tsig, dns.RcodeToString[tt.tsigErr])
			}
		})
	}

	t.Run("unknown zone", func(t *testing.T) {
		r, err := s.update("other.test.", "", s.KeySecret, true, "_acme-challenge.other.test.", "v")
		// NOTAUTH again (so ErrAuth from miekg/dns), but signed with the
		// key and TSIG error NOERROR: that tells it from a wrong key.
		if r == nil || !errors.Is(err, dns.ErrAuth) {
			t.Fatalf("answer %v, error %v; want one with ErrAuth", r, err)
		}
		if r.Rcode != dns.RcodeNotAuth {
			t.Errorf("rcode %s, want NOTAUTH", dns.RcodeToString[r.Rcode])
		}
		if tsig := r.IsTsig(); tsig == nil || tsig.Error != dns.RcodeSuccess || tsig.MAC == "" {
			t.Errorf("TSIG %v, want a signed one with error NOERROR", tsig)
		}
	})

	t.Run("query outside the zones", func(t *testing.T) {
		q := new(dns.Msg).SetQuestion("_acme-challenge.other.test.", dns.TypeTXT)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: queryTimeout}).Exchange(q, s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})

	if got := s.TXT(t, name); len(got) != 0 {
		t.Errorf("TXT after refused updates: %q", got)
	}
}

// TestZones serves two zones; each takes updates for its own names.
func TestZones(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Zones: []string{"Example.TEST.", "other.example."}})
	if want := []string{"example.test.", "other.example."}; !slices.Equal(s.Zones, want) || s.Zone != want[0] {
		t.Fatalf("Zones %q, Zone %q, want %q", s.Zones, s.Zone, want)
	}
	s.Update(t, "_acme-challenge.gw.other.example.", "in-other")
	s.Update(t, "_acme-challenge.example.test.", "in-first")
	if got := s.TXT(t, "_acme-challenge.gw.other.example."); !slices.Equal(got, []string{"in-other"}) {
		t.Errorf("TXT in the second zone: %q", got)
	}
	if got := s.TXT(t, "_acme-challenge.example.test."); !slices.Equal(got, []string{"in-first"}) {
		t.Errorf("TXT in the first zone: %q", got)
	}
}

// TestStop: after Stop, named was waited for and its process group is gone.
func TestStop(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.Stop()
	s.Stop() // idempotent
	cmd := s.proc.Cmd
	if cmd.ProcessState == nil {
		t.Fatalf("named (pid %d) was not waited for", cmd.Process.Pid)
	}
	if s.proc.Crashed() {
		t.Errorf("named exited before Stop: %v", s.proc.Err())
	}
	if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d: %v, want ESRCH", cmd.Process.Pid, err)
	}
}

// TestStartRetriesTakenPort: when another program takes the port, UDP or
// TCP, between its reservation and named's bind, Start tries another port.
// (Not parallel: the hook is the package's.)
func TestStartRetriesTakenPort(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			var taken []io.Closer
			portReleased = func(port int) {
				if len(taken) > 0 {
					return // only the first attempt
				}
				addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
				var c io.Closer
				var err error
				if network == "udp" {
					c, err = net.ListenPacket("udp", addr)
				} else {
					c, err = net.Listen("tcp", addr)
				}
				if err != nil {
					t.Errorf("taking %s port %d: %v", network, port, err)
					return
				}
				taken = append(taken, c)
			}
			defer func() {
				portReleased = nil
				for _, c := range taken {
					c.Close()
				}
			}()
			s := Start(t, Options{})
			if len(taken) != 1 {
				t.Fatalf("the hook took %d ports, want 1", len(taken))
			}
			s.Update(t, "_acme-challenge.example.test.", "v")
			if got := s.TXT(t, "_acme-challenge.example.test."); !slices.Equal(got, []string{"v"}) {
				t.Errorf("TXT %q", got)
			}
		})
	}
}

// TestHookScript runs the exec hook as an ACME client would.
func TestHookScript(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	hook := HookScript(t, s)
	const name, value = "_acme-challenge.gw.example.test.", "Zm9vYmFyLWJhei1xdXV4LWNoYWxsZW5nZS12YWx1ZQ"

	run := func(t *testing.T, hook string, args ...string) (stderr string, err error) {
		t.Helper()
		var out bytes.Buffer
		cmd := exec.Command(hook, args...)
		cmd.Stdout = &out
		cmd.Stderr = &out
		cmd.WaitDelay = 5 * time.Second
		err = cmd.Run()
		return out.String(), err
	}

	if out, err := run(t, hook, "present", name, value); err != nil {
		t.Fatalf("present: %v\n%s", err, out)
	}
	if got := s.TXT(t, name); !slices.Equal(got, []string{value}) {
		t.Errorf("TXT after present: %q, want %q", got, value)
	}
	if out, err := run(t, hook, "cleanup", strings.TrimSuffix(name, "."), value); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if got := s.TXT(t, name); len(got) != 0 {
		t.Errorf("TXT after cleanup: %q", got)
	}

	wrongKey := HookScript(t, &Server{
		Addr: s.Addr, Zone: s.Zone, KeyName: s.KeyName, KeyAlgorithm: s.KeyAlgorithm,
		KeySecret: wrongSecret,
	})
	tests := []struct {
		name string
		hook string
		args []string
		want string // in the output
	}{
		{"wrong key", wrongKey, []string{"present", name, value}, "NOTAUTH(BADSIG)"},
		{"unknown action", hook, []string{"remove", name, value}, "usage"},
		{"bad value", hook, []string{"present", name, `x" ; rm -rf`}, "invalid value"},
		{"zone elsewhere", hook, []string{"present", "_acme-challenge.other.test", value}, "NOTZONE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, tt.hook, tt.args...)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit: %v, want a non-zero status; output:\n%s", err, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output %q, want it to contain %q", out, tt.want)
			}
		})
	}
	if got := s.TXT(t, name); len(got) != 0 {
		t.Errorf("TXT after failed hooks: %q", got)
	}
}

// wrongSecret is a well-formed secret that no Server has.
const wrongSecret = "d3Jvbmcgc2VjcmV0IG9mIDMyIGJ5dGVzLi4uLi4uLi4="
