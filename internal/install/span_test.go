package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/chunkindex"
)

// readSpan runs src.ReadSpan for chunks [first, first+n) of ix and
// returns copies of what it delivered, in order.
func readSpan(src *HTTPSource, ix *chunkindex.Index, first, n int) (got []int, data [][]byte, err error) {
	err = src.ReadSpan(context.Background(), first, ix.Chunks[first:first+n], make([]byte, ix.ChunkSize), func(i int, d []byte) error {
		got = append(got, i)
		data = append(data, bytes.Clone(d))
		return nil
	})
	return got, data, err
}

func TestHTTPSourceSpan(t *testing.T) {
	img, ix := testImage(t, 40)
	ps := newPayloadServer(t, img)
	got, data, err := readSpan(ps.source(), ix, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Fatalf("delivered %d chunks, want 20", len(got))
	}
	for k, i := range got {
		if i != 10+k || ix.VerifyChunk(i, data[k]) != nil {
			t.Errorf("delivery %d: chunk %d, verifies: %v", k, i, ix.VerifyChunk(i, data[k]))
		}
	}
	if n := ps.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	// The last, partial chunk of the image in a span.
	last := len(ix.Chunks) - 1
	if got, data, err := readSpan(ps.source(), ix, last-2, 3); err != nil || len(got) != 3 || ix.VerifyChunk(last, data[2]) != nil {
		t.Fatalf("span ending at the last chunk: %v, %v", got, err)
	}
}

// A connection cut in the middle of a chunk of a span: the next request
// starts at that chunk, and no chunk is delivered twice.
func TestHTTPSourceSpanResumesAtTheCutChunk(t *testing.T) {
	img, ix := testImage(t, 41)
	const first, n, cut = 30, 10, 34 // cut halfway through chunk 34
	c := ix.Chunks[cut]
	ps := newPayloadServer(t, img)
	var mu sync.Mutex
	var ranges []string
	ps.setHook(func(w http.ResponseWriter, r *http.Request, k int64) bool {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		if k != 1 {
			return false
		}
		a, b, _ := rangeOf(r)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(img)))
		w.Header().Set("Content-Length", strconv.FormatInt(b-a+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[a : c.Offset+c.Length/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	got, data, err := readSpan(ps.source(), ix, first, n)
	if err != nil {
		t.Fatal(err)
	}
	for k, i := range got {
		if i != first+k || ix.VerifyChunk(i, data[k]) != nil {
			t.Fatalf("delivered %v", got)
		}
	}
	if len(got) != n {
		t.Fatalf("delivered %d chunks, want %d", len(got), n)
	}
	end := ix.Chunks[first+n-1].Offset + ix.Chunks[first+n-1].Length - 1
	want := []string{
		fmt.Sprintf("bytes=%d-%d", ix.Chunks[first].Offset, end),
		fmt.Sprintf("bytes=%d-%d", c.Offset, end),
	}
	if fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("requests %q, want %q", ranges, want)
	}
}

// Each cut after some progress restarts the chunk's retry budget; cuts
// without progress exhaust it, and the error names the chunk it stopped at.
func TestHTTPSourceSpanRetryBudgetPerChunk(t *testing.T) {
	img, ix := testImage(t, 42)
	const first, n, stuck = 0, 8, 5
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		a, b, _ := rangeOf(r)
		// Deliver one more chunk per request, never chunk stuck.
		stop := min(a+ix.ChunkSize+ix.ChunkSize/2, ix.Chunks[stuck].Offset+1)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(img)))
		w.Header().Set("Content-Length", strconv.FormatInt(b-a+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[a:stop])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	src := ps.source() // MaxRetries 3
	got, _, err := readSpan(src, ix, first, n)
	if fmt.Sprint(got) != fmt.Sprint([]int{0, 1, 2, 3, 4}) {
		t.Errorf("delivered %v, want chunks 0-4", got)
	}
	var fe *FetchError
	if !errors.As(err, &fe) || fe.Chunk != stuck || fe.Attempts != 4 {
		t.Fatalf("err = %v, want a FetchError for chunk %d after 4 attempts", err, stuck)
	}
	// 5 requests that each delivered a chunk (the fifth one was also the
	// first attempt at chunk stuck), then 3 retries of chunk stuck.
	if r := ps.requests.Load(); r != 8 {
		t.Errorf("%d requests, want 8", r)
	}
}

// A body longer than the span: the chunks before the last are delivered,
// the last is not, and the client reads a bounded amount.
func TestHTTPSourceSpanEndless(t *testing.T) {
	img, ix := testImage(t, 43)
	const first, n = 3, 4
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		a, b, _ := rangeOf(r)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(img)))
		w.WriteHeader(http.StatusPartialContent)
		writeThenJunk(w, img[a:b+1])
		return true
	})
	src := ps.source()
	ct := &countingTransport{base: src.Client.Transport}
	src.Client = &http.Client{Transport: ct}
	got, _, err := readSpan(src, ix, first, n)
	if fmt.Sprint(got) != fmt.Sprint([]int{3, 4, 5}) {
		t.Errorf("delivered %v, want chunks 3-5", got)
	}
	wantFetchError(t, err, 206, 1)
	var fe *FetchError
	if !errors.Is(err, ErrEndlessData) || !errors.As(err, &fe) || fe.Chunk != first+n-1 {
		t.Errorf("err = %v, want ErrEndlessData for chunk %d", err, first+n-1)
	}
	// The span plus a byte, and no second request.
	if got, limit := ct.read.Load(), int64(n)*ix.ChunkSize+1; got > limit {
		t.Errorf("client read %d body bytes, want <= %d", got, limit)
	}
}

// The caller's error stops the span at once, comes back as it is, and is
// never retried.
func TestHTTPSourceSpanYieldError(t *testing.T) {
	img, ix := testImage(t, 44)
	ps := newPayloadServer(t, img)
	stop := errors.New("slot full")
	var got []int
	err := ps.source().ReadSpan(context.Background(), 0, ix.Chunks[:10], make([]byte, ix.ChunkSize), func(i int, _ []byte) error {
		got = append(got, i)
		if i == 4 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Fatalf("err = %v, want the caller's error itself", err)
	}
	if len(got) != 5 || ps.requests.Load() != 1 {
		t.Errorf("delivered %v in %d requests", got, ps.requests.Load())
	}
}

func TestHTTPSourceSpanInvalid(t *testing.T) {
	img, ix := testImage(t, 45)
	ps := newPayloadServer(t, img)
	src := ps.source()
	yield := func(int, []byte) error { t.Error("yield called"); return nil }
	for name, tc := range map[string]struct {
		cs  []chunkindex.Chunk
		buf int
	}{
		"empty":            {nil, testChunk},
		"gap":              {[]chunkindex.Chunk{ix.Chunks[1], ix.Chunks[3]}, testChunk},
		"out of order":     {[]chunkindex.Chunk{ix.Chunks[2], ix.Chunks[1]}, testChunk},
		"buffer too small": {ix.Chunks[1:3], testChunk - 1},
		"negative offset":  {[]chunkindex.Chunk{{Offset: -1, Length: 1}}, testChunk},
	} {
		err := src.ReadSpan(context.Background(), 1, tc.cs, make([]byte, tc.buf), yield)
		var fe *FetchError
		if !errors.As(err, &fe) {
			t.Errorf("%s: err = %v, want a FetchError", name, err)
		}
	}
	if n := ps.requests.Load(); n != 0 {
		t.Errorf("%d requests for invalid spans", n)
	}
}

func TestSpanChunks(t *testing.T) {
	for _, tc := range []struct {
		spanBytes, chunk int64
		fetch, workers   int
		want             int
	}{
		{0, 1 << 20, 512, 2, 16},             // 16 MiB of 1 MiB chunks
		{0, 1 << 20, 64, 2, 8},               // a quarter of each worker's share
		{0, 1 << 20, 1, 4, 1},                // never less than one
		{0, 1 << 20, 0, 4, 1},                // nothing to fetch
		{100, 4096, 1000, 1, 1},              // SpanBytes below a chunk
		{1 << 30, 4096, 1 << 30, 1, 1 << 18}, // 1 GiB of 4 KiB chunks
		{0, 4096, 101, 4, 7},
	} {
		if got := spanChunks(tc.spanBytes, tc.chunk, tc.fetch, tc.workers); got != tc.want {
			t.Errorf("spanChunks(%d, %d, %d, %d) = %d, want %d", tc.spanBytes, tc.chunk, tc.fetch, tc.workers, got, tc.want)
		}
	}
}

// spanSource is a SpanSource that misbehaves on demand.
type spanSource struct {
	img  []byte
	skip int // chunk not delivered (-1: none)
	stop int // deliver only up to this chunk, then return nil (-1: all)
}

func (s spanSource) ReadChunk(_ context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	return append(buf[:0], s.img[c.Offset:c.Offset+c.Length]...), nil
}

func (s spanSource) ReadSpan(_ context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(int, []byte) error) error {
	for k, c := range cs {
		i := first + k
		if i == s.stop {
			return nil
		}
		if i == s.skip {
			continue
		}
		if err := yield(i, append(buf[:0], s.img[c.Offset:c.Offset+c.Length]...)); err != nil {
			return err
		}
	}
	return nil
}

// Install does not trust a SpanSource to deliver every chunk of a span in
// order.
func TestInstallSpanSourceMisbehaves(t *testing.T) {
	img, ix := testImage(t, 46)
	for name, src := range map[string]spanSource{
		"skips a chunk": {img, 37, -1},
		"ends early":    {img, -1, 37},
	} {
		slot := newSlot(t, len(img), 0xa5)
		_, err := Install(context.Background(), ix, src, slot, nil, Options{Workers: 1, SpanBytes: 64 * testChunk})
		var fe *FetchError
		if !errors.As(err, &fe) || fe.Chunk != 37 {
			t.Errorf("%s: err = %v, want a FetchError for chunk 37", name, err)
		}
	}
	res, err := Install(context.Background(), ix, spanSource{img, -1, -1}, newSlot(t, 0, 0), nil, Options{Workers: 2})
	if err != nil || res.Fetched != len(ix.Chunks) {
		t.Fatalf("well-behaved span source: %+v, %v", res, err)
	}
}

// A swapped chunk in the middle of a span: the chunks before it are
// written, it is not, and the refusal names it.
func TestInstallSpanSwappedChunkMidSpan(t *testing.T) {
	img, ix := testImage(t, 47)
	const bad = 12
	c := ix.Chunks[bad]
	swapped := bytes.Clone(img)
	swapped[c.Offset+c.Length/2] ^= 0xff
	slot := newSlot(t, len(img), 0xa5)
	var mu sync.Mutex
	written := map[int]bool{}
	_, err := Install(context.Background(), ix, spanSource{swapped, -1, -1}, slot, nil, Options{
		Workers: 1, SpanBytes: 100 * testChunk,
		Progress: func(i int) { mu.Lock(); written[i] = true; mu.Unlock() },
	})
	var cm *ChunkMismatchError
	if !errors.As(err, &cm) || cm.Chunk != bad {
		t.Fatalf("err = %v, want a mismatch of chunk %d", err, bad)
	}
	got := slotBytes(t, slot)
	for i := range bad {
		ci := ix.Chunks[i]
		if !written[i] || !bytes.Equal(got[ci.Offset:ci.Offset+ci.Length], img[ci.Offset:ci.Offset+ci.Length]) {
			t.Errorf("chunk %d before the bad one not written", i)
		}
	}
	if !bytes.Equal(got[c.Offset:c.Offset+c.Length], bytes.Repeat([]byte{0xa5}, int(c.Length))) || written[bad] {
		t.Error("bytes of the swapped chunk reached the slot")
	}
}

// A link too slow for a whole span within the client's timeout: each
// request is cut by the timeout after some chunks, and the next resumes
// where it stopped, so the span completes even with one retry allowed.
func TestHTTPSourceSpanSlowerThanTheTimeout(t *testing.T) {
	img, ix := testImage(t, 48)
	ps := newPayloadServer(t, img)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		a, b, _ := rangeOf(r)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(img)))
		w.Header().Set("Content-Length", strconv.FormatInt(b-a+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		for off := a; off <= b; off += testChunk {
			if _, err := w.Write(img[off:min(off+testChunk, b+1)]); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			time.Sleep(150 * time.Millisecond)
		}
		return true
	})
	src := ps.source()
	src.MaxRetries = 1
	src.Client = &http.Client{Transport: src.Client.Transport, Timeout: 400 * time.Millisecond}
	got, data, err := readSpan(src, ix, 0, 6)
	if err != nil {
		t.Fatalf("err = %v after chunks %v", err, got)
	}
	for k := range got {
		if got[k] != k || ix.VerifyChunk(k, data[k]) != nil {
			t.Fatalf("delivered %v", got)
		}
	}
	if n := ps.requests.Load(); n < 2 {
		t.Errorf("%d requests: the timeout never cut one", n)
	}
}
