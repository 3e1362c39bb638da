package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/chunkindex"
)

// DefaultMaxRetries is the retry count HTTPSource uses when MaxRetries is 0.
const DefaultMaxRetries = 4

// HTTPSource fetches chunks from the payload (image) URL with HTTP Range
// requests: "Range: bytes=off-(off+len-1)".
//
// A response is accepted only if it is 206 Partial Content with exactly the
// requested Content-Range ("bytes off-end/total" or "bytes off-end/*"), or
// 200 OK when the chunk starts at offset 0 and the body is exactly the
// chunk (the chunk is the whole file). At most len+1 body bytes are read,
// so an endless body costs one chunk of memory and is refused; a body of
// the wrong length is never returned.
//
// Retries: transport errors (including a connection dropped mid-body) and
// 5xx responses are retried up to MaxRetries times with exponential backoff
// and jitter. A body of the wrong length (declared or actual) is retried
// once, as it may be a proxy's hiccup but is not likely to fix itself.
// 4xx responses (404, 416, 429, ...) and other unexpected statuses are
// not retried. Failures are *FetchError (ErrFetch) carrying the last HTTP
// status. HTTPSource does not verify chunk hashes: Install does.
type HTTPSource struct {
	Client *http.Client // nil means http.DefaultClient (set a Timeout in production)
	URL    string       // payload URL

	// MaxRetries is the number of retries after the first request: 0
	// means DefaultMaxRetries, negative means none.
	MaxRetries int
	// Backoff returns the pause before retry number attempt (0 for the
	// first retry). nil means DefaultBackoff.
	Backoff func(attempt int) time.Duration
}

// DefaultBackoff is exponential backoff with jitter: about 250ms * 2^attempt,
// capped at 30s, each pause drawn uniformly from [d/2, d].
func DefaultBackoff(attempt int) time.Duration {
	const base, limit = 250 * time.Millisecond, 30 * time.Second
	d := limit
	if attempt >= 0 && attempt < 7 { // 250ms<<7 = 32s > limit
		d = min(base<<attempt, limit)
	}
	return d/2 + rand.N(d/2+1)
}

// retry classes of a failed attempt.
type retryClass int

const (
	retryNever  retryClass = iota
	retryAlways            // transport errors, 5xx: up to MaxRetries
	retryOnce              // wrong body length: at most one retry
)

var (
	errShortBody = errors.New("response body shorter than the chunk")
	errLongBody  = errors.New("response body longer than the chunk")
)

// ReadChunk implements Source.
func (s *HTTPSource) ReadChunk(ctx context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	if c.Offset < 0 || c.Length <= 0 || c.Length > chunkindex.MaxChunkSize || c.Offset > 1<<62 || int64(len(buf)) != c.Length {
		return nil, &FetchError{Chunk: i, Err: fmt.Errorf("invalid chunk: offset %d length %d (buffer %d)", c.Offset, c.Length, len(buf))}
	}
	retries := s.MaxRetries
	if retries == 0 {
		retries = DefaultMaxRetries
	}
	retries = max(retries, 0)
	backoff := s.Backoff
	if backoff == nil {
		backoff = DefaultBackoff
	}
	lengthRetried := false
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(max(backoff(attempt-1), 0))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, &FetchError{Chunk: i, Attempts: attempt, Err: ctx.Err()}
			case <-t.C:
			}
		}
		data, status, class, err := s.fetch(ctx, c, buf)
		if err == nil {
			return data, nil
		}
		fe := &FetchError{Chunk: i, Status: status, Attempts: attempt + 1, Err: err}
		if ctx.Err() != nil {
			fe.Err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			return nil, fe
		}
		switch class {
		case retryNever:
			return nil, fe
		case retryOnce:
			if lengthRetried {
				return nil, fe
			}
			lengthRetried = true
		}
		if attempt >= retries {
			return nil, fe
		}
	}
}

// fetch makes one request for chunk c.
func (s *HTTPSource) fetch(ctx context.Context, c chunkindex.Chunk, buf []byte) ([]byte, int, retryClass, error) {
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	end := c.Offset + c.Length - 1
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, 0, retryNever, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", c.Offset, end))
	// A transparently decompressed body would not be the requested range.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, retryAlways, err
	}
	defer resp.Body.Close()
	status := resp.StatusCode

	switch {
	case status == http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), c.Offset, end); err != nil {
			return nil, status, retryNever, err
		}
	case status == http.StatusOK:
		// The server ignored Range: acceptable only if the whole file
		// is this chunk, which the body length proves below.
		if c.Offset != 0 {
			return nil, status, retryNever, errors.New("server ignored the Range request (200 OK for a chunk not at offset 0)")
		}
		if resp.ContentLength > c.Length {
			return nil, status, retryNever, fmt.Errorf("server ignored the Range request (200 OK with %d bytes for a %d-byte chunk)", resp.ContentLength, c.Length)
		}
	case status >= 500 && status <= 599:
		return nil, status, retryAlways, fmt.Errorf("server error: %s", resp.Status)
	default:
		return nil, status, retryNever, fmt.Errorf("unexpected response: %s", resp.Status)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != c.Length {
		return nil, status, retryOnce, fmt.Errorf("Content-Length %d, chunk is %d bytes", resp.ContentLength, c.Length)
	}

	n := 0
	for n < len(buf) {
		k, err := resp.Body.Read(buf[n:])
		n += k
		if err == io.EOF && n < len(buf) {
			// The body ended cleanly but short (only possible
			// without Content-Length: with one the transport reports
			// io.ErrUnexpectedEOF).
			return nil, status, retryOnce, fmt.Errorf("%w: %d of %d bytes", errShortBody, n, c.Length)
		}
		if err != nil && err != io.EOF {
			// Connection cut or broken framing mid-body.
			return nil, status, retryAlways, fmt.Errorf("reading body after %d of %d bytes: %w", n, c.Length, err)
		}
	}
	// Probe for one more byte: a longer body is refused, whatever its end.
	var probe [1]byte
	if k, _ := io.ReadFull(resp.Body, probe[:]); k > 0 {
		if status == http.StatusOK {
			// The server ignored Range and is sending a larger file.
			return nil, status, retryNever, fmt.Errorf("server ignored the Range request: %w", errLongBody)
		}
		return nil, status, retryOnce, errLongBody
	}
	return buf, status, retryNever, nil
}

// checkContentRange requires "bytes off-end/total" with total "*" or a
// number greater than end.
func checkContentRange(cr string, off, end int64) error {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return fmt.Errorf("bad Content-Range %q", cr)
	}
	rng, total, ok := strings.Cut(rest, "/")
	if !ok || rng != fmt.Sprintf("%d-%d", off, end) {
		return fmt.Errorf("Content-Range %q does not match the requested bytes %d-%d", cr, off, end)
	}
	if total != "*" {
		t, err := strconv.ParseInt(total, 10, 64)
		if err != nil || t <= end || strconv.FormatInt(t, 10) != total {
			return fmt.Errorf("bad Content-Range total in %q", cr)
		}
	}
	return nil
}
