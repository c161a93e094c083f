package proxyclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/proxy"
)

// socksDialer tunnels through a SOCKS5 proxy (RFC 1928) with
// golang.org/x/net/proxy, which reports the proxy's answers only as text;
// socksDialer reads them from the bytes the proxy sent instead.
type socksDialer struct {
	proxy   string        // host:port of the proxy
	auth    *proxy.Auth   // nil: offer no authentication
	remote  bool          // socks5h: the proxy resolves names
	forward ContextDialer // reaches the proxy
}

// DialContext resolves addr's host unless the proxy does (socks5h), then
// asks the proxy for a connection to it. ctx bounds the whole dial.
func (d *socksDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkNetwork(network); err != nil {
		return nil, opError("socks connect", network, d.proxy, addr, err)
	}
	targets, err := d.targets(ctx, network, addr)
	if err != nil {
		return nil, opError("socks connect", network, d.proxy, addr, err)
	}
	var first error
	for _, target := range targets {
		c, err := d.dial(ctx, network, target)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if !nextAddress(err) {
			break
		}
	}
	return nil, opError("socks connect", network, d.proxy, addr, first)
}

// targets lists the addresses to ask the proxy for: addr itself, or for
// socks5 with a host name, the host's addresses.
func (d *socksDialer) targets(ctx context.Context, network, addr string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if d.remote {
		return []string{addr}, nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return []string{addr}, nil
	}
	ipNet := "ip"
	switch network {
	case "tcp4":
		ipNet = "ip4"
	case "tcp6":
		ipNet = "ip6"
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return nil, stepErr(ctx, stepResolve, err)
	}
	targets := make([]string, 0, len(ips))
	for _, ip := range ips {
		targets = append(targets, net.JoinHostPort(ip.Unmap().WithZone("").String(), port))
	}
	return targets, nil
}

// nextAddress reports whether the dial that failed with err is worth
// trying with the target's next address.
func nextAddress(err error) bool {
	var se *SOCKSError
	return errors.As(err, &se) && se.Reply >= 3 && se.Reply <= 6
}

// dialFunc is a proxy.ContextDialer made of a function.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// Dial is for proxy.Dialer; proxy.SOCKS5 calls DialContext instead.
func (f dialFunc) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

// dial makes one SOCKS5 dial to target, an IP address or (socks5h) a name.
func (d *socksDialer) dial(ctx context.Context, network, target string) (net.Conn, error) {
	var (
		rec     *recordingConn
		dialErr error
	)
	forward := dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.forward.DialContext(ctx, network, addr)
		if err != nil {
			dialErr = err
			return nil, err
		}
		rec = &recordingConn{Conn: c}
		return rec, nil
	})
	pd, err := proxy.SOCKS5("tcp", d.proxy, d.auth, forward)
	if err != nil {
		return nil, err
	}
	if _, err := pd.(proxy.ContextDialer).DialContext(ctx, network, target); err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		switch {
		case dialErr != nil:
			return nil, stepErr(ctx, stepDial, dialErr)
		case rec == nil:
			return nil, err
		}
		if e := socksFailure(rec.read, d.auth != nil); e != nil {
			return nil, e
		}
		if e := stepErr(ctx, stepSOCKS, err); e != err {
			return nil, e
		}
		return nil, fmt.Errorf("SOCKS5 handshake: %w", err)
	}
	// The handshake is over and its deadlines are cleared: the raw
	// connection to the proxy is the tunnel, with nothing in between.
	return rec.Conn, nil
}

// recordingConn keeps the first bytes read from a SOCKS5 proxy: its
// answers during the handshake.
type recordingConn struct {
	net.Conn
	read []byte
}

// maxRecord covers the method selection (2 bytes), the username/password
// status (2) and the reply's first 4 bytes.
const maxRecord = 8

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if room := maxRecord - len(c.read); room > 0 {
		c.read = append(c.read, p[:min(n, room)]...)
	}
	return n, err
}

// socksFailure reads the refusal, if any, in what a SOCKS5 proxy answered
// during a handshake that failed; nil means the answers were not the
// reason (or are not all there).
func socksFailure(read []byte, credentials bool) error {
	if len(read) < 2 {
		return nil
	}
	if read[0] != 5 {
		return fmt.Errorf("not a SOCKS5 proxy: it answered with version %d", read[0])
	}
	switch method := read[1]; method {
	case 0xff:
		if credentials {
			return errors.New("proxy accepts none of the offered authentication methods (none, username/password)")
		}
		return ErrProxyAuth
	case 2: // username/password: version 1 and a status, 0 for success
		if len(read) < 4 {
			return nil
		}
		if read[3] != 0 {
			return errCredentialsRejected
		}
		read = read[4:]
	default:
		read = read[2:]
	}
	if len(read) >= 2 && read[0] == 5 && read[1] != 0 {
		return &SOCKSError{Reply: read[1]}
	}
	return nil
}
