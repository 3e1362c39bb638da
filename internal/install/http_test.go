package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/chunkindex"
)

func contentRange(c chunkindex.Chunk, total int) string {
	return "bytes " + strconv.FormatInt(c.Offset, 10) + "-" + strconv.FormatInt(c.Offset+c.Length-1, 10) + "/" + strconv.Itoa(total)
}

// countingTransport counts the response body bytes the client reads.
type countingTransport struct {
	base http.RoundTripper
	read atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{resp.Body, &t.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// writeThenJunk writes body, then garbage until the client goes away (at
// most 1 GiB of it).
func writeThenJunk(w http.ResponseWriter, body []byte) {
	if _, err := w.Write(body); err != nil {
		return
	}
	junk := bytes.Repeat([]byte{'x'}, 32<<10)
	for range 1 << 15 {
		if _, err := w.Write(junk); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

// fetchOne runs src.ReadChunk for chunk i of ix.
func fetchOne(src *HTTPSource, ix *chunkindex.Index, i int) ([]byte, error) {
	return src.ReadChunk(context.Background(), i, ix.Chunks[i], make([]byte, ix.Chunks[i].Length))
}

func wantFetchError(t *testing.T, err error, status, attempts int) {
	t.Helper()
	var fe *FetchError
	if !errors.Is(err, ErrFetch) || !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a FetchError", err)
	}
	if fe.Status != status || fe.Attempts != attempts {
		t.Errorf("status %d after %d attempts, want %d after %d (%v)", fe.Status, fe.Attempts, status, attempts, err)
	}
}

func TestHTTPSourceOK(t *testing.T) {
	img, ix := testImage(t, 20)
	ps := newPayloadServer(t, img)
	for _, i := range []int{0, 50, len(ix.Chunks) - 1} {
		got, err := fetchOne(ps.source(), ix, i)
		if err != nil {
			t.Fatal(err)
		}
		if ix.VerifyChunk(i, got) != nil {
			t.Errorf("chunk %d wrong", i)
		}
	}
}

func TestHTTPSourceTruncated(t *testing.T) {
	img, ix := testImage(t, 21)
	c := ix.Chunks[10]
	for _, declare := range []bool{true, false} {
		t.Run("content-length="+strconv.FormatBool(declare), func(t *testing.T) {
			ps := newPayloadServer(t, img)
			ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
				w.Header().Set("Content-Range", contentRange(c, len(img)))
				if declare {
					w.Header().Set("Content-Length", strconv.FormatInt(c.Length-10, 10))
				}
				w.WriteHeader(http.StatusPartialContent)
				w.Write(img[c.Offset : c.Offset+c.Length-10])
				return true
			})
			_, err := fetchOne(ps.source(), ix, 10)
			wantFetchError(t, err, 206, 2) // a wrong length is retried once
			if got := ps.requests.Load(); got != 2 {
				t.Errorf("%d requests, want 2", got)
			}
		})
	}
}

// A body that declares more bytes than the range asked for is endless
// data: refused at once, never retried, its bytes never delivered.
func TestHTTPSourceLong(t *testing.T) {
	img, ix := testImage(t, 22)
	c := ix.Chunks[3]
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		w.Header().Set("Content-Range", contentRange(c, len(img)))
		w.Header().Set("Content-Length", strconv.FormatInt(c.Length+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[c.Offset : c.Offset+c.Length+1])
		return true
	})
	_, err := fetchOne(ps.source(), ix, 3)
	wantFetchError(t, err, 206, 1)
	if !errors.Is(err, ErrEndlessData) {
		t.Errorf("err = %v, want ErrEndlessData", err)
	}
}

func TestHTTPSourceEndless(t *testing.T) {
	img, ix := testImage(t, 23)
	c := ix.Chunks[4]
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		w.Header().Set("Content-Range", contentRange(c, len(img)))
		w.WriteHeader(http.StatusPartialContent)
		writeThenJunk(w, img[c.Offset:c.Offset+c.Length])
		return true
	})
	src := ps.source()
	ct := &countingTransport{base: src.Client.Transport}
	src.Client = &http.Client{Transport: ct}
	_, err := fetchOne(src, ix, 4)
	wantFetchError(t, err, 206, 1)
	if !errors.Is(err, ErrEndlessData) {
		t.Errorf("err = %v, want ErrEndlessData", err)
	}
	if got, limit := ct.read.Load(), c.Length+1; got > limit {
		t.Errorf("client read %d body bytes, want <= %d", got, limit)
	}
}

func TestHTTPSource404NotRetried(t *testing.T) {
	img, ix := testImage(t, 24)
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		http.NotFound(w, r)
		return true
	})
	_, err := fetchOne(ps.source(), ix, 1)
	wantFetchError(t, err, 404, 1)
	if got := ps.requests.Load(); got != 1 {
		t.Errorf("%d requests, want 1", got)
	}
}

func TestHTTPSource503ThenOK(t *testing.T) {
	img, ix := testImage(t, 25)
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	var attempts []int
	src := ps.source()
	src.Backoff = func(a int) time.Duration { attempts = append(attempts, a); return time.Millisecond }
	got, err := fetchOne(src, ix, 2)
	if err != nil {
		t.Fatal(err)
	}
	if ix.VerifyChunk(2, got) != nil {
		t.Error("wrong bytes")
	}
	if n := ps.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if len(attempts) != 2 || attempts[0] != 0 || attempts[1] != 1 {
		t.Errorf("backoff called with %v, want [0 1]", attempts)
	}
}

func TestHTTPSource503Persistent(t *testing.T) {
	img, ix := testImage(t, 26)
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return true
	})
	src := ps.source() // MaxRetries 3
	_, err := fetchOne(src, ix, 2)
	wantFetchError(t, err, 503, 4)
	if n := ps.requests.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}

	ps.requests.Store(0)
	src.MaxRetries = -1
	_, err = fetchOne(src, ix, 2)
	wantFetchError(t, err, 503, 1)

	ps.requests.Store(0)
	src.MaxRetries = 0 // default
	_, err = fetchOne(src, ix, 2)
	wantFetchError(t, err, 503, DefaultMaxRetries+1)
}

func TestHTTPSourceDroppedConnection(t *testing.T) {
	img, ix := testImage(t, 27)
	c := ix.Chunks[5]
	drop := func(w http.ResponseWriter) {
		w.Header().Set("Content-Range", contentRange(c, len(img)))
		w.Header().Set("Content-Length", strconv.FormatInt(c.Length, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[c.Offset : c.Offset+c.Length/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n == 1 {
			drop(w)
		}
		return false
	})
	got, err := fetchOne(ps.source(), ix, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ix.VerifyChunk(5, got) != nil {
		t.Error("wrong bytes")
	}
	if n := ps.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}

	// Dropping every time: transport errors are retried MaxRetries times.
	ps.requests.Store(0)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool { drop(w); return true })
	_, err = fetchOne(ps.source(), ix, 5)
	wantFetchError(t, err, 206, 4)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want io.ErrUnexpectedEOF inside", err)
	}
}

func TestHTTPSourceWrongContentRange(t *testing.T) {
	img, ix := testImage(t, 28)
	c := ix.Chunks[6]
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		// Right length, shifted by one byte.
		w.Header().Set("Content-Range", "bytes "+strconv.FormatInt(c.Offset+1, 10)+"-"+strconv.FormatInt(c.Offset+c.Length, 10)+"/"+strconv.Itoa(len(img)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[c.Offset+1 : c.Offset+c.Length+1])
		return true
	})
	_, err := fetchOne(ps.source(), ix, 6)
	wantFetchError(t, err, 206, 1)
}

func TestHTTPSourceIgnoredRange(t *testing.T) {
	img, ix := testImage(t, 29)
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		w.Write(img) // 200, whole file
		return true
	})
	for _, i := range []int{0, 9} {
		ps.requests.Store(0)
		_, err := fetchOne(ps.source(), ix, i)
		wantFetchError(t, err, 200, 1)
	}

	// A one-chunk image: a 200 with exactly the chunk is accepted.
	small := img[:1000]
	six := index(t, small)
	ps2 := newPayloadServer(t, small)
	ps2.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		w.Write(small)
		return true
	})
	slot := newSlot(t, 0, 0)
	if _, err := Install(context.Background(), six, ps2.source(), slot, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slotBytes(t, slot), small) {
		t.Error("slot differs")
	}
}

// Through Install: a truncated chunk fails the install and leaves that
// chunk's slot range untouched.
func TestInstallTruncatedChunk(t *testing.T) {
	img, ix := testImage(t, 30)
	const bad = 20
	c := ix.Chunks[bad]
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		a, b, _ := rangeOf(r)
		if !covers(r, c) {
			return false
		}
		// The range asked for, cut one byte short of chunk bad's end
		// (no Content-Length: a clean, short end of the body).
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(img)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[a : c.Offset+c.Length-1])
		return true
	})
	slot := newSlot(t, len(img), 0xa5)
	_, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{Workers: 4})
	var fe *FetchError
	if !errors.As(err, &fe) || fe.Chunk != bad || !errors.Is(err, errShortBody) {
		t.Fatalf("err = %v, want short-body FetchError for chunk %d", err, bad)
	}
	if got := slotBytes(t, slot)[c.Offset : c.Offset+c.Length]; !bytes.Equal(got, bytes.Repeat([]byte{0xa5}, int(c.Length))) {
		t.Error("bytes of the failed chunk reached the slot")
	}
}

func TestHTTPSourceCancelDuringBackoff(t *testing.T) {
	img, ix := testImage(t, 31)
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		http.Error(w, "busy", http.StatusBadGateway)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	src := ps.source()
	src.Backoff = func(int) time.Duration { return time.Hour }
	start := time.Now()
	_, err := src.ReadChunk(ctx, 0, ix.Chunks[0], make([]byte, ix.Chunks[0].Length))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrFetch) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("backoff ignored the context")
	}
}

func TestHTTPSourceInvalidChunk(t *testing.T) {
	src := &HTTPSource{URL: "http://127.0.0.1:1/"}
	for _, c := range []chunkindex.Chunk{{Offset: -1, Length: 1}, {Offset: 0, Length: 0}, {Offset: 0, Length: chunkindex.MaxChunkSize + 1}} {
		if _, err := src.ReadChunk(context.Background(), 0, c, make([]byte, max(c.Length, 0))); !errors.Is(err, ErrFetch) {
			t.Errorf("%+v: err = %v", c, err)
		}
	}
	// A buffer that is not exactly the chunk is refused before any request.
	if _, err := src.ReadChunk(context.Background(), 0, chunkindex.Chunk{Length: 8}, make([]byte, 4)); !errors.Is(err, ErrFetch) {
		t.Errorf("short buffer: err = %v", err)
	}
}

func TestCheckContentRange(t *testing.T) {
	for _, tc := range []struct {
		cr string
		ok bool
	}{
		{"bytes 10-19/100", true},
		{"bytes 10-19/*", true},
		{"bytes 10-19/20", true},
		{"bytes 10-19/19", false},
		{"bytes 10-19/+100", false},
		{"bytes 10-20/100", false},
		{"bytes 010-19/100", false},
		{"bytes 10-19", false},
		{"bits 10-19/100", false},
		{"", false},
	} {
		if err := checkContentRange(tc.cr, 10, 19); (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok=%v", tc.cr, err, tc.ok)
		}
	}
}

func TestDefaultBackoff(t *testing.T) {
	for a := -1; a < 70; a++ {
		d := DefaultBackoff(a)
		if d <= 0 || d > 30*time.Second {
			t.Errorf("DefaultBackoff(%d) = %v", a, d)
		}
	}
	if d := DefaultBackoff(0); d < 125*time.Millisecond || d > 250*time.Millisecond {
		t.Errorf("DefaultBackoff(0) = %v", d)
	}
	if d := DefaultBackoff(3); d < time.Second || d > 2*time.Second {
		t.Errorf("DefaultBackoff(3) = %v", d)
	}
}
