package s3blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rampartfw/rampart/internal/blob"
)

// Open returns a reader over a blob. Reads are ranged GETs: Read streams
// from the current offset (one GET until a Seek moves it), ReadAt asks
// for just the range. No read takes more bytes than the blob's size, and
// a read that sees no byte for StallTimeout fails.
func (s *Store) Open(ctx context.Context, digest string) (blob.Reader, error) {
	info, err := s.stat(ctx, digest)
	if err != nil {
		return nil, err
	}
	return &reader{s: s, ctx: ctx, digest: digest, key: s.key(digest), size: info.Size}, nil
}

type reader struct {
	s      *Store
	ctx    context.Context
	digest string
	key    string
	size   int64

	off  int64
	body *rangeBody // streams from off, or nil
}

func (r *reader) Size() int64 { return r.size }

func (r *reader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.body == nil {
		b, err := r.s.get(r.ctx, r.digest, r.off, r.size)
		if err != nil {
			return 0, err
		}
		r.body = b
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if err == io.EOF && r.off < r.size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		r.body.Close()
		r.body = nil // the next Read starts a new GET from r.off
	}
	return n, err
}

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("s3blob: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.size)
	if end == off {
		return 0, nil
	}
	b, err := r.s.get(r.ctx, r.digest, off, end)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	n, err := io.ReadFull(b, p[:end-off])
	if err == nil && end < off+int64(len(p)) {
		err = io.EOF
	}
	if err == io.ErrUnexpectedEOF || err == io.EOF && n < int(end-off) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("s3blob: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("s3blob: negative position")
	}
	if abs != r.off && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.off = abs
	return abs, nil
}

func (r *reader) Close() error {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	return nil
}

var errStalled = errors.New("the S3 endpoint sent no byte for too long")

// get starts a GET of bytes [start, end) of a blob.
func (s *Store) get(ctx context.Context, digest string, start, end int64) (*rangeBody, error) {
	gctx, cancel := context.WithCancelCause(ctx)
	b := &rangeBody{cancel: cancel, stall: s.cfg.StallTimeout, ctx: gctx}
	b.timer = time.AfterFunc(s.cfg.RequestTimeout+s.cfg.StallTimeout, func() { cancel(errStalled) })
	var opts minio.GetObjectOptions
	if err := opts.SetRange(start, end-1); err != nil {
		b.Close()
		return nil, err
	}
	rc, _, h, err := s.core.GetObject(context.WithValue(gctx, objectRead{}, true), s.bucket, s.key(digest), opts)
	if err != nil {
		b.Close()
		if c := context.Cause(gctx); c == errStalled {
			err = c
		}
		return nil, s.wrap(digest, err)
	}
	b.timer.Stop()
	// A server that ignored the range would hand us the wrong bytes.
	if cr, want := h.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/", start, end-1); len(cr) < len(want) || cr[:len(want)] != want {
		if !(start == 0 && h.Get("Content-Range") == "" && end == s.sizeHint(h)) {
			rc.Close()
			b.Close()
			return nil, fmt.Errorf("blob %s: s3 answered range %d-%d with %q", digest, start, end-1, cr)
		}
	}
	b.rc, b.left = rc, end-start
	return b, nil
}

func (s *Store) sizeHint(h http.Header) int64 {
	var n int64
	if _, err := fmt.Sscan(h.Get("Content-Length"), &n); err != nil {
		return -1
	}
	return n
}

// rangeBody is one GET's body: it yields at most the range's length and
// fails a Read that sees no byte for the stall timeout.
type rangeBody struct {
	rc     io.ReadCloser
	left   int64
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	stall  time.Duration
}

func (b *rangeBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	b.timer.Reset(b.stall)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	b.left -= int64(n)
	if err != nil && err != io.EOF {
		if c := context.Cause(b.ctx); c == errStalled {
			err = c
		}
	}
	if err == nil && b.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *rangeBody) Close() error {
	b.timer.Stop()
	b.cancel(context.Canceled)
	if b.rc != nil {
		return b.rc.Close()
	}
	return nil
}

// objectRead marks a request whose body is an object's content, which
// the reader bounds itself (to the range asked for).
type objectRead struct{}

// limitTransport caps every response body but an object's content at
// maxAPIResponse: the S3 client decodes listings and replies whole.
type limitTransport struct{ rt http.RoundTripper }

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.rt.RoundTrip(req)
	if err != nil || req.Context().Value(objectRead{}) != nil {
		return res, err
	}
	res.Body = &limitedBody{rc: res.Body, left: maxAPIResponse}
	return res, nil
}

var errTooLarge = fmt.Errorf("an S3 response body passed %d bytes", maxAPIResponse)

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more than allowed says whether it ended in time.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
