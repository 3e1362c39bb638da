package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
)

// A hostile client can hold a connection, and so a file descriptor and a
// goroutine, by being slow: sending a body, or reading an answer, a byte
// at a time or not at all. The server bounds that three ways:
//
//   - deadlines: a request body must arrive within Limits.BodyTimeout and
//     an answer must start within Limits.ResponseTimeout after it; blob
//     uploads and all answers may take as long as they need while they
//     keep moving at Limits.MinRate (a 2 GiB upload on a slow link
//     completes; a stalled one is cut);
//   - sizes: a declared Content-Length over the route's limit is refused
//     with 413 before any of the body is read;
//   - a budget of concurrent requests without credentials (enrollment,
//     public files; see routePolicy.open), beyond which requests are
//     refused at once with 503 and Retry-After, so that clients with
//     credentials, health checks and devices keep being served.
//
// A refused request's body is not waited for: over HTTP/1.1 the rest of a
// small body gets a short grace (so that a client still sending gets its
// answer rather than a reset), then the connection is closed.

// Limits bound what one request may hold. Zero fields take their
// defaults (DefaultLimits).
type Limits struct {
	// BodyTimeout is how long a request body (other than a blob upload)
	// may take to arrive, counted from the end of the request's headers.
	// It is also the window over which MinRate is measured.
	BodyTimeout time.Duration
	// ResponseTimeout is how long the server may take, after the body
	// has arrived, before its answer starts moving.
	ResponseTimeout time.Duration
	// MinRate, in bytes per second, is the slowest a blob upload or an
	// answer may move, in steps of MinRate×BodyTimeout bytes: each step
	// of an upload that arrives pushes its deadline BodyTimeout further;
	// each step of an answer must be taken within BodyTimeout.
	MinRate int64
	// MaxUnauthenticated bounds concurrent requests without credentials.
	MaxUnauthenticated int
	// ReportBurst and ReportEvery bound each device's reports: a burst
	// of ReportBurst, then one every ReportEvery; beyond that a report
	// is refused with 429 rate-limited and Retry-After, which the agent
	// keeps in its outbox for its next check-in.
	ReportBurst int
	ReportEvery time.Duration
}

// DefaultLimits are the limits of a server configured with none:
// BodyTimeout 30 s; ResponseTimeout 2 min (a push may wait that long for
// the log); MinRate 1 KiB/s (a stall is cut, a slow cellular link is
// not); MaxUnauthenticated a quarter of the process's open-file limit,
// between 16 and 1024 (256 when the limit is unknown), which leaves most
// descriptors to everything else; 30 reports a device at once, then one
// a minute (an update takes four or five).
func DefaultLimits() Limits {
	n := 256
	if fds := openFileLimit(); fds > 0 {
		n = min(max(fds/4, 16), 1024)
	}
	return Limits{BodyTimeout: 30 * time.Second, ResponseTimeout: 2 * time.Minute, MinRate: 1 << 10, MaxUnauthenticated: n,
		ReportBurst: 30, ReportEvery: time.Minute}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = d.BodyTimeout
	}
	if l.ResponseTimeout <= 0 {
		l.ResponseTimeout = d.ResponseTimeout
	}
	if l.MinRate <= 0 {
		l.MinRate = d.MinRate
	}
	if l.MaxUnauthenticated <= 0 {
		l.MaxUnauthenticated = d.MaxUnauthenticated
	}
	if l.ReportBurst <= 0 {
		l.ReportBurst = d.ReportBurst
	}
	if l.ReportEvery <= 0 {
		l.ReportEvery = d.ReportEvery
	}
	return l
}

// Limits returns the limits in force.
func (s *Server) Limits() Limits { return s.limits }

// quantum is the step of the minimum rate: MinRate×BodyTimeout bytes.
func (l Limits) quantum() int64 {
	return max(1, int64(float64(l.MinRate)*l.BodyTimeout.Seconds()))
}

// HTTPServer returns the http.Server that serves s over TLS with the
// connection-level limits that go with the per-request ones: headers
// (64 KiB) within 10 s of connecting (which also bounds the TLS
// handshake), idle keep-alive connections closed after 2 minutes, and
// HTTP/2 connections whose peer stops reading closed after BodyTimeout.
// Serve it with ServeTLS.
func (s *Server) HTTPServer(tlsConfig *tls.Config, errorLog *log.Logger) *http.Server {
	// The server speaks what the listener offers: http.Server.Serve
	// sets up HTTP/2 only when its TLSConfig lists h2, while a TLS
	// listener made elsewhere negotiates it regardless (every HTTP/2
	// client, curl among them, was cut off after the handshake).
	tlsConfig = tlsConfig.Clone()
	tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	return &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             &http.HTTP2Config{WriteByteTimeout: s.limits.BodyTimeout},
		ErrorLog:          errorLog,
	}
}

// ServeTLS serves hs (from HTTPServer) on ln over TLS, with the
// handshake budget of pki.LimitHandshake: a client may send only what a
// device's handshake needs before it is verified. rampart-server serve
// and the tests that stand for it serve the same way.
func ServeTLS(hs *http.Server, ln net.Listener) error {
	return hs.Serve(pki.LimitHandshake(ln, hs.TLSConfig))
}

// routePolicy is what a route allows a request.
type routePolicy struct {
	// maxBody is the largest body the route takes; 0 for none.
	maxBody int64
	// upload: the body is a blob, held to MinRate instead of BodyTimeout.
	upload bool
	// open: the route serves clients without credentials (enrollment,
	// public files), so its requests count against MaxUnauthenticated
	// unless the connection carries a device certificate. Routes that
	// check an operator token or a device certificate refuse a request
	// without one before reading its body, and are not counted.
	open bool
}

// Body limits of the routes. Each equals the limit the route's handler
// decodes with, so the early 413 and the handler agree.
const (
	smallBody = 4 << 10
	// tagsBody holds fleet.MaxTags tags of the longest key and value.
	tagsBody   = 16 << 10
	enrollBody = 64 << 10
	reportBody = 16 << 10
)

// route wraps a route's handler with its policy: the early 413, the
// budget of requests without credentials, and an upload's deadlines.
func (s *Server) route(p routePolicy, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		x := exchangeOf(w)
		if r.ContentLength > p.maxBody {
			what := fmt.Sprintf("at most %d bytes", p.maxBody)
			if p.maxBody == 0 {
				what = "no body"
			}
			writeError(w, errorf(http.StatusRequestEntityTooLarge, "too-large", "the request body is %d bytes; %s takes %s", r.ContentLength, r.Pattern, what))
			return
		}
		if p.open {
			if _, device := pki.DeviceFromRequest(r); !device {
				if !s.anonymous.acquire() {
					s.metrics.busy.Inc()
					w.Header().Set("Retry-After", "5")
					closeAfter(w, r)
					if x != nil {
						x.mu.Lock()
						x.shed = true
						x.mu.Unlock()
					}
					writeError(w, errorf(http.StatusServiceUnavailable, "busy", "the server is serving its limit of %d requests without credentials; retry later", s.anonymous.max))
					return
				}
				defer s.anonymous.release()
			}
		}
		if x != nil && x.hasBody {
			if p.upload {
				x.startUpload()
			}
			r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
		}
		h(w, r)
	}
}

// How long a refused HTTP/1.1 request's remaining body may take to
// arrive before its connection is closed (see exchange.WriteHeader); much
// shorter when the refusal sheds load.
const (
	refusalGrace = time.Second
	shedGrace    = 100 * time.Millisecond
)

// budget counts requests in flight against a maximum.
type budget struct {
	max int
	n   atomic.Int64
}

func (b *budget) acquire() bool {
	if b.n.Add(1) > int64(b.max) {
		b.n.Add(-1)
		return false
	}
	return true
}

func (b *budget) release() { b.n.Add(-1) }

// closeAfter asks for the connection to be closed after the answer: over
// HTTP/1.1 a connection is the unit a hostile client holds. (HTTP/2 reads
// "Connection: close" as a request to shut the whole connection down,
// other streams included, so it is left alone there.)
func closeAfter(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}

// exchange is one request as the guard sees it: its deadlines, whether
// its body was read to the end, its status, and the failure behind a 5xx.
// It wraps the ResponseWriter so that handlers need not know about it.
type exchange struct {
	http.ResponseWriter
	rc      *http.ResponseController
	lim     Limits
	h1      bool
	hasBody bool

	mu          sync.Mutex
	shed        bool
	upload      bool
	bodyDone    bool
	readMoved   int64
	wroteHeader bool
	status      int
	failure     *apiError
	timedOut    bool
}

func (x *exchange) Unwrap() http.ResponseWriter { return x.ResponseWriter }

// exchangeOf finds the exchange under w, or nil.
func exchangeOf(w http.ResponseWriter) *exchange {
	for {
		switch v := w.(type) {
		case *exchange:
			return v
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}

// guard sets every request's deadlines, answers a refusal without reading
// the rest of its body, turns a panic into a 500, and logs every 500 with
// the request id. It runs inside requestID and outside everything else.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		x := &exchange{ResponseWriter: w, rc: http.NewResponseController(w), lim: s.limits, h1: r.ProtoMajor == 1,
			hasBody: r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0}
		// Handlers get a copy: net/http decides what to do with a body
		// left unread by the type of the request's own Body.
		r = r.WithContext(r.Context())
		// Deadlines on a request without a body would only cut the
		// HTTP/1.1 server's background read, which cancels the request.
		if x.hasBody {
			x.rc.SetReadDeadline(now.Add(x.lim.BodyTimeout))
			r.Body = &guardedBody{ReadCloser: r.Body, x: x}
			x.setWriteDeadline(now.Add(x.lim.BodyTimeout + x.lim.ResponseTimeout))
		} else {
			x.setWriteDeadline(now.Add(x.lim.ResponseTimeout))
		}
		defer s.finish(x, r)
		defer x.recoverPanic()
		next.ServeHTTP(x, r)
	})
}

// startUpload replaces the body deadline with the upload rule: the body
// must keep moving at MinRate; the answer's deadline starts when it ends.
func (x *exchange) startUpload() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.upload = true
	x.rc.SetReadDeadline(time.Now().Add(x.lim.BodyTimeout))
	x.rc.SetWriteDeadline(time.Time{})
}

func (x *exchange) setWriteDeadline(t time.Time) { x.rc.SetWriteDeadline(t) }

// bodyRead accounts for a read of the request body.
func (x *exchange) bodyRead(n int, err error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := time.Now()
	if x.upload && n > 0 {
		if x.readMoved += int64(n); x.readMoved >= x.lim.quantum() {
			x.readMoved = 0
			x.rc.SetReadDeadline(now.Add(x.lim.BodyTimeout))
		}
	}
	switch {
	case err == io.EOF:
		x.bodyDone = true
		// Over HTTP/1.1 the server now reads the connection in the
		// background to notice a client going away; a deadline left
		// on it would cancel the request while it is handled.
		x.rc.SetReadDeadline(time.Time{})
		if x.upload {
			x.setWriteDeadline(now.Add(x.lim.ResponseTimeout))
		}
	case errors.Is(err, os.ErrDeadlineExceeded):
		x.timedOut = true
		if x.upload {
			return &bodyTimeout{fmt.Sprintf("the upload moved slower than %d bytes/s over %s", x.lim.MinRate, x.lim.BodyTimeout), err}
		}
		return &bodyTimeout{fmt.Sprintf("the request body did not arrive within %s", x.lim.BodyTimeout), err}
	}
	return err
}

// bodyTimeout is a request body cut by its deadline; it wraps
// os.ErrDeadlineExceeded (a 408) and says which rule cut it, without the
// network error's addresses.
type bodyTimeout struct {
	msg string
	err error
}

func (e *bodyTimeout) Error() string { return e.msg }
func (e *bodyTimeout) Unwrap() error { return e.err }

func (x *exchange) WriteHeader(code int) {
	x.mu.Lock()
	if !x.wroteHeader && code >= 200 {
		x.wroteHeader = true
		x.status = code
		if code >= 400 && x.hasBody && !x.bodyDone && x.h1 {
			// The handler will not read the rest of the body. The
			// answer goes out at once and the connection is closed
			// after it; net/http first reads what is left of a small
			// body (up to 256 KiB), so that a client still sending
			// it reads the answer rather than a reset. A stalled
			// client gets a short grace for that, not the body
			// deadline.
			x.Header().Set("Connection", "close")
			grace := refusalGrace
			switch {
			case x.timedOut:
				grace = 0 // it had its chance
			case x.shed:
				grace = shedGrace
			}
			x.rc.SetReadDeadline(time.Now().Add(grace))
		}
	}
	x.mu.Unlock()
	x.ResponseWriter.WriteHeader(code)
}

// Write holds the answer to the minimum rate: it writes in pieces of
// MinRate×BodyTimeout bytes, each of which must be taken within
// BodyTimeout of being offered. (Counting bytes only after they are taken
// would not do: the socket's send buffer, megabytes on a fast link, takes
// a burst at once and then needs far more than the minimum rate to drain
// within one window.)
func (x *exchange) Write(p []byte) (int, error) {
	if !x.headerWritten() {
		x.WriteHeader(http.StatusOK)
	}
	q := int(min(x.lim.quantum(), 1<<30))
	n := 0
	for n < len(p) {
		x.setWriteDeadline(time.Now().Add(x.lim.BodyTimeout))
		k, err := x.ResponseWriter.Write(p[n:min(len(p), n+q)])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (x *exchange) Flush() { x.rc.Flush() }

func (x *exchange) headerWritten() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.wroteHeader
}

// recordFailure keeps the failure behind a 5xx answer for the log.
func (x *exchange) recordFailure(e *apiError) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.failure = e
}

// recoverPanic answers a handler's panic with a 500 (when nothing was
// written yet) and records it for the log. http.ErrAbortHandler, and a
// panic after the answer started, abort the connection as net/http does.
func (x *exchange) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	e := errorf(http.StatusInternalServerError, "internal", "internal error; see the server log")
	e.cause = fmt.Errorf("panic: %v\n%s", v, debug.Stack())
	if x.headerWritten() {
		x.recordFailure(e)
		x.mu.Lock()
		x.status = http.StatusInternalServerError
		x.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	writeError(x, e)
}

// finish counts a body cut by its deadline and logs a 500 with the
// request id the client saw.
func (s *Server) finish(x *exchange, r *http.Request) {
	x.mu.Lock()
	status, failure, timedOut := x.status, x.failure, x.timedOut
	x.mu.Unlock()
	if timedOut {
		s.metrics.bodyTimeouts.Inc()
	}
	// An unavailable store is an outage the operator must see, but one
	// every request meets while it lasts: one line per rateLogInterval.
	if failure != nil && failure.Code == "store-unavailable" {
		storeUnavailableLog.log(s.logger, "the metadata store is unavailable: requests are answered 503 store-unavailable with Retry-After",
			"route", r.Pattern, "request_id", r.Header.Get("X-Request-Id"), "err", fmt.Sprint(failure.cause))
		return
	}
	// 503s (busy, not ready) are answers, not failures.
	if status != http.StatusInternalServerError {
		return
	}
	attrs := []any{"method", r.Method, "route", r.Pattern, "status", status, "request_id", r.Header.Get("X-Request-Id")}
	if failure != nil {
		attrs = append(attrs, "code", failure.Code)
		if failure.cause != nil {
			attrs = append(attrs, "err", failure.cause.Error())
		} else {
			attrs = append(attrs, "err", failure.Message)
		}
	}
	s.logger.Error("request failed", attrs...)
}

// storeUnavailableLog limits the log lines of requests refused because
// the store is unavailable.
var storeUnavailableLog rateLog

// guardedBody reports each read of a request body to its exchange.
type guardedBody struct {
	io.ReadCloser
	x *exchange
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	return n, b.x.bodyRead(n, err)
}

// routerErrors answers what the router itself refuses (no route: 404; a
// route without this method: 405 with Allow) in the API's error shape
// instead of net/http's plain text.
func routerErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &discardWriter{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.code == http.StatusMethodNotAllowed {
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			writeError(w, errorf(http.StatusMethodNotAllowed, "method-not-allowed", "%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
			return
		}
		writeError(w, errorf(http.StatusNotFound, "not-found", "nothing is served at %s", r.URL.Path))
	})
}

// discardWriter records the status and headers of the router's own
// answer and drops its text.
type discardWriter struct {
	header http.Header
	code   int
}

func (d *discardWriter) Header() http.Header { return d.header }
func (d *discardWriter) WriteHeader(code int) {
	if d.code == 0 {
		d.code = code
	}
}
func (d *discardWriter) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	return len(p), nil
}

// parseQueryInt reads an optional integer query parameter in [lo, hi];
// a malformed or out-of-range one is a 400 bad-NAME naming the parameter.
func parseQueryInt(r *http.Request, name string, lo, hi, def int64) (int64, *apiError) {
	v := r.URL.Query().Get(name)
	if v == "" && !r.URL.Query().Has(name) {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, errorf(http.StatusBadRequest, "bad-"+name, "%s=%q: give an integer from %d to %d", name, v, lo, hi)
	}
	return n, nil
}
