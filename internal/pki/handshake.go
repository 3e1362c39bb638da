package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// HandshakeBudget bounds the bytes a client may send before its TLS
// handshake reaches the server's VerifyConnection: a ClientHello (a few
// KiB, post-quantum key shares included) and a certificate message with
// one device certificate of at most maxCertDER bytes, with room to spare.
// crypto/tls itself reads and parses a certificate message of up to
// 256 KiB before anything of ours runs, which made a hostile handshake of
// 100 large intermediates cost five times an honest one even with
// verifyDevice refusing it outright.
const HandshakeBudget = maxCertDER + 16<<10

// ErrHandshakeTooLarge: a client sent more than HandshakeBudget bytes
// before its handshake was verified.
var ErrHandshakeTooLarge = errors.New("tls handshake larger than any device's")

// LimitHandshake returns a TLS listener over ln with cfg (a
// ServerTLSConfig), offering HTTP/2 and HTTP/1.1, in which a client may
// send at most HandshakeBudget bytes until cfg's VerifyConnection has
// accepted its handshake; after that reads are unbounded here (the HTTP
// server's own limits apply). It works for HTTP/1.1 and HTTP/2 alike, and
// for resumed sessions, because VerifyConnection runs in every handshake.
// Serve it with http.Server.Serve, not ServeTLS.
func LimitHandshake(ln net.Listener, cfg *tls.Config) net.Listener {
	c := cfg.Clone()
	c.NextProtos = []string{"h2", "http/1.1"}
	c.GetConfigForClient = openOnVerify(c)
	return tls.NewListener(&budgetListener{ln}, c)
}

type budgetListener struct{ net.Listener }

func (l *budgetListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	bc := &budgetConn{Conn: c}
	bc.left.Store(HandshakeBudget)
	return bc, nil
}

type budgetConn struct {
	net.Conn
	left     atomic.Int64
	verified atomic.Bool
}

func (c *budgetConn) Read(p []byte) (int, error) {
	if c.verified.Load() {
		return c.Conn.Read(p)
	}
	left := c.left.Load()
	if left <= 0 {
		return 0, fmt.Errorf("%w: over %d bytes before it was verified", ErrHandshakeTooLarge, HandshakeBudget)
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.left.Add(-int64(n))
	return n, err
}

// openOnVerify returns the GetConfigForClient of a ServerTLSConfig: on a
// connection from LimitHandshake it hands crypto/tls a copy of base whose
// VerifyConnection lifts that connection's budget once the handshake
// verified. Session ticket keys stay base's (crypto/tls initialises the
// copy from it), so resumption is unaffected.
func openOnVerify(base *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		bc, ok := hello.Conn.(*budgetConn)
		if !ok {
			return nil, nil
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		verify := base.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				return err
			}
			bc.verified.Store(true)
			return nil
		}
		return c, nil
	}
}
