package wire

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/smqgw/smqgw/smq"
)

// HandshakeError is a server's refusal of a WebSocket upgrade: an answer
// other than a valid 101. It matches websocket.ErrBadHandshake, as
// gorilla's Dialer's refusals do.
type HandshakeError struct {
	// StatusCode and Status are the answer's: 404, "404 Not Found".
	StatusCode int
	Status     string
	// Body is the start of the answer's body: at most 1 KiB, and only what
	// came without waiting for the server to close.
	Body []byte
	// Problem says what is wrong with an answer that said 101.
	Problem string
}

func (e *HandshakeError) Error() string {
	if e.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Sprintf("wire: websocket upgrade refused: server answered %q", e.Status)
	}
	return "wire: bad websocket upgrade answer: " + e.Problem
}

// Unwrap returns websocket.ErrBadHandshake.
func (e *HandshakeError) Unwrap() error { return websocket.ErrBadHandshake }

// maxRefusalBody is the most of a refusal's body kept in HandshakeError.
const maxRefusalBody = 1 << 10

// errAnswerTooLong: the server's answer had no end within smq.MaxHeadSize.
var errAnswerTooLong = errors.New("wire: websocket upgrade answer over " + fmt.Sprint(smq.MaxHeadSize) + " bytes")

// acceptGUID is RFC 6455's, for Sec-WebSocket-Accept.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// ClientHandshake opens a WebSocket on conn, a connection to the server of
// u (TLS already on it for wss): it sends the upgrade request for u's path
// and query with header's fields, reads the answer and, for a valid 101,
// returns the client's WS (its frames masked; maxRead as for NewWS) and the
// answer. Whatever the server sent after its answer (its first frames: an
// SMQ broker's Init) is read by the WS, not lost.
//
// header must not hold the fields the handshake sets (Upgrade, Connection,
// Sec-WebSocket-Key, Sec-WebSocket-Version, Sec-WebSocket-Extensions); a
// Host field replaces u's host in the request. u's scheme is not looked at.
//
// A non-zero deadline bounds the handshake: it is set on conn and cleared
// on success. A zero deadline leaves conn's deadlines alone, for a caller
// that bounds the handshake with its own (a context's) and clears them
// itself.
//
// A server's refusal is a *HandshakeError, returned with the answer (whose
// Body holds what the error's does). I/O errors come as they are (the end
// of the stream before the answer is io.ErrUnexpectedEOF), for the caller
// to name the stage. On error conn is left open: the caller closes it.
func ClientHandshake(conn net.Conn, u *url.URL, header http.Header, maxRead int, deadline time.Time) (*WS, *http.Response, error) {
	if u.User != nil {
		return nil, nil, fmt.Errorf("wire: websocket url %q has user info", u.Redacted())
	}
	req := &http.Request{
		Method: http.MethodGet, URL: &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: u.Host, Header: make(http.Header, len(header)+4),
	}
	if req.URL.Path == "" {
		req.URL.Path = "/"
	}
	var p [16]byte
	_, _ = rand.Read(p[:])
	key := base64.StdEncoding.EncodeToString(p[:])
	// The capitalisation of RFC 6455's examples: some servers depend on it.
	req.Header["Upgrade"] = []string{"websocket"}
	req.Header["Connection"] = []string{"Upgrade"}
	req.Header["Sec-WebSocket-Key"] = []string{key}
	req.Header["Sec-WebSocket-Version"] = []string{"13"}
	for k, vs := range header {
		switch http.CanonicalHeaderKey(k) {
		case "Host":
			if len(vs) > 0 {
				req.Host = vs[0]
			}
		case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			return nil, nil, fmt.Errorf("wire: websocket upgrade: header %q is the handshake's", k)
		case "Sec-Websocket-Protocol":
			req.Header["Sec-WebSocket-Protocol"] = vs
		default:
			req.Header[k] = vs
		}
	}

	if !deadline.IsZero() {
		if err := conn.SetDeadline(deadline); err != nil {
			return nil, nil, err
		}
	}
	if err := req.Write(conn); err != nil {
		return nil, nil, err
	}
	// The head, and at most one buffer past it.
	br := bufio.NewReaderSize(&capReader{r: conn, n: smq.MaxHeadSize + 4096}, 4096)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, err
	}
	if problem := checkAnswer(resp, key); problem != "" {
		he := &HandshakeError{StatusCode: resp.StatusCode, Status: resp.Status, Problem: problem}
		he.Body = refusalBody(resp, br)
		resp.Body = io.NopCloser(bytes.NewReader(he.Body))
		return nil, resp, he
	}
	if !deadline.IsZero() {
		if err := conn.SetDeadline(time.Time{}); err != nil {
			return nil, nil, err
		}
	}
	// br goes: what it holds past the answer moves to the WS's buffer.
	return newWS(conn, NewElastic(conn, br), maxRead, true), resp, nil
}

// checkAnswer returns what is wrong with the server's answer, "" if it is a
// valid 101.
func checkAnswer(resp *http.Response, key string) string {
	switch {
	case resp.StatusCode != http.StatusSwitchingProtocols:
		return "status " + resp.Status
	case !hasToken(resp.Header, "Upgrade", "websocket"):
		return "no Upgrade: websocket"
	case !hasToken(resp.Header, "Connection", "upgrade"):
		return "no Connection: upgrade"
	case resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key):
		return "wrong Sec-WebSocket-Accept"
	}
	return ""
}

// refusalBody reads the start of a refusal's body: at most maxRefusalBody
// bytes, without waiting for a body that only the end of the stream ends
// (the server may not close).
func refusalBody(resp *http.Response, br *bufio.Reader) []byte {
	n := maxRefusalBody
	if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 {
		n = min(n, br.Buffered())
	}
	buf := make([]byte, n)
	n, _ = io.ReadFull(resp.Body, buf)
	return buf[:n]
}

// hasToken reports whether a comma-separated list in header field k holds
// token, whatever its case.
func hasToken(h http.Header, k, token string) bool {
	for _, v := range h.Values(k) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// capReader reads at most n bytes from r, then fails with
// errAnswerTooLong.
type capReader struct {
	r io.Reader
	n int
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errAnswerTooLong
	}
	if len(p) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}
