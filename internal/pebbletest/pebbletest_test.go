//go:build unix

package pebbletest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/acme"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"plain", Options{}},
		{"EAB", Options{EAB: map[string][]byte{"kid-1": []byte("0123456789abcdef0123456789abcdef")}}},
		// Pebble asks its DNS server only when it validates, so one that
		// does not answer (the discard port) is enough here.
		{"DNSServer", Options{DNSServer: "127.0.0.1:9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := Start(t, tt.opts)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			body, err := p.getOK(ctx, p.DirectoryURL)
			if err != nil {
				t.Fatal(err)
			}
			var dir struct {
				NewAccount string `json:"newAccount"`
				NewOrder   string `json:"newOrder"`
				Meta       struct {
					ExternalAccountRequired bool `json:"externalAccountRequired"`
				} `json:"meta"`
			}
			if err := json.Unmarshal(body, &dir); err != nil {
				t.Fatalf("directory %s: %v", body, err)
			}
			if dir.NewAccount == "" || dir.NewOrder == "" {
				t.Errorf("directory lacks newAccount or newOrder: %s", body)
			}
			if want := tt.opts.EAB != nil; dir.Meta.ExternalAccountRequired != want {
				t.Errorf("meta.externalAccountRequired = %v, want %v", dir.Meta.ExternalAccountRequired, want)
			}
			if p.HTTPPort == 0 || p.TLSPort == 0 || p.HTTPPort == p.TLSPort {
				t.Errorf("validation ports %d and %d", p.HTTPPort, p.TLSPort)
			}
			if tt.opts.DNSServer != "" && (p.DNSAddr != tt.opts.DNSServer || p.ChallSrvURL != "" || len(p.procs) != 1) {
				t.Errorf("with DNSServer %q: DNSAddr %q, ChallSrvURL %q, %d processes; want pebble alone on that server",
					tt.opts.DNSServer, p.DNSAddr, p.ChallSrvURL, len(p.procs))
			}
			if p.Roots(t) == nil {
				t.Error("no roots")
			}

			p.Stop()
			p.Stop() // idempotent
			assertStopped(t, p)
		})
	}
}

// TestStartRetriesTakenPort: when a listener elsewhere takes a port between
// its reservation and Pebble's bind, Start tries other ports. (Not parallel:
// the hook is the package's.)
func TestStartRetriesTakenPort(t *testing.T) {
	var taken []net.Listener
	portsReleased = func(ports ...int) {
		if len(taken) > 0 {
			return // only the first attempt
		}
		// Pebble's ACME directory port: the one Pebble itself binds.
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])))
		if err != nil {
			t.Errorf("taking port %d: %v", ports[1], err)
			return
		}
		taken = append(taken, l)
	}
	defer func() {
		portsReleased = nil
		for _, l := range taken {
			l.Close()
		}
	}()
	p := Start(t, Options{})
	if len(taken) != 1 {
		t.Fatalf("the hook took %d ports, want 1", len(taken))
	}
	if strings.HasSuffix(p.DirectoryURL, taken[0].Addr().String()+"/dir") {
		t.Errorf("directory %s is on the taken port", p.DirectoryURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.getOK(ctx, p.DirectoryURL); err != nil {
		t.Fatal(err)
	}
}

// TestIssueHTTP01 gets a certificate the way an ACME client does, with
// external account binding and HTTP-01, and checks that validation is real:
// an unanswered challenge fails.
func TestIssueHTTP01(t *testing.T) {
	t.Parallel()
	var responses sync.Map // challenge path → key authorization
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := responses.Load(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, v.(string))
	}))
	t.Cleanup(srv.Close)

	hmacKey := []byte("pebbletest HMAC key of 32 bytes.")
	p := Start(t, Options{
		HTTPPort: srv.Listener.Addr().(*net.TCPAddr).Port,
		EAB:      map[string][]byte{"kid-1": hmacKey},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := newClient(t, p).Register(ctx, &acme.Account{}, acme.AcceptTOS); err == nil {
		t.Error("registered without external account binding")
	}
	cl := newClient(t, p)
	eab := &acme.ExternalAccountBinding{KID: "kid-1", Key: hmacKey}
	if _, err := cl.Register(ctx, &acme.Account{ExternalAccountBinding: eab}, acme.AcceptTOS); err != nil {
		t.Fatalf("register with binding: %v", err)
	}

	const domain = "gw.pebbletest.example"
	authorize := func(answer bool) error {
		order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(domain))
		if err != nil {
			t.Fatalf("new order: %v", err)
		}
		for _, u := range order.AuthzURLs {
			z, err := cl.GetAuthorization(ctx, u)
			if err != nil {
				t.Fatalf("authorization: %v", err)
			}
			var chal *acme.Challenge
			for _, c := range z.Challenges {
				if c.Type == "http-01" {
					chal = c
				}
			}
			if chal == nil {
				t.Fatalf("no http-01 challenge in %+v", z.Challenges)
			}
			if answer {
				resp, err := cl.HTTP01ChallengeResponse(chal.Token)
				if err != nil {
					t.Fatal(err)
				}
				responses.Store(cl.HTTP01ChallengePath(chal.Token), resp)
			}
			if _, err := cl.Accept(ctx, chal); err != nil {
				t.Fatalf("accept: %v", err)
			}
			if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
				return err
			}
		}
		leaf, inter := finalize(t, ctx, cl, order, domain)
		opts := x509.VerifyOptions{DNSName: domain, Roots: p.Roots(t), Intermediates: inter}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("issued certificate does not verify against Roots: %v", err)
		}
		opts.Roots = p.CAPool
		if _, err := leaf.Verify(opts); err == nil {
			t.Error("issued certificate verifies against CAPool")
		}
		return nil
	}

	var authzErr *acme.AuthorizationError
	if err := authorize(false); !errors.As(err, &authzErr) {
		t.Errorf("unanswered HTTP-01 challenge: got %v, want an authorization error", err)
	}
	if err := authorize(true); err != nil {
		t.Errorf("answered HTTP-01 challenge: %v", err)
	}
}

func newClient(t *testing.T, p *Pebble) *acme.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &acme.Client{Key: key, DirectoryURL: p.DirectoryURL, HTTPClient: &http.Client{Transport: tr}}
}

// assertStopped checks that nothing of p is left: each tool exited and
// was reaped, and no process is left in its process group. (Its sockets go
// with its processes. Dialing its ports would prove less: a parallel test
// may already listen on one again.)
func assertStopped(t *testing.T, p *Pebble) {
	t.Helper()
	for _, pr := range p.procs {
		if pr.Cmd.ProcessState == nil {
			t.Errorf("%s (pid %d) was not waited for", pr.name, pr.Cmd.Process.Pid)
		}
		if err := syscall.Kill(-pr.Cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s process group %d: %v, want ESRCH", pr.name, pr.Cmd.Process.Pid, err)
		}
	}
}

// finalize waits for order to be ready, finalizes it with a new ECDSA key
// for names, and returns the leaf and the intermediates of the chain.
func finalize(t *testing.T, ctx context.Context, cl *acme.Client, order *acme.Order, names ...string) (*x509.Certificate, *x509.CertPool) {
	t.Helper()
	order, err := cl.WaitOrder(ctx, order.URI)
	if err != nil {
		t.Fatalf("order not ready: %v", err)
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, certKey)
	if err != nil {
		t.Fatal(err)
	}
	// Not CreateOrderCert: Pebble finalizes asynchronously and answers
	// without a Location, so that loses the order URL to poll.
	chain, _, err := cl.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		t.Fatalf("finalize: %v", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	return leaf, inter
}
