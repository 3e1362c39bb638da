package pgtest

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// CutProxy forwards TCP to the test PostgreSQL server until Cut, which
// closes every connection and refuses new ones until Restore: the
// database unreachable, as far as a client can tell, without stopping
// the server other tests share.
type CutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

// NewCutProxy starts a proxy to the test server, closed with the test.
func NewCutProxy(t testing.TB) *CutProxy {
	t.Helper()
	target := "127.0.0.1:" + strconv.Itoa(Port())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

// Addr is the proxy's HOST:PORT.
func (p *CutProxy) Addr() string { return p.ln.Addr().String() }

// Through returns dsn (a DSN of the test server) going through the proxy.
func (p *CutProxy) Through(dsn string) string {
	return strings.Replace(dsn, "127.0.0.1:"+strconv.Itoa(Port()), p.Addr(), 1)
}

// Cut closes every connection and refuses new ones.
func (p *CutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Restore accepts connections again.
func (p *CutProxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}
