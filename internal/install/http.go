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
// requests: one chunk ("Range: bytes=off-(off+len-1)") with ReadChunk, or
// a run of consecutive chunks with one request with ReadSpan, which
// Install uses so that a download streams.
//
// A response is accepted only if it is 206 Partial Content with exactly the
// requested Content-Range ("bytes off-end/total" or "bytes off-end/*"), or
// 200 OK when the range starts at offset 0 and Content-Length says the
// body is exactly the range (the range is the whole file). Any other 200
// means the server ignores Range (some mirrors and CDNs do): ReadSpan
// fails with ErrRangeIgnored, and Install falls back to ReadTail, which
// reads the whole file from its start in one pass. The body is read one
// chunk at a time into the caller's buffer, and one byte past the range is
// probed before the last chunk is delivered, so an endless body costs one
// chunk of memory; a chunk of a body of the wrong length is never
// delivered.
//
// What failed decides what happens next. A body that ends early, a
// connection cut mid-body, a timeout and a 5xx are the network's doing:
// they are retried up to MaxRetries times with exponential backoff and
// jitter, resuming at the first chunk not yet delivered (a body that
// ends cleanly but short, or declares a shorter length, only once: a
// proxy's hiccup, not likely to fix itself). A body that carries or
// declares more bytes than asked for is ErrEndlessData and is not
// retried. The budget is per chunk: it starts again when a chunk was
// delivered. 4xx responses (404, 416, 429, ...) and other unexpected
// statuses are not retried. Failures are *FetchError (ErrFetch) naming the
// chunk and carrying the last HTTP status. HTTPSource does not verify
// chunk hashes: Install does.
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

var errShortBody = errors.New("response body shorter than the chunk")

// ReadChunk implements Source: a span of one chunk.
func (s *HTTPSource) ReadChunk(ctx context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	if int64(len(buf)) != c.Length {
		return nil, &FetchError{Chunk: i, Err: fmt.Errorf("invalid chunk: length %d, buffer %d", c.Length, len(buf))}
	}
	var out []byte
	err := s.ReadSpan(ctx, i, []chunkindex.Chunk{c}, buf, func(_ int, data []byte) error {
		out = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadSpan implements SpanSource with one Range request for the bytes of
// all of cs, read chunk by chunk into buf. A connection that fails part
// way is resumed with a new Range request from the first chunk not yet
// passed to yield; the retry budget (MaxRetries, and the single retry for
// a body of the wrong length) applies to each chunk, and restarts once a
// chunk has been delivered, so a span costs at most len(cs)*(MaxRetries+1)
// requests and never delivers a chunk twice.
func (s *HTTPSource) ReadSpan(ctx context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(i int, data []byte) error) error {
	return s.read(ctx, first, cs, buf, yield, false)
}

// ReadTail implements TailSource: ReadSpan for chunks that run to the end
// of the image, from a server that may ignore Range. A 200 OK answer is
// then the whole file: the bytes before cs[0] are read and dropped, and
// the file must end where the image does (Content-Length, or a probe past
// the last chunk): a longer one is ErrEndlessData. A resumed request
// after a cut asks for the rest again, and reads the whole file again if
// it must.
func (s *HTTPSource) ReadTail(ctx context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(i int, data []byte) error) error {
	return s.read(ctx, first, cs, buf, yield, true)
}

func (s *HTTPSource) read(ctx context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(i int, data []byte) error, whole bool) error {
	if err := validSpan(cs, len(buf)); err != nil {
		return &FetchError{Chunk: first, Err: err}
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
	next := 0 // index in cs of the first chunk not yet delivered
	attempt, lengthRetried := 0, false
	for {
		if attempt > 0 {
			t := time.NewTimer(max(backoff(attempt-1), 0))
			select {
			case <-ctx.Done():
				t.Stop()
				return &FetchError{Chunk: first + next, Attempts: attempt, Err: ctx.Err()}
			case <-t.C:
			}
		}
		n, status, class, err := s.fetch(ctx, first+next, cs[next:], buf, yield, whole)
		next += n
		if err == nil {
			return nil
		}
		var ye yieldError
		if errors.As(err, &ye) {
			return ye.err // the caller's own error, not a fetch failure
		}
		if n > 0 { // progress: a fresh budget for the chunk now in front
			attempt, lengthRetried = 0, false
		}
		fe := &FetchError{Chunk: first + next, Status: status, Attempts: attempt + 1, Err: err}
		if ctx.Err() != nil {
			fe.Err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			return fe
		}
		switch class {
		case retryNever:
			return fe
		case retryOnce:
			if lengthRetried {
				return fe
			}
			lengthRetried = true
		}
		if attempt >= retries {
			return fe
		}
		attempt++
	}
}

// NoRedirects returns a copy of c (nil: http.DefaultClient) that never
// follows a redirect: the redirect itself is returned as the answer, a
// status the caller does not accept. A device talks only to the server
// it is configured with, over TLS with the pinned CA; a redirect could
// send it to another host or to plain http, and the net/http error for a
// followed redirect quotes the Location, which a hostile answer makes as
// long as it likes.
func NoRedirects(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// validSpan checks that cs are consecutive chunks that fit in a buffer of
// bufLen bytes.
func validSpan(cs []chunkindex.Chunk, bufLen int) error {
	if len(cs) == 0 {
		return errors.New("invalid span: no chunks")
	}
	for k, c := range cs {
		if c.Offset < 0 || c.Length <= 0 || c.Length > chunkindex.MaxChunkSize || c.Offset > 1<<62 || c.Length > int64(bufLen) {
			return fmt.Errorf("invalid chunk: offset %d length %d (buffer %d)", c.Offset, c.Length, bufLen)
		}
		if k > 0 && c.Offset != cs[k-1].Offset+cs[k-1].Length {
			return fmt.Errorf("invalid span: chunk at offset %d does not follow the one at %d", c.Offset, cs[k-1].Offset)
		}
	}
	return nil
}

// yieldError carries an error returned by a ReadSpan caller's yield
// through fetch, so that it is returned as it is and never retried.
type yieldError struct{ err error }

func (e yieldError) Error() string { return e.err.Error() }

// fetch makes one request for the bytes of cs (consecutive chunks, the
// first of which is chunk number first) and passes each chunk to yield as
// soon as it is read. It returns the number of chunks delivered. With
// whole, cs runs to the end of the image and a 200 OK (the whole file) is
// read from its start.
func (s *HTTPSource) fetch(ctx context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(int, []byte) error, whole bool) (int, int, retryClass, error) {
	client := NoRedirects(s.Client)
	off := cs[0].Offset
	last := cs[len(cs)-1]
	end := last.Offset + last.Length - 1
	length := end - off + 1
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return 0, 0, retryNever, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
	// A transparently decompressed body would not be the requested range.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, retryAlways, err
	}
	defer resp.Body.Close()
	status := resp.StatusCode

	// skip is how many bytes of the body come before the span: all of
	// the file before it when the server sends the whole file.
	skip := int64(0)
	switch {
	case status == http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), off, end); err != nil {
			return 0, status, retryNever, err
		}
	case status == http.StatusOK && off == 0 && resp.ContentLength == length:
		// The range is the whole file: exactly what was asked for.
	case status == http.StatusOK && whole:
		skip = off
	case status == http.StatusOK:
		// Reading the whole file for every span would cost the image
		// many times over: let the caller read it once (ReadTail).
		return 0, status, retryNever, fmt.Errorf("%w (200 OK for bytes %d-%d)", ErrRangeIgnored, off, end)
	case status >= 500 && status <= 599:
		return 0, status, retryAlways, fmt.Errorf("server error: %s", resp.Status)
	default:
		return 0, status, retryNever, fmt.Errorf("unexpected response: %s", resp.Status)
	}
	switch want := skip + length; {
	case resp.ContentLength > want:
		// Declared more than asked for: refused before reading any of it.
		return 0, status, retryNever, fmt.Errorf("%w: Content-Length %d, requested %d bytes", ErrEndlessData, resp.ContentLength, want)
	case resp.ContentLength >= 0 && resp.ContentLength < want:
		return 0, status, retryOnce, fmt.Errorf("%w: Content-Length %d, requested %d bytes", errShortBody, resp.ContentLength, want)
	}
	if skip > 0 {
		n, err := io.CopyN(io.Discard, resp.Body, skip)
		switch {
		case err == io.EOF:
			return 0, status, retryOnce, fmt.Errorf("%w: the whole file ended after %d bytes, before chunk %d at offset %d", errShortBody, n, first, off)
		case err != nil:
			return 0, status, retryAlways, fmt.Errorf("reading the whole file up to chunk %d, after %d of %d bytes: %w", first, n, skip, err)
		}
	}

	for k, c := range cs {
		b := buf[:c.Length]
		n := 0
		for n < len(b) {
			m, err := resp.Body.Read(b[n:])
			n += m
			if err == io.EOF && n < len(b) {
				// The body ended cleanly but short (only possible
				// without Content-Length: with one the transport
				// reports io.ErrUnexpectedEOF).
				return k, status, retryOnce, fmt.Errorf("%w: chunk %d: %d of %d bytes", errShortBody, first+k, n, c.Length)
			}
			if err != nil && err != io.EOF {
				// Connection cut or broken framing mid-body.
				return k, status, retryAlways, fmt.Errorf("reading chunk %d after %d of %d bytes: %w", first+k, n, c.Length, err)
			}
		}
		if k == len(cs)-1 {
			// Probe for one more byte before delivering the last
			// chunk: a longer body is refused, whatever its end, and
			// its last chunk is not delivered. Every answer read this
			// far must end here: a 206 with the span, a 200 with the
			// whole file (whole), or a 200 whose declared length is
			// the span's (off 0). net/http's own framing stops a body
			// at its Content-Length; this does not depend on it.
			var probe [1]byte
			if m, _ := io.ReadFull(resp.Body, probe[:]); m > 0 {
				return k, status, retryNever, fmt.Errorf("%w: the response goes on after byte %d", ErrEndlessData, end)
			}
		}
		if err := yield(first+k, b); err != nil {
			return k, status, retryNever, yieldError{err}
		}
	}
	return len(cs), status, retryNever, nil
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
