package smq

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Bootstrap is what a client's HTTP bootstrap request asks for.
type Bootstrap struct {
	// SMQ: the request carries a SimpleMQ header (any value) or a
	// Sec-WebSocket-Key. Anything else is not SMQ and gets HTTP 404.
	SMQ bool
	// WebSocket: the request has an Upgrade header; otherwise it is raw.
	WebSocket bool
	// SendHTTPResponse: SendSmqHttpResponse is exactly "true", so a raw
	// broker answers with ResponseHead before Init. Otherwise the first bytes
	// a raw client receives are the Init frame.
	SendHTTPResponse bool
}

// Classify reads a bootstrap request's headers the way the reference broker
// does: header names are case-insensitive; method, Host and query don't count.
func Classify(h http.Header) Bootstrap {
	_, smq := h["Simplemq"]
	_, wsKey := h["Sec-Websocket-Key"]
	return Bootstrap{
		SMQ:              smq || wsKey,
		WebSocket:        h.Get("Upgrade") != "",
		SendHTTPResponse: h.Get("SendSmqHttpResponse") == "true",
	}
}

// ResponseHead is the HTTP answer a raw broker sends before Init when the
// client asked for one with SendSmqHttpResponse: true. It has no
// Content-Length: the SMQ frames follow the blank line.
const ResponseHead = "HTTP/1.1 200 OK\r\nSmqBroker: true\r\n\r\n"

// WriteResponse writes the raw broker's answer to b: ResponseHead when the
// client asked for it, otherwise nothing.
func WriteResponse(w io.Writer, b Bootstrap) error {
	if !b.SendHTTPResponse {
		return nil
	}
	_, err := io.WriteString(w, ResponseHead)
	return err
}

// MaxHeadSize is the largest HTTP request or response head (request line,
// headers, blank line) ReadRequest and ReadResponse accept.
const MaxHeadSize = 16 << 10

// peekHead makes sure a whole HTTP head is buffered in br and returns its
// length. br must be able to buffer max bytes.
func peekHead(br *bufio.Reader, max int) (int, error) {
	if br.Size() < max {
		max = br.Size()
	}
	for want := 1; ; want = br.Buffered() + 1 {
		if want > max {
			return 0, fmt.Errorf("%w: HTTP head is larger than %d bytes", ErrBadBootstrap, max)
		}
		p, err := br.Peek(want)
		if err != nil {
			if err == io.EOF && len(p) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		p, _ = br.Peek(br.Buffered())
		if n := headLen(p); n > 0 {
			if n > max {
				return 0, fmt.Errorf("%w: HTTP head is larger than %d bytes", ErrBadBootstrap, max)
			}
			return n, nil
		}
	}
}

// headLen returns the length of the HTTP head at the start of p, through the
// empty line that ends it, or 0 if p holds no empty line yet. Like
// net/textproto, it takes "\n" or "\r\n" as the end of a line.
func headLen(p []byte) int {
	i := bytes.Index(p, []byte("\n\n"))
	j := bytes.Index(p, []byte("\n\r\n"))
	switch {
	case i >= 0 && (j < 0 || i < j):
		return i + 2
	case j >= 0:
		return j + 3
	}
	return 0
}

// ReadRequest reads one bootstrap request head from br (which should buffer
// at least MaxHeadSize bytes) and classifies it. Bytes after the head stay in
// br: they belong to the SMQ stream.
func ReadRequest(br *bufio.Reader) (*http.Request, Bootstrap, error) {
	if _, err := peekHead(br, MaxHeadSize); err != nil {
		return nil, Bootstrap{}, err
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, Bootstrap{}, fmt.Errorf("%w: %v", ErrBadBootstrap, err)
	}
	return req, Classify(req.Header), nil
}

// Request is a client's bootstrap request for the raw transport.
type Request struct {
	Path string // request target; "" means "/"
	Host string
	// SendHTTPResponse asks the broker for ResponseHead before Init, as the
	// Python, Lua and Java clients do.
	SendHTTPResponse bool
	// Header holds extra headers (X-Forwarded-For, ...). Values are written
	// with control characters (CR and LF among them) replaced by spaces, so
	// they cannot split the head; invalid names are dropped.
	Header http.Header
}

// Append appends the request head to dst.
func (r *Request) Append(dst []byte) []byte {
	path := r.Path
	if path == "" {
		path = "/"
	}
	var b bytes.Buffer
	b.Write(dst)
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nSimpleMQ: 1\r\n", sanitize(path), sanitize(r.Host))
	if r.SendHTTPResponse {
		b.WriteString("SendSmqHttpResponse: true\r\n")
	}
	h := r.Header.Clone()
	for k := range h {
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Simplemq", "Sendsmqhttpresponse", "Upgrade", "Connection":
			delete(h, k) // ours to set, whatever the key's case
		}
	}
	for _, vs := range h {
		for i, v := range vs {
			vs[i] = headerValue(v)
		}
	}
	_ = h.Write(&b) // http.Header.Write drops invalid names
	b.WriteString("\r\n")
	return b.Bytes()
}

// headerValue replaces the control characters (CR and LF among them) that a
// header value may not hold with spaces, so that a value from a client
// certificate can neither split the head nor make the broker reject it.
func headerValue(v string) string {
	if !strings.ContainsFunc(v, isCTL) {
		return v
	}
	p := []byte(v)
	for i, c := range p {
		if isCTL(rune(c)) {
			p[i] = ' '
		}
	}
	return string(p)
}

func isCTL(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || isCTL(r) {
			return '_'
		}
		return r
	}, s)
}

// ReadResponse reads what a raw broker sends before Init. If the stream starts
// with an HTTP status line, the head is read and must say 200; it reports
// whether there was a head. Without a head nothing is consumed: the first
// bytes are the Init frame.
func ReadResponse(br *bufio.Reader) (bool, error) {
	p, err := br.Peek(5)
	if err != nil {
		return false, unexpected(err)
	}
	if string(p) != "HTTP/" {
		return false, nil
	}
	if _, err := peekHead(br, MaxHeadSize); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return true, fmt.Errorf("%w: %v", ErrBadBootstrap, err)
	}
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("%w: broker answered %q", ErrBadBootstrap, resp.Status)
	}
	return true, nil
}

// HostIP returns the host part of a network address ("192.0.2.1:5000",
// "[::1]:80") as Init carries a client's address: an IPv4-mapped IPv6
// address as plain IPv4; anything unparsable comes back as it is.
func HostIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}
