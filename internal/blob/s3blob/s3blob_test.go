package s3blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/blob/blobtest"
	"github.com/rampartfw/rampart/internal/blob/s3blob"
)

func newStore(t testing.TB, endpoint, bucket string, tune func(*s3blob.Config)) *s3blob.Store {
	t.Helper()
	cfg := s3blob.Config{
		Endpoint: endpoint, Bucket: bucket, Prefix: "blobs", PathStyle: true, Region: "us-east-1",
		Creds:    credentials.NewStaticV4(accessKey, secretKey, ""),
		PartSize: 5 << 20,
	}
	if tune != nil {
		tune(&cfg)
	}
	s, err := s3blob.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the shared suite against versitygw; after each
// case no multipart upload may be left: failed Puts abort theirs.
func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		bucket := newBucket(t)
		t.Cleanup(func() {
			if left := incompleteUploads(t, bucket); len(left) != 0 {
				t.Errorf("uploads left in %s: %v", bucket, left)
			}
		})
		return newStore(t, versitygw(t), bucket, nil)
	})
}

func blobOf(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.Read(b)
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// Transient S3 errors (503 SlowDown, 500) are retried a bounded number
// of times: a few succeed in the end, endless ones refuse the upload
// after Attempts tries each, with nothing visible and no upload left.
func TestTransientErrorsAreRetriedBoundedly(t *testing.T) {
	ctx := context.Background()
	p := newFaultProxy(t)
	bucket := newBucket(t)
	s := newStore(t, p.url, bucket, func(c *s3blob.Config) { c.Attempts = 3 })
	data, d := blobOf(12<<20 + 5) // three parts

	var fails atomic.Int32
	fails.Store(2)
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "UploadPart" && fails.Add(-1) >= 0 {
			s3Error(w, http.StatusServiceUnavailable, "SlowDown")
			return true
		}
		return false
	})
	if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatalf("two SlowDowns: %v", err)
	}
	if n := p.count("UploadPart"); n != 5 {
		t.Errorf("%d part uploads for 3 parts and 2 SlowDowns, want 5", n)
	}
	checkContent(t, s, d, data)

	// Every part fails: refused after 3 tries of the first part.
	s.Delete(ctx, d)
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "UploadPart" {
			s3Error(w, http.StatusInternalServerError, "InternalError")
			return true
		}
		return false
	})
	start := time.Now()
	err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data))
	if err == nil || errors.Is(err, blob.ErrMismatch) || !strings.Contains(err.Error(), "InternalError") && !strings.Contains(err.Error(), "injected") {
		t.Fatalf("endless 500s: got %v", err)
	}
	if n := p.count("UploadPart"); n != 3 {
		t.Errorf("%d part uploads, want 3 (Attempts)", n)
	}
	if p.count("AbortMultipartUpload") != 1 {
		t.Errorf("the upload was not aborted")
	}
	t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
	p.set(nil)
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a refused upload is visible: %v", err)
	}
	if left := incompleteUploads(t, bucket); len(left) != 0 {
		t.Fatalf("uploads left: %v", left)
	}

	// Completing fails for good: same, for a one-PUT blob and a
	// multipart one.
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if k := kind(r); k == "CompleteMultipartUpload" || k == "PutObject" {
			s3Error(w, http.StatusInternalServerError, "InternalError")
			return true
		}
		return false
	})
	small, sd := blobOf(1000)
	for _, c := range []struct {
		d    string
		data []byte
	}{{d, data}, {sd, small}} {
		if err := s.Put(ctx, c.d, int64(len(c.data)), bytes.NewReader(c.data)); err == nil {
			t.Fatal("a failing completion succeeded")
		}
	}
	p.set(nil)
	for _, dd := range []string{d, sd} {
		if _, err := s.Stat(ctx, dd); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("a refused upload is visible: %v", err)
		}
	}
	if left := incompleteUploads(t, bucket); len(left) != 0 {
		t.Fatalf("uploads left: %v", left)
	}
}

// A server that stops answering costs a bounded wait: a part whose
// response never comes fails after PartTimeout (retries included) and
// the upload is refused; a GET whose body stalls fails after
// StallTimeout.
func TestSlowResponsesAreBounded(t *testing.T) {
	ctx := context.Background()
	p := newFaultProxy(t)
	bucket := newBucket(t)
	s := newStore(t, p.url, bucket, func(c *s3blob.Config) {
		c.RequestTimeout, c.PartTimeout, c.StallTimeout = 500*time.Millisecond, 2*time.Second, 500*time.Millisecond
	})
	data, d := blobOf(11 << 20)
	hang := make(chan struct{})
	defer close(hang)
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "UploadPart" {
			io.Copy(io.Discard, r.Body)
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return true
		}
		return false
	})
	start := time.Now()
	if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err == nil {
		t.Fatal("an upload to a server that never answers succeeded")
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("refused after %v; want about PartTimeout (2 s)", el)
	}
	p.set(nil)
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a refused upload is visible: %v", err)
	}
	if left := incompleteUploads(t, bucket); len(left) != 0 {
		t.Fatalf("uploads left: %v", left)
	}

	// Reads: the body's first bytes come, then nothing.
	if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "GetObject" || r.URL.Query().Has("location") || !strings.Contains(r.URL.Path, d) {
			return false
		}
		objectHeaders(w)
		w.Header().Set("Content-Range", strings.Replace(r.Header.Get("Range"), "=", " ", 1)+"/"+itoa(len(data)))
		w.Header().Set("Content-Length", itoa(len(data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[:1000])
		w.(http.Flusher).Flush()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		return true
	})
	r, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start = time.Now()
	n, err := io.Copy(io.Discard, r)
	if err == nil || n != 1000 {
		t.Fatalf("a stalled read: %d bytes, %v", n, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("a stalled read failed after %v; want about StallTimeout (0.5 s)", el)
	}
	t.Logf("stalled read: %v", err)
}

// Responses are bounded: a listing or error body that never ends, or an
// object body longer than its range, costs a bounded read.
func TestResponsesAreBounded(t *testing.T) {
	ctx := context.Background()
	p := newFaultProxy(t)
	bucket := newBucket(t)
	s := newStore(t, p.url, bucket, func(c *s3blob.Config) { c.Attempts = 1 })
	data, d := blobOf(3000)
	if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	endless := func(w http.ResponseWriter, status int) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Contents><Key>`)
		buf := bytes.Repeat([]byte("a"), 64<<10)
		for sent.Load() < 1<<30 {
			n, err := w.Write(buf)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" {
			endless(w, http.StatusOK)
			return true
		}
		return false
	})
	err := s.Walk(ctx, func(blob.Info) error { return nil })
	if err == nil {
		t.Fatal("an endless listing was accepted")
	}
	if n := sent.Load(); n > 64<<20 {
		t.Errorf("read %d bytes of an endless listing", n)
	}
	t.Logf("endless listing: %v after %d bytes sent", err, sent.Load())

	// An object body longer than asked for: only the blob's bytes.
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "GetObject" || !strings.Contains(r.URL.Path, d) {
			return false
		}
		objectHeaders(w)
		w.Header().Set("Content-Range", "bytes 0-2999/3000")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data)
		for i := 0; i < 1000; i++ {
			if _, err := w.Write(make([]byte, 64<<10)); err != nil {
				return true
			}
		}
		return true
	})
	checkContent(t, s, d, data)
}

// A server that ignores the Range header would hand the reader the wrong
// bytes; the reader refuses them.
func TestIgnoredRangeIsRefused(t *testing.T) {
	ctx := context.Background()
	p := newFaultProxy(t)
	s := newStore(t, p.url, newBucket(t), nil)
	data, d := blobOf(3000)
	if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p.set(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "GetObject" && strings.Contains(r.URL.Path, d) {
			r.Header.Del("Range")
		}
		return false
	})
	r, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 10)
	if n, err := r.ReadAt(buf, 100); err == nil {
		t.Fatalf("ReadAt through a server ignoring ranges: %d bytes %q", n, buf[:n])
	}
}

// CleanTemp aborts the uploads a process that died left behind, by age.
func TestCleanTemp(t *testing.T) {
	ctx := context.Background()
	bucket := newBucket(t)
	s := newStore(t, versitygw(t), bucket, nil)
	c := adminClient(t, versitygw(t))
	for _, k := range []string{"blobs/ab/x", "blobs/cd/y"} {
		if _, err := newUpload(ctx, c, bucket, k); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.CleanTemp(time.Hour); n != 0 || err != nil {
		t.Fatalf("CleanTemp(1h) of fresh uploads = %d, %v", n, err)
	}
	if n, err := s.CleanTemp(0); n != 2 || err != nil {
		t.Fatalf("CleanTemp(0) = %d, %v", n, err)
	}
	if left := incompleteUploads(t, bucket); len(left) != 0 {
		t.Fatalf("uploads left: %v", left)
	}
}

// Walk lists the blobs; ExpireIfOlder removes one only when it is older
// than the cutoff.
func TestWalkAndExpire(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, versitygw(t), newBucket(t), nil)
	data, d := blobOf(100)
	if err := s.Put(ctx, d, 100, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var seen []blob.Info
	if err := s.Walk(ctx, func(b blob.Info) error { seen = append(seen, b); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Digest != d || seen[0].Size != 100 || time.Since(seen[0].ModTime) > time.Hour {
		t.Fatalf("Walk saw %+v", seen)
	}
	if gone, err := s.ExpireIfOlder(d, time.Now().Add(-time.Hour)); gone || err != nil {
		t.Fatalf("expired a fresh blob: %v %v", gone, err)
	}
	if gone, err := s.ExpireIfOlder(d, time.Now().Add(time.Hour)); !gone || err != nil {
		t.Fatalf("did not expire an old blob: %v %v", gone, err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatal(err)
	}
}

// A missing bucket or wrong credentials are clear errors at start-up.
func TestNewRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]s3blob.Config{
		"missing bucket": {Endpoint: versitygw(t), Bucket: "no-such-bucket", PathStyle: true, Region: "us-east-1", Creds: credentials.NewStaticV4(accessKey, secretKey, "")},
		"wrong secret":   {Endpoint: versitygw(t), Bucket: newBucket(t), PathStyle: true, Region: "us-east-1", Creds: credentials.NewStaticV4(accessKey, "nope", "")},
		"bad endpoint":   {Endpoint: "ftp://x", Bucket: "b"},
	} {
		if _, err := s3blob.New(ctx, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func checkContent(t *testing.T, s blob.Store, d string, data []byte) {
	t.Helper()
	r, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (want %d), %v", len(got), len(data), err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func newUpload(ctx context.Context, c *minio.Client, bucket, key string) (string, error) {
	return minio.Core{Client: c}.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{})
}

// objectHeaders are what S3 sends with an object's content.
func objectHeaders(w http.ResponseWriter) {
	w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
	w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
	w.Header().Set("Content-Type", "application/octet-stream")
}
