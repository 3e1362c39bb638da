// Package s3blob is a blob.Store on S3-compatible object storage (AWS S3,
// MinIO, Ceph RGW, versitygw, ...), for servers that run as several
// replicas or keep payloads off their own disks.
//
// A blob is visible under its name only once all of it was received and
// its digest and length checked: a blob that fits in one part is hashed
// in memory and then written with one PUT; a larger one is uploaded as a
// multipart upload, hashed while its parts stream out, and the upload is
// completed only when the digest and length match, and aborted otherwise.
// S3 makes an object visible only when CompleteMultipartUpload succeeds,
// so a refused, failed or cut upload leaves no object, only parts the
// store aborts (and CleanTemp, or a bucket lifecycle rule, removes those
// of a process that died). This costs no second copy of the data, unlike
// uploading to a temporary key and copying it server-side once checked.
//
// Every request is bounded: a few retries with backoff for the errors S3
// says are transient, a deadline per part, a response-header timeout,
// and a cap on every response body, so a slow or hostile endpoint costs
// bounded time and memory.
package s3blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/rampartfw/rampart/internal/blob"
)

// Config says where the blobs are and how patient to be.
type Config struct {
	// Endpoint is the S3 endpoint's URL, http:// or https://, without a
	// path; empty for AWS (https://s3.amazonaws.com).
	Endpoint string
	// Region; empty lets the client discover it.
	Region string
	// Bucket holds the blobs under Prefix (which ends in "/" or is empty).
	Bucket, Prefix string
	// PathStyle addresses the bucket in the path (endpoint/bucket/key),
	// not as a host name; the default for every endpoint but AWS's.
	PathStyle bool
	// CAFile is a PEM file of CA certificates for an https endpoint
	// with a private CA; empty for the system's.
	CAFile string
	// Creds; nil reads the environment (AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
	Creds *credentials.Credentials

	// PartSize is the size of a multipart upload's parts (at least
	// 5 MiB, S3's minimum); blobs up to it are stored with one PUT.
	// Each upload holds two parts in memory. Default 8 MiB.
	PartSize int64
	// Attempts is how many times a request is tried when S3 answers
	// with a transient error (5xx, SlowDown) or the connection fails.
	// Default 4.
	Attempts int
	// RequestTimeout bounds one request's wait for the response
	// headers; StallTimeout how long a read may see no byte.
	// PartTimeout bounds one part's upload, retries included. Defaults
	// 30 s, 30 s, 2 min.
	RequestTimeout, StallTimeout, PartTimeout time.Duration
	// Transport, when set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// Limits on what the store accepts from S3.
const (
	minPartSize = 5 << 20
	maxParts    = 10000
	// maxAPIResponse bounds the body of every response except an
	// object's content (errors, listings, upload ids): a page of 1000
	// keys is about 300 KB.
	maxAPIResponse = 8 << 20
	// maxResponseHeader bounds response headers.
	maxResponseHeader = 64 << 10
)

// Store is a blob.Store on an S3 bucket; blobs are objects named
// PREFIX/dd/DIGEST (dd the digest's first two hex digits).
type Store struct {
	core minio.Core // retries transient errors itself
	// body sends requests with a body (PUT of an object or a part) and
	// never retries: minio-go rewinds a body to retry it while net/http
	// may still be sending it, so Store.retry does, with a new reader.
	body   minio.Core
	cfg    Config
	bucket string
	prefix string
}

var _ blob.Store = (*Store)(nil)

// New connects to cfg's bucket and checks that it exists and the
// credentials can reach it.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 blob store: no bucket")
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = 8 << 20
	}
	if cfg.PartSize < minPartSize {
		return nil, fmt.Errorf("s3 blob store: part size %d is below S3's minimum of 5 MiB", cfg.PartSize)
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 4
	}
	for _, d := range []*time.Duration{&cfg.RequestTimeout, &cfg.StallTimeout} {
		if *d <= 0 {
			*d = 30 * time.Second
		}
	}
	if cfg.PartTimeout <= 0 {
		cfg.PartTimeout = 2 * time.Minute
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = "https://s3.amazonaws.com"
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("s3 blob store: endpoint %q is not http(s)://HOST[:PORT]", endpoint)
	}
	rt := cfg.Transport
	if rt == nil {
		t, err := transport(cfg)
		if err != nil {
			return nil, err
		}
		rt = t
	}
	creds := cfg.Creds
	if creds == nil {
		creds = credentials.NewEnvAWS()
	}
	if v, err := creds.GetWithContext(nil); err != nil || v.SignerType.IsAnonymous() || v.AccessKeyID == "" {
		return nil, fmt.Errorf("s3 blob store: no credentials (%v): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or blob_store_credentials", err)
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    &limitTransport{rt},
		MaxRetries:   cfg.Attempts,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	nc, err := minio.New(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    &limitTransport{rt},
		MaxRetries:   1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	s := &Store{core: minio.Core{Client: c}, body: minio.Core{Client: nc}, cfg: cfg, bucket: cfg.Bucket, prefix: cfg.Prefix}
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	ok, err := c.BucketExists(cctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: bucket %s at %s: %w", cfg.Bucket, u.Host, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 blob store: bucket %s does not exist at %s; create it first", cfg.Bucket, u.Host)
	}
	return s, nil
}

func transport(cfg Config) (*http.Transport, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 blob store: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 blob store: %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  cfg.RequestTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeader,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		// Compressed responses would defeat the body limits' accounting.
		DisableCompression: true,
	}, nil
}

func (s *Store) key(digest string) string { return s.prefix + digest[:2] + "/" + digest }

func (s *Store) Put(ctx context.Context, digest string, length int64, r io.Reader) (err error) {
	if err := blob.CheckDigest(digest); err != nil {
		return err
	}
	if length < 0 {
		return fmt.Errorf("%w: negative length %d", blob.ErrMismatch, length)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	partSize := s.cfg.PartSize
	if per := (length + maxParts - 1) / maxParts; per > partSize {
		partSize = (per + 1<<20 - 1) &^ (1<<20 - 1)
	}
	h := sha256.New()
	// One byte more than expected reveals an over-long body without
	// reading an endless one.
	src := io.TeeReader(io.LimitReader(ctxReader{ctx, r}, length+1), h)
	first := make([]byte, min(length+1, partSize+1))
	n, err := io.ReadFull(src, first)
	if err == nil && int64(n) == partSize+1 {
		return s.putMultipart(ctx, digest, length, partSize, first[:partSize], first[partSize:], src, h)
	}
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if err := check(digest, length, int64(n), h); err != nil {
		return err
	}
	// Checked; one PUT makes it visible whole. The SHA-256 goes with it
	// so that S3 refuses it if it changed on the way.
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PartTimeout)
	defer cancel()
	err = s.retry(pctx, func() error {
		_, err := s.body.PutObject(pctx, s.bucket, s.key(digest), bytes.NewReader(first[:n]), int64(n), "", digest,
			minio.PutObjectOptions{ContentType: "application/octet-stream"})
		return err
	})
	if err != nil {
		return fmt.Errorf("blob %s: storing it in s3://%s/%s: %w", digest, s.bucket, s.key(digest), err)
	}
	return nil
}

func check(digest string, length, n int64, h interface{ Sum([]byte) []byte }) error {
	if n != length {
		got := fmt.Sprint(n)
		if n > length {
			got = "more"
		}
		return fmt.Errorf("%w: blob %s: got %s bytes, expected %d", blob.ErrMismatch, digest, got, length)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: content hashes to %s, expected %s", blob.ErrMismatch, got, digest)
	}
	return nil
}

// putMultipart uploads a blob larger than a part: first holds its first
// part and carry the byte read after it; src yields the rest (and h
// hashes all of it). Parts go out on another goroutine while the next is
// read; the upload is completed only when the whole blob matched.
func (s *Store) putMultipart(ctx context.Context, digest string, length, partSize int64, first, carry []byte, src io.Reader, h interface{ Sum([]byte) []byte }) (err error) {
	key := s.key(digest)
	ictx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	id, err := s.core.NewMultipartUpload(ictx, s.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	cancel()
	if err != nil {
		return fmt.Errorf("blob %s: starting an upload to s3://%s/%s: %w", digest, s.bucket, key, err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Detached from ctx: a cancelled Put must still abort.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PartTimeout)
		defer cancel()
		if aerr := s.core.AbortMultipartUpload(actx, s.bucket, key, id); aerr != nil {
			err = fmt.Errorf("%w (and aborting upload %s failed: %v; CleanTemp or the bucket's lifecycle rule removes it)", err, id, aerr)
		}
	}()

	type part struct {
		num int
		buf []byte
	}
	uctx, stopUploads := context.WithCancel(ctx)
	defer stopUploads()
	// Two parts at a time: one being sent while the next is read. Each
	// part has a buffer of its own, never reused: net/http may still be
	// reading a request's body after the response came back.
	full := make(chan part)
	slots := make(chan struct{}, 2)
	slots <- struct{}{}
	var (
		mu        sync.Mutex
		completed []minio.CompletePart
		upErr     error
	)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := range full {
			pctx, cancel := context.WithTimeout(uctx, s.cfg.PartTimeout)
			sum := sha256.Sum256(p.buf)
			var op minio.ObjectPart
			err := s.retry(pctx, func() (err error) {
				op, err = s.body.PutObjectPart(pctx, s.bucket, key, id, p.num, bytes.NewReader(p.buf), int64(len(p.buf)),
					minio.PutObjectPartOptions{Sha256Hex: hex.EncodeToString(sum[:])})
				return err
			})
			cancel()
			mu.Lock()
			if err != nil {
				upErr = fmt.Errorf("part %d: %w", p.num, err)
				mu.Unlock()
				stopUploads()
				return
			}
			completed = append(completed, minio.CompletePart{PartNumber: p.num, ETag: op.ETag})
			mu.Unlock()
			slots <- struct{}{}
		}
	}()
	read := int64(len(first))
	num := 1
	full <- part{num, first}
	var rerr error
	<-slots
	next := make([]byte, partSize)
	k := copy(next, carry)
loop:
	for {
		m, err := io.ReadFull(src, next[k:partSize])
		m += k
		k = 0
		read += int64(m)
		if m > 0 {
			num++
			select {
			case full <- part{num, next[:m]}:
			case <-uctx.Done():
				break loop
			}
			select {
			case <-slots:
				next = make([]byte, partSize)
			case <-uctx.Done():
				break loop
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(full)
	wg.Wait()
	if rerr != nil {
		return fmt.Errorf("blob %s: %w", digest, rerr)
	}
	if upErr != nil {
		return fmt.Errorf("blob %s: uploading to s3://%s/%s: %w", digest, s.bucket, key, upErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := check(digest, length, read, h); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.PartTimeout)
	defer cancel()
	sortParts(completed)
	if _, err := s.core.CompleteMultipartUpload(cctx, s.bucket, key, id, completed, minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("blob %s: completing the upload to s3://%s/%s: %w", digest, s.bucket, key, err)
	}
	return nil
}

func sortParts(p []minio.CompletePart) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j].PartNumber < p[j-1].PartNumber; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

func (s *Store) Stat(ctx context.Context, digest string) (int64, error) {
	info, err := s.stat(ctx, digest)
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

func (s *Store) stat(ctx context.Context, digest string) (minio.ObjectInfo, error) {
	if err := blob.CheckDigest(digest); err != nil {
		return minio.ObjectInfo{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	info, err := s.core.StatObject(cctx, s.bucket, s.key(digest), minio.StatObjectOptions{})
	if err != nil {
		return info, s.wrap(digest, err)
	}
	if info.Size < 0 {
		return info, fmt.Errorf("blob %s: s3 reports a negative size", digest)
	}
	return info, nil
}

func (s *Store) wrap(digest string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%w: %s", blob.ErrNotFound, digest)
	}
	return fmt.Errorf("blob %s: s3://%s/%s: %w", digest, s.bucket, s.key(digest), err)
}

func isNotFound(err error) bool {
	e := minio.ToErrorResponse(err)
	return e.Code == minio.NoSuchKey || e.StatusCode == http.StatusNotFound
}

func (s *Store) Delete(ctx context.Context, digest string) error {
	if err := blob.CheckDigest(digest); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	if err := s.core.RemoveObject(cctx, s.bucket, s.key(digest), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return s.wrap(digest, err)
	}
	return nil
}

// Walk calls fn for every stored blob, in no particular order.
func (s *Store) Walk(ctx context.Context, fn func(blob.Info) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range s.core.Client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("listing s3://%s/%s: %w", s.bucket, s.prefix, o.Err)
		}
		d, ok := strings.CutPrefix(o.Key, s.prefix)
		if !ok || len(d) != 67 || d[2] != '/' || d[:2] != d[3:5] || blob.CheckDigest(d[3:]) != nil {
			continue
		}
		if err := fn(blob.Info{Digest: d[3:], Size: o.Size, ModTime: o.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

// ExpireIfOlder removes a blob unless it was stored at or after before
// (the zero time removes it whatever its age), and says whether it
// removed it. S3 has no conditional delete, so unlike the filesystem
// store a Put of the same blob between the check and the removal (from
// this or another replica) can be undone; the push that names a blob
// re-uploads it when it is missing, and the grace period (blob_grace)
// makes that window hours after the blob was last stored.
func (s *Store) ExpireIfOlder(digest string, before time.Time) (bool, error) {
	ctx := context.Background()
	info, err := s.stat(ctx, digest)
	if errors.Is(err, blob.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if !before.IsZero() && !info.LastModified.Before(before) {
		return false, nil
	}
	if err := s.Delete(ctx, digest); err != nil {
		return false, err
	}
	return true, nil
}

// CleanTemp aborts the multipart uploads under the prefix started more
// than olderThan ago (a Put aborts its own when it fails; a process that
// died leaves them), and returns how many it aborted. With several
// replicas, olderThan must exceed any upload's duration: 0 would abort
// the uploads other replicas are running.
func (s *Store) CleanTemp(olderThan time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cutoff := time.Now().Add(-olderThan)
	n := 0
	for u := range s.core.ListIncompleteUploads(ctx, s.bucket, s.prefix, true) {
		if u.Err != nil {
			return n, fmt.Errorf("listing uploads in s3://%s/%s: %w", s.bucket, s.prefix, u.Err)
		}
		if olderThan > 0 && u.Initiated.After(cutoff) {
			continue
		}
		actx, acancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		err := s.core.AbortMultipartUpload(actx, s.bucket, u.Key, u.UploadID)
		acancel()
		if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchUpload {
			return n, err
		}
		n++
	}
	return n, nil
}

// ctxReader stops a long copy when the request is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// retry calls f up to Attempts times while it fails with an error S3 or
// the network says is transient, backing off 200 ms, 400 ms, ... (at
// most 2 s) between tries.
func (s *Store) retry(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < s.cfg.Attempts; i++ {
		if i > 0 {
			t := time.NewTimer(min(200*time.Millisecond<<(i-1), 2*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return errors.Join(err, ctx.Err())
			case <-t.C:
			}
		}
		if err = f(); err == nil || !transient(ctx, err) {
			return err
		}
	}
	return err
}

// transient says whether a request that failed with err may succeed when
// tried again.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	e := minio.ToErrorResponse(err)
	switch e.Code {
	case "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "ExpiredToken":
		return true
	}
	if e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests {
		return true
	}
	var ne net.Error
	return e.StatusCode == 0 && (errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF))
}
