// Package agenttest puts a hostile network between a device and a real
// rampart server, for tests of the device side. The front end is a TLS
// server holding the server's own certificate and key, so the device
// cannot tell it from the server; it forwards each request to the real
// server with the device's client certificate, and does to the answers
// what a broken network, mirror or CDN does: cut them part way, reset the
// connection, stall, add bytes, or ignore Range; or, standing for a
// hostile server, rewrites them. Everything happens on real connections:
// the device sees what its HTTP client would see.
package agenttest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server/servertest"
)

// Fault is what the front end does to one answer.
type Fault int

const (
	// Pass forwards the answer as it is.
	Pass Fault = iota
	// Cut closes the connection halfway through the body (the
	// Content-Length, or the chunked encoding, promised more).
	Cut
	// Reset resets the connection (TCP RST) halfway through the body.
	Reset
	// Stall sends half the body, then nothing, until the device gives up.
	Stall
	// Append sends the body, then more bytes, declared in the
	// Content-Length as if they belonged to it.
	Append
	// Endless sends the body, then bytes without end (chunked), until the
	// device stops reading.
	Endless
	// IgnoreRange drops the Range header, as a mirror that does not
	// support it would: the whole file, 200 OK.
	IgnoreRange
)

// AppendBytes is how many bytes Append adds: more than any metadata
// bound, so that every answer it touches goes past its bound.
const AppendBytes = 6 << 20

// FrontEnd is a hostile front end for one device.
type FrontEnd struct {
	// URL is the front end's base URL, to use as the device's server.url.
	URL string

	upstream string
	client   *http.Client

	mu      sync.Mutex
	fault   func(*http.Request) Fault
	rewrite func(*http.Request, []byte) []byte
	seen    []string
	hit     map[Fault]int
}

// New starts a front end before e's server for the device whose mTLS
// certificate is cert (nil before it is enrolled), and stops it at the
// end of t.
func New(t testing.TB, e *servertest.Env, cert *tls.Certificate) *FrontEnd {
	t.Helper()
	serverCert, err := tls.LoadX509KeyPair(filepath.Join(e.DataDir, "tls.crt"), filepath.Join(e.DataDir, "keys", "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	upTLS := &tls.Config{RootCAs: pool}
	if cert != nil {
		upTLS.Certificates = []tls.Certificate{*cert}
	}
	f := &FrontEnd{upstream: e.TS.URL, hit: map[Fault]int{}, client: &http.Client{
		Transport: &http.Transport{TLSClientConfig: upTLS},
		// Never follow anything: the device must see what the server said.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	f.URL = ts.URL
	return f
}

// Set decides the fault for each request from now on (nil: Pass).
func (f *FrontEnd) Set(fault func(*http.Request) Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = fault
}

// Rewrite replaces the body of every answer that passes (fault Pass) by
// what rw returns for it (nil: no rewriting), as a hostile server would.
func (f *FrontEnd) Rewrite(rw func(r *http.Request, body []byte) []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rewrite = rw
}

// Paths returns the paths requested so far.
func (f *FrontEnd) Paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// Hits returns how many answers got fault.
func (f *FrontEnd) Hits(fault Fault) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hit[fault]
}

func (f *FrontEnd) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fault := Pass
	if f.fault != nil {
		fault = f.fault(r)
	}
	f.seen = append(f.seen, r.URL.RequestURI())
	f.hit[fault]++
	rw := f.rewrite
	f.mu.Unlock()

	out, err := http.NewRequestWithContext(r.Context(), r.Method, f.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range r.Header {
		out.Header[k] = v
	}
	if fault == IgnoreRange {
		out.Header.Del("Range")
	}
	resp, err := f.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if fault == Pass && rw != nil {
		body = rw(r, body)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	switch fault {
	case Append:
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+AppendBytes))
	case Endless:
		w.Header().Del("Content-Length") // chunked
	}
	w.WriteHeader(resp.StatusCode)
	half := body[:len(body)/2]
	switch fault {
	case Cut:
		w.Write(half)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // the server closes the connection
	case Reset:
		w.Write(half)
		rc := http.NewResponseController(w)
		rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*tls.Conn); ok {
			if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
				tcp.SetLinger(0) // close with RST, not FIN
			}
		}
		conn.Close()
	case Stall:
		w.Write(half)
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	case Append:
		w.Write(body)
		junk := make([]byte, 64<<10)
		for n := 0; n < AppendBytes; n += len(junk) {
			if _, err := w.Write(junk[:min(len(junk), AppendBytes-n)]); err != nil {
				return
			}
		}
	case Endless:
		w.Write(body)
		junk := make([]byte, 64<<10)
		for range 1 << 14 { // at most 1 GiB
			if _, err := w.Write(junk); err != nil {
				return
			}
		}
	default:
		w.Write(body)
	}
}
