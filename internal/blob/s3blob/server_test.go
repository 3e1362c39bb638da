package s3blob_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/rampartfw/rampart/internal/blob/s3blob/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

func versitygw(t testing.TB) string { return s3test.Endpoint(t) }

const (
	accessKey = s3test.AccessKey
	secretKey = s3test.SecretKey
)

func adminClient(t testing.TB, _ string) *minio.Client { return s3test.Client(t) }

func newBucket(t testing.TB) string { return s3test.NewBucket(t) }

func incompleteUploads(t testing.TB, bucket string) []string {
	return s3test.IncompleteUploads(t, bucket)
}

// faultProxy stands in front of versitygw and passes requests on
// unchanged (the Host header too, which the request's signature covers)
// unless fault, given the request, answers it itself or delays it.
type faultProxy struct {
	url   string
	mu    sync.Mutex
	fault func(w http.ResponseWriter, r *http.Request) bool // true: answered
	seen  []string                                          // "METHOD query-kind" of every request
}

func newFaultProxy(t testing.TB) *faultProxy {
	target, _ := url.Parse(versitygw(t))
	p := &faultProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, kind(r))
		f := p.fault
		p.mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.url = "http://" + ln.Addr().String()
	return p
}

func (p *faultProxy) set(f func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.fault = f
	p.seen = nil
	p.mu.Unlock()
}

func (p *faultProxy) count(k string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.seen {
		if s == k {
			n++
		}
	}
	return n
}

// kind names an S3 request by what it does.
func kind(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPut && q.Has("partNumber"):
		return "UploadPart"
	case r.Method == http.MethodPost && q.Has("uploads"):
		return "CreateMultipartUpload"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return "CompleteMultipartUpload"
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return "AbortMultipartUpload"
	case r.Method == http.MethodPut:
		return "PutObject"
	case r.Method == http.MethodHead:
		return "HeadObject"
	case r.Method == http.MethodGet:
		return "GetObject"
	}
	return r.Method
}

// s3Error answers like S3 does when it fails.
func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message><RequestId>1</RequestId></Error>`, code)
}
