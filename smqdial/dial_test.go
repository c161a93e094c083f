package smqdial_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smqgw/smqgw/internal/smqtest"
	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/smq"
	"github.com/smqgw/smqgw/smqdial"
)

// TestDial dials a real broker over each transport: Init comes first, the
// caller's headers arrive but for those the bootstrap owns, the connection
// has no deadline left, and messages flow.
func TestDial(t *testing.T) {
	noLeak(t)
	ca, clientCA := testpki.NewCA(t), testpki.NewCA(t)
	plain, plainHeaders := startBroker(t, nil)
	secure, secureHeaders := startBroker(t, ca.Server(t).ServerConfig(clientCA.Pool))
	clientTLS := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{clientCA.Client(t, "gw").TLS}}
	for _, tc := range []struct {
		url     string
		tls     *tls.Config
		headers <-chan http.Header
	}{
		{"http://" + plain + "/smq?x=1", nil, plainHeaders},
		{"ws://" + plain + "/smq", nil, plainHeaders},
		{"https://" + secure + "/smq", clientTLS, secureHeaders},
		{"wss://" + secure + "/smq", clientTLS, secureHeaders},
	} {
		scheme, _, _ := strings.Cut(tc.url, ":")
		t.Run(scheme, func(t *testing.T) {
			rd := &recordingDialer{}
			d := &smqdial.Dialer{NetDialer: rd, TLSConfig: tc.tls, Timeout: smqtest.WaitFor}
			h := http.Header{"X-Smq-Client-Cn": {"device-1"}, "simplemq": {"forged"},
				"Upgrade": {"h2c"}, "content-length": {"12"}, "Sec-WebSocket-Key": {"forged"}}
			c, err := d.Dial(context.Background(), mustURL(tc.url), h)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.WebSocket() != strings.HasPrefix(scheme, "ws") {
				t.Errorf("WebSocket() = %v", c.WebSocket())
			}
			if r, w := rd.conn.deadlines(); !r.IsZero() || !w.IsZero() {
				t.Errorf("Dial left deadlines %v, %v on the connection", r, w)
			}
			if m := exchange(t, c, nil); m.Type() != smq.TypeInit {
				t.Fatalf("first message %v, want Init", m.Type())
			}
			if ack, ok := exchange(t, c, smq.Connect{Version: 1, UID: "smqdial-" + scheme}).(smq.Connack); !ok || ack.Code != smq.CodeAccepted {
				t.Fatalf("Connack %+v", ack)
			}
			got := smqtest.Recv(t, tc.headers, "the bootstrap headers")
			if v := got.Get("X-Smq-Client-Cn"); v != "device-1" {
				t.Errorf("X-Smq-Client-Cn %q", v)
			}
			if got.Get("Content-Length") != "" || got.Get("Sec-Websocket-Key") == "forged" ||
				slices.Contains(got.Values("Upgrade"), "h2c") || slices.Contains(got.Values("Simplemq"), "forged") {
				t.Errorf("a header the bootstrap owns got through: %v", got)
			}
		})
	}
}

// TestInitWithAnswer: a broker that sends Init in the same segment as its
// HTTP answer loses nothing: Init is the first message read, on either
// transport.
func TestInitWithAnswer(t *testing.T) {
	noLeak(t)
	msg := smq.Init{Version: 1, Seed: 7, IP: "192.0.2.1"}.Append(nil)
	l := smqtest.Listen(t)
	smqtest.Serve(t, l, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		var answer []byte
		if key := req.Header.Get("Sec-Websocket-Key"); key != "" {
			sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			answer = fmt.Appendf(nil, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"+
				"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
			answer = append(append(answer, 0x82, byte(len(msg))), msg...) // one binary frame
		} else {
			answer = append([]byte("HTTP/1.1 200 OK\r\n\r\n"), must(smq.AppendRaw(nil, msg))...)
		}
		_, _ = c.Write(answer)
		_, _ = c.Read(make([]byte, 1)) // until the dialer closes
	})
	for _, scheme := range []string{"http", "ws"} {
		var d smqdial.Dialer // the zero value dials
		c, err := d.Dial(smqtest.Context(t), mustURL(scheme+"://"+l.Addr().String()+"/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if init, ok := exchange(t, c, nil).(smq.Init); !ok || init.Seed != 7 || init.IP != "192.0.2.1" {
			t.Errorf("%s: got %+v, want the Init sent with the answer", scheme, init)
		}
		c.Close()
	}
}

func TestInvalidURL(t *testing.T) {
	var d smqdial.Dialer
	for _, tc := range []struct{ url, want string }{
		{"ftp://h/", `smqdial: invalid url "ftp://h/": scheme must be http, https, ws or wss`},
		{"http:///smq", `smqdial: invalid url "http:///smq": no host`},
		{"ws://u:secret@:80/", `smqdial: invalid url "ws://u:xxxxx@:80/": no host`},
	} {
		_, err := d.Dial(context.Background(), mustURL(tc.url), nil)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %s", tc.url, err, tc.want)
		}
		if _, err := d.Connect(context.Background(), mustURL(tc.url)); err == nil || err.Error() != tc.want {
			t.Errorf("Connect %s: %v, want %s", tc.url, err, tc.want)
		}
	}
	if _, err := d.Dial(context.Background(), nil, nil); err == nil || err.Error() != "smqdial: no url" {
		t.Errorf("nil url: %v", err)
	}
}

func TestReservedHeader(t *testing.T) {
	for _, k := range []string{"Host", "simplemq", "SENDSMQHTTPRESPONSE", "upgrade", "Connection",
		"sec-websocket-key", "Sec-WebSocket-Protocol", "Content-Length", "transfer-encoding", "TE",
		"Trailer", "Keep-Alive", "Proxy-Connection"} {
		if !smqdial.ReservedHeader(k) {
			t.Errorf("%s is not reserved", k)
		}
	}
	for _, k := range []string{"X-Forwarded-For", "X-SMQ-Client-CN", "Authorization", "Origin", "Cookie"} {
		if smqdial.ReservedHeader(k) {
			t.Errorf("%s is reserved", k)
		}
	}
}

// TestConnect: Connect stops after the TCP connection.
func TestConnect(t *testing.T) {
	noLeak(t)
	srv := silentServer(t, nil)
	d := &smqdial.Dialer{Timeout: smqtest.WaitFor}
	c, err := d.Connect(context.Background(), mustURL("wss://"+srv.addr+"/smq"))
	if err != nil {
		t.Fatal(err)
	}
	smqtest.Recv(t, srv.accepted, "the connection")
	c.Close()
	select {
	case <-srv.heard:
		t.Error("Connect sent something")
	default:
	}
}

// recordingDialer dials a recordingConn.
type recordingDialer struct {
	net.Dialer
	conn *recordingConn
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.conn = &recordingConn{Conn: c}
	return d.conn, nil
}

// recordingConn keeps the last deadlines set on it.
type recordingConn struct {
	net.Conn
	mu   sync.Mutex
	r, w time.Time
}

func (c *recordingConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.r, c.w = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *recordingConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.r = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *recordingConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.w = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *recordingConn) deadlines() (r, w time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r, c.w
}
