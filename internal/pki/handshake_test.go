package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/pki/pkitest"
)

// countingListener counts the bytes the server side read from each client.
type countingListener struct {
	net.Listener
	read atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return &countingConn{Conn: c, n: &l.read}, err
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A client that sends 100 intermediates (225 KiB) is cut off after
// HandshakeBudget bytes, before crypto/tls has read its certificate
// message, while a device's handshake passes and its connection then
// carries any amount of data over HTTP/2's or HTTP/1.1's ALPN.
func TestHandshakeBudget(t *testing.T) {
	deviceCA, cfg, pool := hostileFixture(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: raw}
	ln := pki.LimitHandshake(cl, cfg)
	defer ln.Close()

	serve := func() <-chan error {
		errc := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := c.(*tls.Conn).Handshake(); err != nil {
				errc <- err
				return
			}
			n, err := io.Copy(io.Discard, c)
			if err == nil && n != 1<<20 {
				err = errors.New("short read")
			}
			errc <- err
		}()
		return errc
	}
	dial := func(cert *tls.Certificate) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
			ServerName: "localhost", RootCAs: pool, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})
	}

	hostile, err := pkitest.HostileChain(deviceCA.Cert, 100, 8192, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	errc := serve()
	if c, err := dial(hostile); err == nil {
		c.Read(make([]byte, 1)) // a TLS 1.3 client learns of the refusal here
		c.Close()
	}
	if err := <-errc; !errors.Is(err, pki.ErrHandshakeTooLarge) {
		t.Fatalf("100 intermediates: server says %v, want ErrHandshakeTooLarge", err)
	}
	if n := cl.read.Load(); n > pki.HandshakeBudget {
		t.Fatalf("the server read %d bytes of a hostile handshake, budget %d", n, pki.HandshakeBudget)
	}

	// A device: its leaf from the device CA, then 1 MiB of data.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _, err := deviceCA.IssueDeviceKey(&key.PublicKey, "gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl.read.Store(0)
	errc = serve()
	c, err := dial(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	if err != nil {
		t.Fatalf("device handshake: %v", err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("negotiated %q, want h2", p)
	}
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-errc; err != nil {
		t.Fatalf("device connection: %v", err)
	}
	if n := cl.read.Load(); n < 1<<20 {
		t.Fatalf("server read %d bytes", n)
	}
}
