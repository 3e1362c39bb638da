// Package client is the operator API client used by the rampart CLI: it
// talks to rampart-server over TLS with the server CA pinned (never the
// system roots) and an operator token, and turns API errors into typed
// errors that keep the server's stable code. It also runs the push
// protocol of an offline repository (PushRepo): versions, blob uploads,
// push, adoption of what the server published.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// APIError is a refusal from the server. Its text fields are made safe
// to print (internal/termsafe) when it is decoded.
type APIError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Role    string `json:"role"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("server refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// Answer limits: the most the client reads of a server's answer to each
// kind of request. An answer that is larger is cut while it is read and
// the request fails with an *AnswerTooLargeError.
const (
	// MaxSmallAnswer bounds small JSON answers: keys, versions, a push's
	// answer, a token or device operation, a consistency proof.
	MaxSmallAnswer = 1 << 20
	// MaxCheckpoint bounds the log's checkpoint (a signed note).
	MaxCheckpoint = 64 << 10
	// MaxLogProof bounds a release's log statement and inclusion proof.
	MaxLogProof = 1 << 20
	// MaxTokenList bounds the list of operator tokens.
	MaxTokenList = 16 << 20
	// MaxAuditPage bounds one page of the audit export.
	MaxAuditPage = 64 << 20
	// MaxErrorBody bounds the body of a refusal.
	MaxErrorBody = 1 << 20
)

// maxAuditPageSize is the server's largest audit page, in entries.
const maxAuditPageSize = 10000

// MaxMetadata bounds a TUF metadata file, as in a bundle.
const MaxMetadata = bundle.MaxMetadata

// Default deadlines; see the fields of Client.
const (
	DefaultTimeout       = 2 * time.Minute
	DefaultPushTimeout   = 10 * time.Minute
	DefaultUploadStall   = 60 * time.Second
	DefaultUploadGrace   = 60 * time.Second
	DefaultUploadMinRate = 16 << 10
)

// ErrAnswerTooLarge is wrapped by every *AnswerTooLargeError.
var ErrAnswerTooLarge = errors.New("server answer too large")

// AnswerTooLargeError is an answer that exceeded its limit. The client
// stopped reading it at Limit+1 bytes.
type AnswerTooLargeError struct {
	Endpoint string // the path asked for
	Limit    int64  // bytes
}

func (e *AnswerTooLargeError) Error() string {
	return fmt.Sprintf("server answer for %s exceeds %s: the server or something between is misbehaving", e.Endpoint, byteSize(e.Limit))
}

func (e *AnswerTooLargeError) Unwrap() error { return ErrAnswerTooLarge }

// FailureKind is Environment: the request was never judged; the server,
// or a proxy or TLS front end between, misbehaved.
func (e *AnswerTooLargeError) FailureKind() failure.Kind { return failure.Environment }

// FailureHint says where to look.
func (e *AnswerTooLargeError) FailureHint() string {
	return "rampart never reads more than this from the server; check the server's logs and any proxy or TLS front end between (docs/cli.md, Client limits and deadlines)"
}

// TimeoutError is a request cut by a deadline or by the upload stall rule.
// It wraps context.DeadlineExceeded.
type TimeoutError struct {
	Op     string // method and path, e.g. "GET /repo/timestamp.json"
	Reason string // e.g. "no answer within 2m0s"
}

func (e *TimeoutError) Error() string { return e.Op + ": " + e.Reason }

func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// FailureKind is Environment: a retry may succeed.
func (e *TimeoutError) FailureKind() failure.Kind { return failure.Environment }

// FailureHint says where to look.
func (e *TimeoutError) FailureHint() string {
	return "the server or the network is slow or stalled; check them (and any proxy between) and retry"
}

// Client is safe for concurrent use once its fields are set.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string

	// Timeout bounds every request but pushes and blob uploads, from
	// sending it to reading the whole answer (default 2 minutes).
	Timeout time.Duration
	// PushTimeout bounds a push (POST /api/v1/repo/push), which the
	// server verifies, logs and signs before answering (default 10
	// minutes).
	PushTimeout time.Duration
	// A blob upload has no overall deadline, since it may be GiBs on a
	// slow link. It is cut when no byte of it has moved for UploadStall
	// (default 60 s), or when, after UploadGrace (default 60 s), its
	// average rate is below UploadMinRate bytes a second (default 16
	// KiB/s). Once the blob is sent, the answer must come within Timeout.
	// A duration that is not positive means its default; an UploadMinRate
	// that is not positive turns the rate rule off.
	UploadStall   time.Duration
	UploadGrace   time.Duration
	UploadMinRate int64

	// AuditPageSize is how many audit entries AuditPages asks for at a
	// time (default and at most 10000, the most the server gives).
	AuditPageSize int
}

// New returns a client for server (https://host:port) that trusts only the
// CA certificate(s) in caFile.
func New(server, caFile, token string) (*Client, error) {
	u, err := url.Parse(server)
	switch {
	case err == nil && u.Scheme == "http":
		return nil, &SetupError{Msg: fmt.Sprintf("server %q is plain http://", termsafe.String(server)), Hint: "rampart-server speaks HTTPS only: give https://HOST:PORT"}
	case err != nil || u.Scheme != "https" || u.Host == "":
		return nil, &SetupError{Msg: fmt.Sprintf("server %q is not an https:// URL", termsafe.String(server)), Hint: "give the server as https://HOST:PORT, for example https://127.0.0.1:8443"}
	}
	if caFile == "" {
		return nil, &SetupError{Msg: "no server CA", Hint: "give --ca FILE (or RAMPART_CA): the server's ca.pem, which rampart-server init writes into its data directory"}
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, &SetupError{Msg: err.Error(), Hint: "--ca is the server's ca.pem (rampart-server init writes it)", Err: err}
	}
	pool, err := pki.CertPoolFromPEM(ca)
	if err != nil {
		return nil, &SetupError{Msg: fmt.Sprintf("%s: %v", caFile, err), Hint: "--ca is the server's ca.pem (rampart-server init writes it)", Err: err}
	}
	// HTTP/1.1: uploads of large blobs are faster without HTTP/2 flow
	// control. Deadlines are per request (see do), not on the transport.
	tr := &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil), WriteBufferSize: 256 << 10, MaxResponseHeaderBytes: 1 << 20}
	return &Client{
		base: u, http: &http.Client{Transport: tr}, token: token,
		Timeout: DefaultTimeout, PushTimeout: DefaultPushTimeout,
		UploadStall: DefaultUploadStall, UploadGrace: DefaultUploadGrace, UploadMinRate: DefaultUploadMinRate,
		AuditPageSize: maxAuditPageSize,
	}, nil
}

// SetupError is a server URL or CA that cannot work, found before any
// connection.
type SetupError struct {
	Msg, Hint string
	Err       error
}

func (e *SetupError) Error() string             { return e.Msg }
func (e *SetupError) Unwrap() error             { return e.Err }
func (e *SetupError) FailureKind() failure.Kind { return failure.Input }
func (e *SetupError) FailureHint() string       { return e.Hint }

// ConnError is a request that reached no server, or no server this client
// trusts. Its hint names the likely cause.
type ConnError struct {
	Op, Server string
	Err        error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("%s: cannot reach the server at %s: %v", e.Op, e.Server, e.Err)
}
func (e *ConnError) Unwrap() error             { return e.Err }
func (e *ConnError) FailureKind() failure.Kind { return failure.Environment }

// FailureHint reads the cause off the error chain.
func (e *ConnError) FailureHint() string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recordHeader tls.RecordHeaderError
	var dns *net.DNSError
	switch {
	case errors.As(e.Err, &unknownCA):
		return "the server's certificate is not signed by the CA given with --ca: give this server's ca.pem (in its data directory), or check --server points at the right server"
	case errors.As(e.Err, &hostname):
		return "the server's certificate does not name " + e.Server + ": connect with a name or address given to rampart-server init --host"
	case errors.As(e.Err, &invalid):
		return "the server's certificate is not valid now (expired, or a clock is wrong): check both clocks"
	case errors.As(e.Err, &recordHeader):
		return "something at " + e.Server + " answers, but not with TLS: is it rampart-server, and is the port right?"
	case errors.As(e.Err, &dns):
		return "the host name in --server does not resolve: check it"
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return "nothing listens at " + e.Server + ": is rampart-server serve running there, and is --server right?"
	case errors.Is(e.Err, syscall.ECONNRESET), errors.Is(e.Err, io.EOF), errors.Is(e.Err, io.ErrUnexpectedEOF):
		return "the connection was closed mid-request: retry; if it persists, check the server's log and anything between (proxy, load balancer)"
	}
	return "check --server and the network between here and the server"
}

// call is one request and the bounds of its answer.
type call struct {
	method, path string
	body         io.Reader
	length       int64         // of body; -1 if unknown
	limit        int64         // the most bytes of answer read
	timeout      time.Duration // whole request (DefaultTimeout if 0)
	upload       bool          // the upload rule instead of timeout
}

// do sends a request under its deadline and returns the answer, read up
// to its limit. A refusal (status >= 400) becomes an *APIError.
func (c *Client) do(ctx context.Context, k call) ([]byte, error) {
	op := k.method + " " + strings.SplitN(k.path, "?", 2)[0]
	if !k.upload {
		if k.timeout <= 0 {
			k.timeout = DefaultTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, k.timeout, &TimeoutError{Op: op, Reason: "no answer within " + k.timeout.String()})
		defer cancel()
	} else {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		m := &meter{r: k.body, length: k.length}
		k.body = m
		stop := c.watchUpload(ctx, cancel, op, m)
		defer stop()
	}
	b, err := c.send(ctx, k)
	if err != nil && ctx.Err() != nil {
		// Name the deadline or rule that cut the request.
		var te *TimeoutError
		if cause := context.Cause(ctx); errors.As(cause, &te) {
			return nil, te
		}
		return nil, fmt.Errorf("%s: %w", op, context.Cause(ctx))
	}
	return b, err
}

func (c *Client) send(ctx context.Context, k call) ([]byte, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + k.path
	if i := strings.IndexByte(k.path, '?'); i >= 0 {
		u.Path = strings.TrimSuffix(c.base.Path, "/") + k.path[:i]
		u.RawQuery = k.path[i+1:]
	}
	req, err := http.NewRequestWithContext(ctx, k.method, u.String(), k.body)
	if err != nil {
		return nil, err
	}
	if k.length >= 0 {
		req.ContentLength = k.length
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &ConnError{Op: k.method + " " + u.Path, Server: c.base.Host, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, apiError(resp)
	}
	if k.method == "HEAD" {
		return nil, nil // no body, whatever Content-Length says
	}
	return readAnswer(resp, k.path, k.limit)
}

// readAnswer reads at most limit bytes of an answer: it stops at limit+1
// and fails, so a hostile server cannot make the client hold more.
func readAnswer(resp *http.Response, path string, limit int64) ([]byte, error) {
	tooLarge := &AnswerTooLargeError{Endpoint: path, Limit: limit}
	if resp.ContentLength > limit {
		return nil, tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if int64(len(b)) > limit {
		return nil, tooLarge
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// apiError decodes a refusal, read up to MaxErrorBody; every text field
// the server chose is made safe to print.
func apiError(resp *http.Response) error {
	var e api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
	if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
		// HEAD responses carry no body: name the status instead.
		code := map[int]string{401: "unauthenticated", 403: "forbidden", 404: "not-found"}[resp.StatusCode]
		if code == "" {
			code = "http"
		}
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Code: code, Message: termsafe.String(msg)}
	}
	return &APIError{Status: resp.StatusCode, Code: termsafe.Bounded(string(e.Error.Code), 64),
		Message: termsafe.String(e.Error.Message), Role: termsafe.Bounded(e.Error.Role, 64)}
}

// getJSON fetches path under the default timeout and decodes its JSON answer
// into out.
func (c *Client) getJSON(ctx context.Context, path string, limit int64, out any) error {
	return c.doJSON(ctx, call{method: "GET", path: path, length: -1, limit: limit, timeout: c.Timeout}, out)
}

// postJSON posts in as JSON under the default timeout and decodes the
// answer into out (if not nil).
func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	k := call{method: "POST", path: path, length: 0, limit: MaxSmallAnswer, timeout: c.Timeout}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		k.body, k.length = bytes.NewReader(b), int64(len(b))
	}
	return c.doJSON(ctx, k, out)
}

func (c *Client) doJSON(ctx context.Context, k call, out any) error {
	b, err := c.do(ctx, k)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the server's answer to %s %s: %w", k.method, k.path, err)
	}
	return nil
}

// meter counts the bytes of an upload the transport has taken.
type meter struct {
	r      io.Reader
	length int64
	n      atomic.Int64
	eof    atomic.Bool
}

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if m.n.Add(int64(n)) >= m.length && m.length >= 0 || err == io.EOF {
		m.eof.Store(true)
	}
	return n, err
}

// watchUpload enforces the upload rule on m until stop is called: it
// cancels ctx, with a *TimeoutError as the cause, when no byte moved for
// UploadStall, when the average rate after UploadGrace is below
// UploadMinRate, or when the answer has not come within Timeout of the
// last byte.
func (c *Client) watchUpload(ctx context.Context, cancel context.CancelCauseFunc, op string, m *meter) (stop func()) {
	stall, grace, answer := orDefault(c.UploadStall, DefaultUploadStall), orDefault(c.UploadGrace, DefaultUploadGrace), orDefault(c.Timeout, DefaultTimeout)
	tick := min(stall, grace, answer) / 10
	tick = max(10*time.Millisecond, min(tick, time.Second))
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		start := time.Now()
		last, moved := int64(0), start
		var sent time.Time
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				n := m.n.Load()
				if n != last {
					last, moved = n, now
				}
				var reason string
				switch {
				case m.eof.Load():
					if sent.IsZero() {
						sent = now
					}
					if now.Sub(sent) >= answer {
						reason = fmt.Sprintf("no answer within %v of sending the last byte", answer)
					}
				case now.Sub(moved) >= stall:
					reason = fmt.Sprintf("upload stalled: no byte moved for %v (%s of %s sent)", stall, byteSize(n), byteSize(m.length))
				case now.Sub(start) >= grace && float64(n) < float64(c.UploadMinRate)*now.Sub(start).Seconds():
					reason = fmt.Sprintf("upload too slow: %s of %s sent in %v, below the minimum average of %s/s", byteSize(n), byteSize(m.length), now.Sub(start).Round(time.Millisecond), byteSize(c.UploadMinRate))
				}
				if reason != "" {
					cancel(&TimeoutError{Op: op, Reason: reason})
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// orDefault is d, or def if d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// byteSize names a size for messages: "8 MiB", "64 KiB", "1234 bytes".
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Base returns the server URL.
func (c *Client) Base() string { return c.base.String() }

// Keys returns the server's online public keys and log key.
func (c *Client) Keys(ctx context.Context) (*api.Keys, error) {
	var out api.Keys
	err := c.getJSON(ctx, "/api/v1/keys", MaxSmallAnswer, &out)
	return &out, err
}

// Versions returns the versions of root, targets and each product role.
func (c *Client) Versions(ctx context.Context) (map[string]int64, error) {
	var out api.VersionsResponse
	err := c.getJSON(ctx, "/api/v1/repo/versions", MaxSmallAnswer, &out)
	return out.Versions, err
}

// HasBlob reports whether the server holds a blob.
func (c *Client) HasBlob(ctx context.Context, digest string) (bool, error) {
	_, err := c.do(ctx, call{method: "HEAD", path: "/api/v1/blobs/" + digest, length: -1, limit: MaxSmallAnswer, timeout: c.Timeout})
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// PutBlob uploads a blob of the given digest and length, under the upload
// rule (see Client).
func (c *Client) PutBlob(ctx context.Context, digest string, length int64, r io.Reader) error {
	_, err := c.do(ctx, call{method: "PUT", path: "/api/v1/blobs/" + digest + "?length=" + strconv.FormatInt(length, 10), body: r, length: length, limit: MaxSmallAnswer, upload: true})
	return err
}

// PushResult is the server's answer to an accepted push. Release names
// are made safe to print (internal/termsafe).
type PushResult = api.PushResponse

// Push uploads metadata, under PushTimeout.
func (c *Client) Push(ctx context.Context, roots [][]byte, targets []byte, roles map[string][]byte) (*PushResult, error) {
	b, err := json.Marshal(api.PushRequest{Roots: roots, Targets: targets, Roles: roles})
	if err != nil {
		return nil, err
	}
	var out PushResult
	if err := c.doJSON(ctx, call{method: "POST", path: "/api/v1/repo/push", body: bytes.NewReader(b), length: int64(len(b)), limit: MaxSmallAnswer, timeout: orDefault(c.PushTimeout, DefaultPushTimeout)}, &out); err != nil {
		return nil, err
	}
	for i, r := range out.Releases {
		out.Releases[i] = termsafe.String(r)
	}
	return &out, nil
}

// Metadata fetches a published metadata file (N.ROLE.json, timestamp.json),
// at most MaxMetadata bytes.
func (c *Client) Metadata(ctx context.Context, file string) ([]byte, error) {
	return c.do(ctx, call{method: "GET", path: "/repo/" + file, length: -1, limit: MaxMetadata, timeout: c.Timeout})
}

// CreateToken creates an operator token and returns its secret.
func (c *Client) CreateToken(ctx context.Context, name, role string) (string, error) {
	var out api.TokenCreated
	err := c.postJSON(ctx, "/api/v1/tokens", api.TokenRequest{Name: name, Role: role}, &out)
	return out.Token, err
}

// Token is an operator token as the server lists it: never its secret.
type Token = api.Token

// Tokens lists every operator token, revoked ones included (admin).
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out api.TokenList
	err := c.getJSON(ctx, "/api/v1/tokens", MaxTokenList, &out)
	return out.Tokens, err
}

// SetTokenRole changes a token's role (admin); it applies from the
// token's next request.
func (c *Client) SetTokenRole(ctx context.Context, name, role string) (Token, error) {
	var out Token
	err := c.postJSON(ctx, "/api/v1/tokens/"+url.PathEscape(name)+"/role", api.RoleRequest{Role: role}, &out)
	return out, err
}

// RevokeToken revokes a token (admin); it is refused from its next
// request on.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.postJSON(ctx, "/api/v1/tokens/"+url.PathEscape(name)+"/revoke", nil, nil)
}

// Audit returns every audit entry, fetched in pages (see AuditPages). It
// holds the whole log in memory: prefer AuditPages.
func (c *Client) Audit(ctx context.Context) ([]audit.Entry, error) {
	var all []audit.Entry
	err := c.AuditPages(ctx, func(page []audit.Entry) error {
		all = append(all, page...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}

// AuditPages fetches the audit log page by page, from its first entry,
// and calls fn with each page in order until a page is empty. Each page
// is at most MaxAuditPage bytes and its entries must carry the sequence
// numbers that follow the previous page's, one by one; otherwise
// AuditPages stops with an error that wraps audit.ErrBroken. It checks
// sequence numbers only: fn verifies the hash chain (audit.Verify with the
// previous page's last entry). An error from fn stops it and is returned
// as it is. Only the current page is held. A log whose start was pruned
// by the server's retention is read with AuditAnchor and
// AuditPagesAfter.
func (c *Client) AuditPages(ctx context.Context, fn func(page []audit.Entry) error) error {
	return c.AuditPagesAfter(ctx, 0, fn)
}

// AuditPagesAfter is AuditPages from the entry after seq after. The
// server bounds a page by bytes as well as by entries, so a page shorter
// than asked is not the end: an empty one is.
func (c *Client) AuditPagesAfter(ctx context.Context, after uint64, fn func(page []audit.Entry) error) error {
	size := c.AuditPageSize
	if size <= 0 || size > maxAuditPageSize {
		size = maxAuditPageSize
	}
	for {
		path := fmt.Sprintf("/api/v1/audit?after=%d&limit=%d", after, size)
		b, err := c.do(ctx, call{method: "GET", path: path, length: -1, limit: MaxAuditPage, timeout: c.Timeout})
		if err != nil {
			return err
		}
		var page []audit.Entry
		dec := json.NewDecoder(bytes.NewReader(b))
		for dec.More() {
			if len(page) == size {
				return &auditExportError{fmt.Sprintf("the page after seq %d holds more than the %d entries asked for", after, size)}
			}
			var e audit.Entry
			if err := dec.Decode(&e); err != nil {
				return fmt.Errorf("audit export after seq %d: %w", after, err)
			}
			if want := after + uint64(len(page)) + 1; e.Seq != want {
				return &auditExportError{fmt.Sprintf("entry %d of the page after seq %d has seq %d, not %d (an entry was deleted or moved, or the server repeats itself)", len(page), after, e.Seq, want)}
			}
			page = append(page, e)
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
		after = page[len(page)-1].Seq
	}
}

// AuditAnchor is where a server's retained audit log starts: the seq and
// hash of the last entry its retention pruned (0 and audit.Genesis when
// none was). The first retained entry names this hash as its previous
// one, so audit.Verify checks the rest from an entry with this Seq and
// Hash.
type AuditAnchor = api.AuditAnchor

// AuditAnchor returns the server's audit anchor.
func (c *Client) AuditAnchor(ctx context.Context) (AuditAnchor, error) {
	var a AuditAnchor
	if err := c.getJSON(ctx, "/api/v1/audit/anchor", MaxSmallAnswer, &a); err != nil {
		return a, err
	}
	if len(a.Hash) != len(audit.Genesis) {
		return a, &auditExportError{fmt.Sprintf("the audit anchor's hash %q is not a SHA-256", a.Hash)}
	}
	return a, nil
}

// auditExportError is an audit export whose sequence numbers do not
// follow one another.
type auditExportError struct{ msg string }

func (e *auditExportError) Error() string             { return "audit export: " + e.msg }
func (e *auditExportError) Unwrap() error             { return audit.ErrBroken }
func (e *auditExportError) FailureKind() failure.Kind { return failure.Refused }
func (e *auditExportError) FailureHint() string {
	return "the server's audit export is not one unbroken log: entries were deleted from its database, or the server misbehaves; preserve the database and investigate"
}

// FailureKind classifies refusals for the CLI's exit codes: the server
// judged the input (1), the request itself was wrong or unauthorised (2),
// or the server failed (3).
func (e *APIError) FailureKind() failure.Kind {
	switch {
	case e.Status >= 500:
		return failure.Environment
	case e.Status == http.StatusUnprocessableEntity || e.Status == http.StatusConflict:
		return failure.Refused
	}
	return failure.Input
}

// FailureHint suggests the next step for common refusals.
func (e *APIError) FailureHint() string {
	switch e.Code {
	case "unauthenticated":
		return "check --token (or RAMPART_TOKEN); tokens are created with rampart token create"
	case "token-revoked":
		return "this token was revoked; ask an admin for a new one (rampart token create)"
	case "last-admin":
		return "create another admin token first (rampart token create NAME --role admin)"
	case "forbidden":
		return "this token's role may not do this; use a token with the role named above"
	case "version-not-next":
		return "the server already has this version or a newer one; check rampart repo status and the server's state"
	}
	return ""
}

// EnrollToken creates a one-time enrollment token for a hardware id.
func (c *Client) EnrollToken(ctx context.Context, hardware string, ttl time.Duration) (string, time.Time, error) {
	var out api.EnrollToken
	secs := int64(ttl / time.Second)
	err := c.postJSON(ctx, "/api/v1/devices/tokens", api.EnrollTokenRequest{Hardware: hardware, TTLSeconds: &secs}, &out)
	return out.Token, out.Expires, err
}

// Deploy assigns a release to every device of a hardware id.
func (c *Client) Deploy(ctx context.Context, target, hardware string) (devices, changed int, err error) {
	var out api.Deployed
	err = c.postJSON(ctx, "/api/v1/deploy", api.DeployRequest{Target: target, Hardware: hardware}, &out)
	return out.Devices, out.Changed, err
}

// RevokeDevice revokes a device; its certificate stops working at once.
func (c *Client) RevokeDevice(ctx context.Context, id string) error {
	return c.postJSON(ctx, "/api/v1/devices/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// RemoveDevice deletes a device's record: its certificate stops working at
// once and its id can enroll again.
func (c *Client) RemoveDevice(ctx context.Context, id string) error {
	return c.doJSON(ctx, call{method: "DELETE", path: "/api/v1/devices/" + url.PathEscape(id), length: 0, limit: MaxSmallAnswer, timeout: c.Timeout}, nil)
}

// DirectorRootVersion returns the newest director root version the server
// holds, 0 if none.
func (c *Client) DirectorRootVersion(ctx context.Context) (int64, error) {
	var out api.DirectorVersionResponse
	err := c.getJSON(ctx, "/api/v1/director/root", MaxSmallAnswer, &out)
	return out.Director, err
}

// PushDirectorRoots pushes new director root versions, in order.
func (c *Client) PushDirectorRoots(ctx context.Context, roots [][]byte) (int64, error) {
	var out api.DirectorRootResponse
	err := c.postJSON(ctx, "/api/v1/director/root", api.DirectorRootRequest{Roots: roots}, &out)
	return out.Root, err
}

// Checkpoint fetches the log's current checkpoint (unverified), at most
// MaxCheckpoint bytes.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	return c.do(ctx, call{method: "GET", path: "/log/checkpoint", length: -1, limit: MaxCheckpoint, timeout: c.Timeout})
}

// LogProof fetches a release's logged statement and inclusion proof.
func (c *Client) LogProof(ctx context.Context, target string) (statement []byte, proof *logproof.Proof, err error) {
	path := "/api/v1/log/proof/" + target
	b, err := c.do(ctx, call{method: "GET", path: path, length: -1, limit: MaxLogProof, timeout: c.Timeout})
	if err != nil {
		return nil, nil, err
	}
	env, err := logproof.ParseEnvelope(b)
	if err != nil {
		return nil, nil, fmt.Errorf("the server's answer to GET %s: %w", path, err)
	}
	return env.Statement, env.Proof, nil
}

// LogProofJSON returns the server's log proof answer for a release as it
// is, for an offline bundle to carry (devices verify it), at most
// MaxLogProof bytes.
func (c *Client) LogProofJSON(ctx context.Context, target string) ([]byte, error) {
	return c.do(ctx, call{method: "GET", path: "/api/v1/log/proof/" + target, length: -1, limit: MaxLogProof, timeout: c.Timeout})
}

// Consistency fetches a consistency proof between two tree sizes.
func (c *Client) Consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	var out api.Consistency
	err := c.getJSON(ctx, fmt.Sprintf("/api/v1/log/consistency?from=%d&to=%d", from, to), MaxSmallAnswer, &out)
	return out.Hashes, err
}

// MaxDeviceList bounds one page of a device listing (10,000 devices).
const MaxDeviceList = 16 << 20

// DevicePage fetches one page of the devices selector selects, after the
// id after (see api.DeviceList); limit 0 is the server's default.
func (c *Client) DevicePage(ctx context.Context, selector, after string, limit int) (api.DeviceList, error) {
	q := url.Values{}
	if selector != "" {
		q.Set("select", selector)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/api/v1/devices"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out api.DeviceList
	err := c.getJSON(ctx, path, MaxDeviceList, &out)
	return out, err
}

// Devices calls fn with each page of the devices selector selects, in id
// order, until the last page; an error from fn stops it.
func (c *Client) Devices(ctx context.Context, selector string, fn func([]api.DeviceSummary) error) error {
	after := ""
	for {
		page, err := c.DevicePage(ctx, selector, after, 0)
		if err != nil {
			return err
		}
		if err := fn(page.Devices); err != nil {
			return err
		}
		if page.Next == "" {
			return nil
		}
		if page.Next <= after {
			return fmt.Errorf("device listing: the server's next page starts at %q, not after %q", termsafe.Bounded(page.Next, 64), termsafe.Bounded(after, 64))
		}
		after = page.Next
	}
}

// Device returns one device with its report history and assignment.
func (c *Client) Device(ctx context.Context, id string) (api.Device, error) {
	var out api.Device
	err := c.getJSON(ctx, "/api/v1/devices/"+url.PathEscape(id), MaxSmallAnswer, &out)
	return out, err
}

// SetTags removes the unset keys from a device's tags and sets set, and
// returns the tags it now has.
func (c *Client) SetTags(ctx context.Context, id string, set map[string]string, unset []string) (map[string]string, error) {
	var out api.Tags
	err := c.postJSON(ctx, "/api/v1/devices/"+url.PathEscape(id)+"/tags", api.TagsRequest{Set: set, Unset: unset}, &out)
	return out.Tags, err
}

// Releases lists the published releases of product ("" for all).
func (c *Client) Releases(ctx context.Context, product string) ([]api.Release, error) {
	path := "/api/v1/releases"
	if product != "" {
		path += "?product=" + url.QueryEscape(product)
	}
	var out api.ReleaseList
	err := c.getJSON(ctx, path, MaxDeviceList, &out)
	return out.Releases, err
}

// CreateRollout creates a rollout.
func (c *Client) CreateRollout(ctx context.Context, req api.RolloutRequest) (api.RolloutCreated, error) {
	var out api.RolloutCreated
	err := c.postJSON(ctx, "/api/v1/rollouts", req, &out)
	return out, err
}

// Rollouts lists the newest rollouts.
func (c *Client) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	var out api.RolloutList
	err := c.getJSON(ctx, "/api/v1/rollouts", MaxDeviceList, &out)
	return out.Rollouts, err
}

// Rollout returns one rollout.
func (c *Client) Rollout(ctx context.Context, id string) (api.Rollout, error) {
	var out api.Rollout
	err := c.getJSON(ctx, "/api/v1/rollouts/"+url.PathEscape(id), MaxSmallAnswer, &out)
	return out, err
}

// RolloutAction pauses, resumes, aborts or approves a rollout.
func (c *Client) RolloutAction(ctx context.Context, id, action, reason string) (api.Rollout, error) {
	var out api.Rollout
	err := c.postJSON(ctx, "/api/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), api.RolloutAction{Reason: reason}, &out)
	return out, err
}

// FleetStats returns the fleet's statistics.
func (c *Client) FleetStats(ctx context.Context) (api.FleetStats, error) {
	var out api.FleetStats
	err := c.getJSON(ctx, "/api/v1/fleet/stats", MaxSmallAnswer, &out)
	return out, err
}

// RevokeKey revokes a key (incident response).
func (c *Client) RevokeKey(ctx context.Context, keyID, reason string) (api.KeyRevoked, error) {
	var out api.KeyRevoked
	err := c.postLarge(ctx, "/api/v1/incidents/revoke-key", api.RevokeKeyRequest{KeyID: keyID, Reason: reason}, &out)
	return out, err
}

// Redeploy puts the last known-good release back on the devices a
// revoked key's release reached.
func (c *Client) Redeploy(ctx context.Context, release, keyID string) (api.Redeployed, error) {
	var out api.Redeployed
	err := c.postLarge(ctx, "/api/v1/incidents/redeploy", api.RedeployRequest{Release: release, AffectedBy: keyID}, &out)
	return out, err
}

// postLarge is postJSON for answers that list up to
// api.MaxAffectedDevices devices.
func (c *Client) postLarge(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.doJSON(ctx, call{method: "POST", path: path, body: bytes.NewReader(b), length: int64(len(b)), limit: MaxDeviceList, timeout: c.Timeout}, out)
}
