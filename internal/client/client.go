// Package client is the operator API client used by the rampart CLI: it
// talks to rampart-server over TLS with the server CA pinned (never the
// system roots) and an operator token, and turns API errors into typed
// errors that keep the server's stable code.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/pki"
)

// APIError is a refusal from the server.
type APIError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Role    string `json:"role"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("server refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// Client is safe for concurrent use.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
}

// New returns a client for server (https://host:port) that trusts only the
// CA certificate(s) in caFile.
func New(server, caFile, token string) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an https:// URL", server)
	}
	if caFile == "" {
		return nil, errors.New("no server CA: give --ca FILE (the server's ca.pem)")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := pki.CertPoolFromPEM(ca)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	// HTTP/1.1: uploads of large blobs are faster without HTTP/2 flow control.
	tr := &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil), ResponseHeaderTimeout: 5 * time.Minute, WriteBufferSize: 256 << 10}
	return &Client{base: u, http: &http.Client{Transport: tr}, token: token}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, length int64, out any) error {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.Path = strings.TrimSuffix(c.base.Path, "/") + path[:i]
		u.RawQuery = path[i+1:]
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if length >= 0 {
		req.ContentLength = length
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		var e struct{ Error APIError }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
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
			return &APIError{Status: resp.StatusCode, Code: code, Message: msg}
		}
		e.Error.Status = resp.StatusCode
		return &e.Error
	}
	if out == nil {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err := io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
}

// Base returns the server URL.
func (c *Client) Base() string { return c.base.String() }

// Keys returns the server's online public keys and log key.
func (c *Client) Keys(ctx context.Context) (map[string]string, error) {
	var out map[string]string
	err := c.do(ctx, "GET", "/api/v1/keys", nil, -1, &out)
	return out, err
}

// Versions returns the versions of root, targets and each product role.
func (c *Client) Versions(ctx context.Context) (map[string]int64, error) {
	var out struct{ Versions map[string]int64 }
	err := c.do(ctx, "GET", "/api/v1/repo/versions", nil, -1, &out)
	return out.Versions, err
}

// HasBlob reports whether the server holds a blob.
func (c *Client) HasBlob(ctx context.Context, digest string) (bool, error) {
	err := c.do(ctx, "HEAD", "/api/v1/blobs/"+digest, nil, -1, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// PutBlob uploads a blob of the given digest and length.
func (c *Client) PutBlob(ctx context.Context, digest string, length int64, r io.Reader) error {
	return c.do(ctx, "PUT", "/api/v1/blobs/"+digest+"?length="+strconv.FormatInt(length, 10), r, length, nil)
}

// PushResult is the server's answer to an accepted push.
type PushResult struct {
	Versions map[string]int64 `json:"versions"`
	Releases []string         `json:"releases"`
}

// Push uploads metadata.
func (c *Client) Push(ctx context.Context, roots [][]byte, targets []byte, roles map[string][]byte) (*PushResult, error) {
	b, err := json.Marshal(map[string]any{"roots": roots, "targets": targets, "roles": roles})
	if err != nil {
		return nil, err
	}
	var out PushResult
	if err := c.do(ctx, "POST", "/api/v1/repo/push", bytes.NewReader(b), int64(len(b)), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Metadata fetches a published metadata file (N.ROLE.json, timestamp.json).
func (c *Client) Metadata(ctx context.Context, file string) ([]byte, error) {
	var buf bytes.Buffer
	err := c.do(ctx, "GET", "/repo/"+file, nil, -1, &buf)
	return buf.Bytes(), err
}

// CreateToken creates an operator token and returns its secret.
func (c *Client) CreateToken(ctx context.Context, name, role string) (string, error) {
	b, _ := json.Marshal(map[string]string{"name": name, "role": role})
	var out struct{ Token string }
	err := c.do(ctx, "POST", "/api/v1/tokens", bytes.NewReader(b), int64(len(b)), &out)
	return out.Token, err
}

// Token is an operator token as the server lists it: never its secret.
type Token struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Tokens lists every operator token, revoked ones included (admin).
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out struct{ Tokens []Token }
	err := c.do(ctx, "GET", "/api/v1/tokens", nil, -1, &out)
	return out.Tokens, err
}

// SetTokenRole changes a token's role (admin); it applies from the
// token's next request.
func (c *Client) SetTokenRole(ctx context.Context, name, role string) (Token, error) {
	b, _ := json.Marshal(map[string]string{"role": role})
	var out Token
	err := c.do(ctx, "POST", "/api/v1/tokens/"+url.PathEscape(name)+"/role", bytes.NewReader(b), int64(len(b)), &out)
	return out, err
}

// RevokeToken revokes a token (admin); it is refused from its next
// request on.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.do(ctx, "POST", "/api/v1/tokens/"+url.PathEscape(name)+"/revoke", nil, 0, nil)
}

// Audit returns every audit entry, fetched in pages.
func (c *Client) Audit(ctx context.Context) ([]audit.Entry, error) {
	var all []audit.Entry
	var after uint64
	for {
		var buf bytes.Buffer
		if err := c.do(ctx, "GET", fmt.Sprintf("/api/v1/audit?after=%d&limit=10000", after), nil, -1, &buf); err != nil {
			return nil, err
		}
		dec := json.NewDecoder(&buf)
		n := 0
		for dec.More() {
			var e audit.Entry
			if err := dec.Decode(&e); err != nil {
				return nil, fmt.Errorf("audit export: %w", err)
			}
			all = append(all, e)
			after = e.Seq
			n++
		}
		if n < 10000 {
			return all, nil
		}
	}
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
	b, _ := json.Marshal(map[string]any{"hardware": hardware, "ttl_seconds": int64(ttl / time.Second)})
	var out struct {
		Token   string
		Expires time.Time
	}
	err := c.do(ctx, "POST", "/api/v1/devices/tokens", bytes.NewReader(b), int64(len(b)), &out)
	return out.Token, out.Expires, err
}

// Deploy assigns a release to every device of a hardware id.
func (c *Client) Deploy(ctx context.Context, target, hardware string) (devices, changed int, err error) {
	b, _ := json.Marshal(map[string]string{"target": target, "hardware": hardware})
	var out struct{ Devices, Changed int }
	err = c.do(ctx, "POST", "/api/v1/deploy", bytes.NewReader(b), int64(len(b)), &out)
	return out.Devices, out.Changed, err
}

// RevokeDevice revokes a device; its certificate stops working at once.
func (c *Client) RevokeDevice(ctx context.Context, id string) error {
	return c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(id)+"/revoke", nil, 0, nil)
}

// DirectorRootVersion returns the newest director root version the server
// holds, 0 if none.
func (c *Client) DirectorRootVersion(ctx context.Context) (int64, error) {
	var out struct{ Director int64 }
	err := c.do(ctx, "GET", "/api/v1/director/root", nil, -1, &out)
	return out.Director, err
}

// PushDirectorRoots pushes new director root versions, in order.
func (c *Client) PushDirectorRoots(ctx context.Context, roots [][]byte) (int64, error) {
	b, _ := json.Marshal(map[string]any{"roots": roots})
	var out struct{ Root int64 }
	err := c.do(ctx, "POST", "/api/v1/director/root", bytes.NewReader(b), int64(len(b)), &out)
	return out.Root, err
}

// Checkpoint fetches the log's current checkpoint (unverified).
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	var buf bytes.Buffer
	err := c.do(ctx, "GET", "/log/checkpoint", nil, -1, &buf)
	return buf.Bytes(), err
}

// LogProof fetches a release's logged statement and inclusion proof.
func (c *Client) LogProof(ctx context.Context, target string) (statement []byte, proof *logproof.Proof, err error) {
	var out struct {
		Statement string
		Proof     *logproof.Proof
	}
	if err := c.do(ctx, "GET", "/api/v1/log/proof/"+target, nil, -1, &out); err != nil {
		return nil, nil, err
	}
	return []byte(out.Statement), out.Proof, nil
}

// LogProofJSON returns the server's log proof answer for a release as it
// is, for an offline bundle to carry (devices verify it).
func (c *Client) LogProofJSON(ctx context.Context, target string) ([]byte, error) {
	var buf bytes.Buffer
	err := c.do(ctx, "GET", "/api/v1/log/proof/"+target, nil, -1, &buf)
	return buf.Bytes(), err
}

// Consistency fetches a consistency proof between two tree sizes.
func (c *Client) Consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	var out struct{ Hashes [][]byte }
	err := c.do(ctx, "GET", fmt.Sprintf("/api/v1/log/consistency?from=%d&to=%d", from, to), nil, -1, &out)
	return out.Hashes, err
}
