package smq_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/smqgw/smqgw/smq"
)

// The bootstrap requests of SMQ-WIRE.md §2, as each client sends them.
const (
	reqC      = "GET /smq.lsp HTTP/1.0\r\nHost: broker.example\r\nSimpleMQ: 1\r\nUser-Agent: SimpleMQ/1\r\n\r\n"
	reqPython = "GET /smq.lsp HTTP/1.1\r\nHost: broker.example\r\nSimpleMQ: 1\r\nSendSmqHttpResponse: true\r\n" +
		"Connection: keep-alive\r\nX-App: 42\r\n\r\n"
	reqLua  = "GET /smq.lsp HTTP/1.1\r\nSimpleMQ: 1\r\nSendSmqHttpResponse: true\r\n\r\n"
	reqJava = "GET /smq.lsp HTTP/1.1\r\nHost: broker.example:443\r\nSimpleMQ: true\r\nSendSmqHttpResponse: true\r\n\r\n"
	reqWS   = "GET /smq.lsp HTTP/1.1\r\nHost: broker.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	reqPlain = "GET /index.html HTTP/1.1\r\nHost: broker.example\r\nAccept: */*\r\n\r\n"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		req  string
		want smq.Bootstrap
	}{
		{"C", reqC, smq.Bootstrap{SMQ: true}},
		{"Python", reqPython, smq.Bootstrap{SMQ: true, SendHTTPResponse: true}},
		{"Lua", reqLua, smq.Bootstrap{SMQ: true, SendHTTPResponse: true}},
		{"Java", reqJava, smq.Bootstrap{SMQ: true, SendHTTPResponse: true}},
		{"WebSocket", reqWS, smq.Bootstrap{SMQ: true, WebSocket: true}},
		{"key-only", "GET / HTTP/1.1\r\nSec-WebSocket-Key: x\r\n\r\n", smq.Bootstrap{SMQ: true}},
		{"plain", reqPlain, smq.Bootstrap{}},
		{"plain-upgrade", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", smq.Bootstrap{WebSocket: true}},
		{"lowercase", "GET / HTTP/1.1\r\nsimplemq: 1\r\nsendsmqhttpresponse: true\r\n\r\n",
			smq.Bootstrap{SMQ: true, SendHTTPResponse: true}},
		{"uppercase", "GET / HTTP/1.1\r\nSIMPLEMQ: x\r\nSENDSMQHTTPRESPONSE: true\r\n\r\n",
			smq.Bootstrap{SMQ: true, SendHTTPResponse: true}},
		{"lowercase-ws-key", "GET / HTTP/1.1\r\nsec-websocket-key: x\r\nupgrade: WebSocket\r\n\r\n",
			smq.Bootstrap{SMQ: true, WebSocket: true}},
		{"empty-simplemq", "GET / HTTP/1.1\r\nSimpleMQ:\r\n\r\n", smq.Bootstrap{SMQ: true}},
		{"post-with-query", "POST /other?x=1 HTTP/1.1\r\nSimpleMQ: 0\r\n\r\n", smq.Bootstrap{SMQ: true}},
		{"response-True", "GET / HTTP/1.1\r\nSimpleMQ: 1\r\nSendSmqHttpResponse: True\r\n\r\n", smq.Bootstrap{SMQ: true}},
		{"response-1", "GET / HTTP/1.1\r\nSimpleMQ: 1\r\nSendSmqHttpResponse: 1\r\n\r\n", smq.Bootstrap{SMQ: true}},
		{"response-trueish", "GET / HTTP/1.1\r\nSimpleMQ: 1\r\nSendSmqHttpResponse: true, false\r\n\r\n",
			smq.Bootstrap{SMQ: true}},
		{"similar-names", "GET / HTTP/1.1\r\nSimpleMQX: 1\r\nX-SimpleMQ: 1\r\nSec-WebSocket-Key2: x\r\n\r\n", smq.Bootstrap{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.req)))
			if err != nil {
				t.Fatal(err)
			}
			if got := smq.Classify(req.Header); got != tc.want {
				t.Errorf("Classify = %+v, want %+v", got, tc.want)
			}
			// ReadRequest classifies the same way.
			_, got, err := smq.ReadRequest(bufio.NewReader(strings.NewReader(tc.req)))
			if err != nil || got != tc.want {
				t.Errorf("ReadRequest = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// Headers set through the http.Header API are canonical whatever the case
// the caller used.
func TestClassifyHeaderAPI(t *testing.T) {
	h := http.Header{}
	h.Set("simplemq", "1")
	h.Set("SENDSMQHTTPRESPONSE", "true")
	if got := smq.Classify(h); got != (smq.Bootstrap{SMQ: true, SendHTTPResponse: true}) {
		t.Errorf("Classify = %+v", got)
	}
	if got := smq.Classify(nil); got != (smq.Bootstrap{}) {
		t.Errorf("Classify(nil) = %+v", got)
	}
}

func TestReadRequestKeepsPipelinedBytes(t *testing.T) {
	connect := frame(join(b(2, 1, 6), s("abcdef"), b(0)))
	for _, tc := range []struct {
		name string
		head string
		wrap func(io.Reader) io.Reader
	}{
		{"python", reqPython, nil},
		{"python-one-byte", reqPython, iotest.OneByteReader},
		{"c", reqC, iotest.HalfReader},
		{"bare-lf", "GET / HTTP/1.0\nSimpleMQ: 1\n\n", nil},
		{"lf-then-crlf", "GET / HTTP/1.0\nSimpleMQ: 1\n\r\n", iotest.OneByteReader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A Connect, and bytes that look like a head end, after the head.
			var in io.Reader = bytes.NewReader(join(s(tc.head), connect, frame(s("\x04\r\n\r\n"))))
			if tc.wrap != nil {
				in = tc.wrap(in)
			}
			br := bufio.NewReaderSize(in, 64<<10)
			req, bs, err := smq.ReadRequest(br)
			if err != nil || !bs.SMQ || req.Method != http.MethodGet {
				t.Fatalf("ReadRequest = %v, %+v, %v", req, bs, err)
			}
			r := smq.NewReader(br)
			got, err := readAll(t, r)
			if err != io.EOF {
				t.Errorf("final error %v", err)
			}
			sameMessages(t, got, [][]byte{connect[2:], s("\x04\r\n\r\n")})
		})
	}
}

// The head ends at its first empty line, whatever line ends it uses and
// whatever follows it, the way net/textproto reads it.
func TestReadRequestHeadEnds(t *testing.T) {
	ping := frame(b(12))
	// Pipelined bytes holding a CRLFCRLF far behind a bare-LF head end.
	farCRLF := join(frame(publishMsg(1, 17000)), frame(s("\x04\r\n\r\n")))
	for _, tc := range []struct {
		name, head string
		after      []byte
	}{
		{"crlf-crlf", "GET / HTTP/1.1\r\nSimpleMQ: 1\r\n\r\n", ping},
		{"lf-lf", "GET / HTTP/1.1\nSimpleMQ: 1\n\n", ping},
		{"lf-crlf", "GET / HTTP/1.1\nSimpleMQ: 1\n\r\n", ping},
		{"crlf-lf", "GET / HTTP/1.1\r\nSimpleMQ: 1\r\n\n", ping},
		{"lf-lf-then-far-crlf", "GET / HTTP/1.1\nSimpleMQ: 1\n\n", farCRLF},
	} {
		for _, wrap := range []func(io.Reader) io.Reader{nil, iotest.OneByteReader} {
			name := tc.name
			if wrap != nil {
				name += "/one-byte"
			}
			t.Run(name, func(t *testing.T) {
				var in io.Reader = bytes.NewReader(join(s(tc.head), tc.after))
				if wrap != nil {
					in = wrap(in)
				}
				br := bufio.NewReaderSize(in, 64<<10)
				_, bs, err := smq.ReadRequest(br)
				if err != nil || !bs.SMQ {
					t.Fatalf("ReadRequest = %+v, %v", bs, err)
				}
				if rest, _ := io.ReadAll(br); !bytes.Equal(rest, tc.after) {
					t.Errorf("left %d bytes after the head, want %d", len(rest), len(tc.after))
				}
			})
		}
	}
}

func TestReadRequestHeadSize(t *testing.T) {
	head := func(n int) string {
		const pre, post = "GET / HTTP/1.1\r\nSimpleMQ: 1\r\nX-Pad: ", "\r\n\r\n"
		return pre + strings.Repeat("p", n-len(pre)-len(post)) + post
	}
	tests := []struct {
		name    string
		head    string
		bufSize int
		wrap    func(io.Reader) io.Reader
		ok      bool
	}{
		{"max", head(smq.MaxHeadSize), 64 << 10, nil, true},
		{"max-one-byte", head(smq.MaxHeadSize), 64 << 10, iotest.OneByteReader, true},
		{"max+1", head(smq.MaxHeadSize + 1), 64 << 10, nil, false},
		{"max+1-one-byte", head(smq.MaxHeadSize + 1), 64 << 10, iotest.OneByteReader, false},
		{"20k", head(20 << 10), 64 << 10, nil, false},
		{"20k-max-buffer", head(20 << 10), smq.MaxHeadSize, nil, false},
		{"over-small-buffer", head(5000), 4096, nil, false},
		{"fits-small-buffer", head(4096), 4096, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var in io.Reader = strings.NewReader(tc.head + "\x00\x03\x0c")
			if tc.wrap != nil {
				in = tc.wrap(in)
			}
			br := bufio.NewReaderSize(in, tc.bufSize)
			_, bs, err := smq.ReadRequest(br)
			if tc.ok {
				if err != nil || !bs.SMQ {
					t.Fatalf("ReadRequest = %+v, %v", bs, err)
				}
				if rest, _ := io.ReadAll(br); string(rest) != "\x00\x03\x0c" {
					t.Errorf("left % x after the head", rest)
				}
				return
			}
			if !errors.Is(err, smq.ErrBadBootstrap) || !strings.Contains(err.Error(), "HTTP head is larger than") {
				t.Fatalf("ReadRequest error = %v, want ErrBadBootstrap about the head size", err)
			}
			if bs != (smq.Bootstrap{}) {
				t.Errorf("Bootstrap = %+v with an error", bs)
			}
		})
	}
}

func TestReadRequestMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   string
		err  error
	}{
		{"empty", "", io.EOF},
		{"cut-in-request-line", "GET / HT", io.ErrUnexpectedEOF},
		{"cut-in-headers", "GET / HTTP/1.1\r\nSimpleMQ: 1\r\n", io.ErrUnexpectedEOF},
		{"not-http", "hello\r\n\r\n", smq.ErrBadBootstrap},
		{"smq-frame", "\x00\x03\x0c\n\n", smq.ErrBadBootstrap},
		{"bad-header-line", "GET / HTTP/1.1\r\nno colon here\r\n\r\n", smq.ErrBadBootstrap},
		{"bad-version", "GET / HTTP/9\r\nSimpleMQ: 1\r\n\r\n", smq.ErrBadBootstrap},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, bs, err := smq.ReadRequest(bufio.NewReaderSize(strings.NewReader(tc.in), 64<<10))
			if req != nil || bs != (smq.Bootstrap{}) {
				t.Errorf("ReadRequest returned %v, %+v with error %v", req, bs, err)
			}
			if tc.err == smq.ErrBadBootstrap {
				if !errors.Is(err, tc.err) || !strings.HasPrefix(err.Error(), "smq: bad bootstrap: ") {
					t.Errorf("err = %v, want ErrBadBootstrap", err)
				}
			} else if err != tc.err {
				t.Errorf("err = %v, want exactly %v", err, tc.err)
			}
		})
	}
}

func TestRequestAppend(t *testing.T) {
	r := smq.Request{
		Path:             "/smq.lsp?x=1",
		Host:             "broker.example:9443",
		SendHTTPResponse: true,
		Header: http.Header{
			"X-Forwarded-For": {"192.0.2.7"},
			"X-Client-Cert":   {"CN=alice", "CN=bob", "CN=J\u00fcrgen\xff\tx"},
			// Headers the request sets itself cannot be overridden.
			"Host":                {"evil"},
			"Simplemq":            {"evil"},
			"Sendsmqhttpresponse": {"false"},
			"Upgrade":             {"websocket"},
			"Connection":          {"Upgrade"},
		},
	}
	out := r.Append(s("prefix"))
	if !bytes.HasPrefix(out, s("prefix")) {
		t.Fatalf("dst not kept: %q", out)
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out[len("prefix"):])))
	if err != nil {
		t.Fatalf("http.ReadRequest(%q): %v", out, err)
	}
	if req.Method != "GET" || req.RequestURI != "/smq.lsp?x=1" || req.Host != "broker.example:9443" || req.Proto != "HTTP/1.1" {
		t.Errorf("request line/host: %s %s %s host %q", req.Method, req.RequestURI, req.Proto, req.Host)
	}
	want := http.Header{
		"Simplemq":            {"1"},
		"Sendsmqhttpresponse": {"true"},
		"X-Forwarded-For":     {"192.0.2.7"},
		"X-Client-Cert":       {"CN=alice", "CN=bob", "CN=J\u00fcrgen\xff\tx"},
	}
	if !equalHeader(req.Header, want) {
		t.Errorf("headers = %v, want %v", req.Header, want)
	}
	if bs := smq.Classify(req.Header); bs != (smq.Bootstrap{SMQ: true, SendHTTPResponse: true}) {
		t.Errorf("Classify = %+v", bs)
	}

	// The zero Request: path "/", no SendSmqHttpResponse.
	out = (&smq.Request{Host: "h"}).Append(nil)
	if want := "GET / HTTP/1.1\r\nHost: h\r\nSimpleMQ: 1\r\n\r\n"; string(out) != want {
		t.Errorf("zero Request = %q, want %q", out, want)
	}
}

func equalHeader(got, want http.Header) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if strings.Join(got[k], "\x00") != strings.Join(v, "\x00") {
			return false
		}
	}
	return true
}

func TestRequestAppendNoInjection(t *testing.T) {
	r := smq.Request{
		Path: "/p\r\nX-Injected: path\x00\x7f HTTP/1.1",
		Host: "h\r\nX-Injected: host",
		Header: http.Header{
			"X-Forwarded-For":           {"1.2.3.4\r\nX-Injected: value", "5.6.7.8\nX-Injected: lf", "\r\n\r\n\x00\x03\x0c\x7f"},
			"X-Bad\r\nX-Injected: name": {"v"},
		},
	}
	out := r.Append(nil)
	br := bufio.NewReader(bytes.NewReader(out))
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("http.ReadRequest(%q): %v", out, err)
	}
	if br.Buffered() != 0 {
		t.Errorf("%d bytes after the head: %q", br.Buffered(), out)
	}
	for k := range req.Header {
		if k != "Simplemq" && k != "X-Forwarded-For" {
			t.Errorf("unexpected header %q in %q", k, out)
		}
	}
	if n := len(req.Header["X-Forwarded-For"]); n != 3 {
		t.Errorf("X-Forwarded-For has %d values, want 3", n)
	}
	if strings.Count(string(out), "\r\n\r\n") != 1 || bytes.Count(out, s("\n")) != 7 {
		t.Errorf("head has extra lines: %q", out)
	}
}

func TestWriteResponse(t *testing.T) {
	if smq.ResponseHead != "HTTP/1.1 200 OK\r\nSmqBroker: true\r\n\r\n" {
		t.Errorf("ResponseHead = %q", smq.ResponseHead)
	}
	var buf bytes.Buffer
	if err := smq.WriteResponse(&buf, smq.Bootstrap{SMQ: true, SendHTTPResponse: true}); err != nil ||
		buf.String() != smq.ResponseHead {
		t.Errorf("WriteResponse = %q, %v", buf.String(), err)
	}
	buf.Reset()
	if err := smq.WriteResponse(&buf, smq.Bootstrap{SMQ: true}); err != nil || buf.Len() != 0 {
		t.Errorf("WriteResponse without SendHTTPResponse = %q, %v", buf.String(), err)
	}
}

func TestReadResponse(t *testing.T) {
	initMsg := join(b(1, 1, 1, 2, 3, 4), s("192.0.2.1"))
	tests := []struct {
		name     string
		in       []byte
		wrap     func(io.Reader) io.Reader
		head     bool
		err      error // nil, an io error, or ErrBadBootstrap
		wantText string
	}{
		{"with-head", join(s(smq.ResponseHead), frame(initMsg)), nil, true, nil, ""},
		{"with-head-one-byte", join(s(smq.ResponseHead), frame(initMsg)), iotest.OneByteReader, true, nil, ""},
		{"with-other-headers", join(s("HTTP/1.0 200 OK\r\nServer: x\r\nSmqBroker: true\r\n\r\n"), frame(initMsg)),
			nil, true, nil, ""},
		{"without-head", frame(initMsg), nil, false, nil, ""},
		{"without-head-one-byte", frame(initMsg), iotest.OneByteReader, false, nil, ""},
		{"not-found", s("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), nil, true, smq.ErrBadBootstrap,
			`smq: bad bootstrap: broker answered "404 Not Found"`},
		{"switching-protocols", s("HTTP/1.1 101 Switching Protocols\r\n\r\n"), nil, true, smq.ErrBadBootstrap,
			`smq: bad bootstrap: broker answered "101 Switching Protocols"`},
		{"garbage-status", s("HTTP/1.1 abc\r\n\r\n"), nil, true, smq.ErrBadBootstrap, ""},
		{"cut-head", s("HTTP/1.1 200 OK\r\nSmq"), nil, true, io.ErrUnexpectedEOF, ""},
		{"short", b(0, 3), nil, false, io.ErrUnexpectedEOF, ""},
		{"empty", nil, nil, false, io.ErrUnexpectedEOF, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var in io.Reader = bytes.NewReader(tc.in)
			if tc.wrap != nil {
				in = tc.wrap(in)
			}
			br := bufio.NewReaderSize(in, 64<<10)
			head, err := smq.ReadResponse(br)
			if head != tc.head {
				t.Errorf("head = %v, want %v", head, tc.head)
			}
			switch {
			case tc.err == smq.ErrBadBootstrap:
				if !errors.Is(err, smq.ErrBadBootstrap) || (tc.wantText != "" && err.Error() != tc.wantText) {
					t.Errorf("err = %v, want ErrBadBootstrap %q", err, tc.wantText)
				}
				return
			case err != tc.err:
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			// The Init frame is next, untouched.
			msg, err := smq.NewReader(br).Read()
			if err != nil || !bytes.Equal(msg, initMsg) {
				t.Errorf("after ReadResponse: Read = % x, %v", msg, err)
			}
		})
	}
}

// Without a head ReadResponse consumes nothing, however the bytes arrive.
func TestReadResponseConsumesNothing(t *testing.T) {
	in := frame(join(b(1, 1, 0, 0, 0, 0), s("::1")))
	br := bufio.NewReader(bytes.NewReader(in))
	head, err := smq.ReadResponse(br)
	if head || err != nil {
		t.Fatalf("ReadResponse = %v, %v", head, err)
	}
	if rest, _ := io.ReadAll(br); !bytes.Equal(rest, in) {
		t.Errorf("stream after ReadResponse = % x, want % x", rest, in)
	}
}

func TestRequestAppendDropsOwnHeadersInAnyCase(t *testing.T) {
	r := smq.Request{Path: "/smq", Host: "b", Header: http.Header{
		"simplemq":            {"evil"},
		"SENDSMQHTTPRESPONSE": {"true"},
		"X-Forwarded-For":     {"192.0.2.7"},
	}}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(r.Append(nil))))
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Values("Simplemq"); len(got) != 1 || got[0] != "1" {
		t.Errorf("SimpleMQ = %q, want exactly [\"1\"]", got)
	}
	if got := req.Header.Get("SendSmqHttpResponse"); got != "" {
		t.Errorf("SendSmqHttpResponse = %q, want none (not asked for)", got)
	}
	if got := req.Header.Get("X-Forwarded-For"); got != "192.0.2.7" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
}

func TestHostIP(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5000":          "192.0.2.1",
		"[::1]:80":                "::1",
		"[::ffff:192.0.2.7]:9000": "192.0.2.7",
		"192.0.2.9":               "192.0.2.9",
		"pipe":                    "pipe",
	} {
		if got := smq.HostIP(in); got != want {
			t.Errorf("HostIP(%q) = %q, want %q", in, got, want)
		}
	}
}
