package tlsalert_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/smqgw/smqgw/internal/testpki"
	"github.com/smqgw/smqgw/internal/tlsalert"
)

// TestReceived: a real handshake the server refuses for a missing client
// certificate gives the client an alert it received; the alert the local
// side sent, and errors without alerts, give none.
func TestReceived(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		srvErr <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// TLS 1.3: the client learns of the refusal on its first read.
	_, err = c.Read(make([]byte, 1))
	a, ok := tlsalert.Received(fmt.Errorf("wrapped: %w", err))
	if !ok || a != tlsalert.CertificateRequired || !tlsalert.RefusesCertificate(a) {
		t.Errorf("Received(%v) = %d, %v; want certificate required", err, a, ok)
	}
	if err := <-srvErr; err == nil {
		t.Fatal("the server accepted a client without a certificate")
	} else if a, ok := tlsalert.Received(err); ok {
		t.Errorf("the server's own alert counted as received: %d", a)
	}
	for _, err := range []error{nil, errors.New("x"), tls.AlertError(42), &net.OpError{Op: "remote error", Err: errors.New("x")}} {
		if a, ok := tlsalert.Received(err); ok {
			t.Errorf("Received(%v) = %d", err, a)
		}
	}
}

func TestRefusesCertificate(t *testing.T) {
	for a, want := range map[tls.AlertError]bool{
		tlsalert.BadCertificate: true, tlsalert.UnknownCA: true, tlsalert.CertificateRequired: true,
		tlsalert.HandshakeFailure: false, tlsalert.ProtocolVersion: false, tlsalert.NoApplicationProtocol: false,
	} {
		if got := tlsalert.RefusesCertificate(a); got != want {
			t.Errorf("RefusesCertificate(%v) = %v, want %v", a, got, want)
		}
	}
}
