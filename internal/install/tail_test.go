package install

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// wholeFile answers every request with the whole of body, 200 OK, as a
// mirror or CDN that ignores Range does; with declare it sends a
// Content-Length, without it the body is chunked. cut, when positive,
// closes the connection after that many bytes on the first request.
func wholeFile(body []byte, declare bool, cut int) func(w http.ResponseWriter, r *http.Request, n int64) bool {
	return func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if declare {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(http.StatusOK)
		if cut > 0 && n == 1 {
			w.Write(body[:cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		w.Write(body)
		return true
	}
}

// A server that ignores Range: the parallel spans stop at their first
// answer, and one sequential read of the whole file installs the image,
// each chunk verified before it is written; chunks done by an earlier
// attempt and chunks the running image holds are passed over or reused.
func TestInstallRangeIgnored(t *testing.T) {
	img, ix := testImage(t, 60)
	for _, tc := range []struct {
		name    string
		declare bool
		done    func(i int) bool
		local   bool
	}{
		{name: "content-length", declare: true},
		{name: "chunked"},
		{name: "resumed", declare: true, done: func(i int) bool { return i < 30 || i%7 == 0 }},
		{name: "local-reuse", declare: true, local: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := newPayloadServer(t, img)
			ps.setHook(wholeFile(img, tc.declare, 0))
			slot := newSlot(t, len(img), 0)
			var local *Local
			if tc.local {
				// The running image holds every chunk but chunk 60.
				old := bytes.Clone(img)
				old[60*testChunk] ^= 1
				local = &Local{Index: index(t, old), Image: bytes.NewReader(old)}
			}
			if tc.done != nil {
				// An earlier attempt wrote the Done chunks.
				slot.WriteAt(img, 0)
				for i, c := range ix.Chunks {
					if !tc.done(i) {
						slot.WriteAt(make([]byte, c.Length), c.Offset)
					}
				}
			}
			var mu sync.Mutex
			written := map[int]int{}
			res, err := Install(context.Background(), ix, ps.source(), slot, local, Options{
				Workers: 4, SpanBytes: 8 * testChunk, Done: tc.done,
				Progress: func(i int) { mu.Lock(); written[i]++; mu.Unlock() },
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(slotBytes(t, slot), img) {
				t.Fatal("slot differs from the image")
			}
			for i, n := range written {
				if n != 1 || tc.done != nil && tc.done(i) {
					t.Errorf("chunk %d written %d times (done: %v)", i, n, tc.done != nil && tc.done(i))
				}
			}
			if got := res.Fetched + res.Reused + res.Skipped; got != len(ix.Chunks) {
				t.Errorf("result %+v does not add up to %d chunks", *res, len(ix.Chunks))
			}
			if tc.local && res.Reused == 0 {
				t.Errorf("no chunk reused: %+v", *res)
			}
			// At most one refused request per worker, then one pass.
			if n := ps.requests.Load(); n > 4+1 {
				t.Errorf("%d requests, want at most 5", n)
			}
		})
	}
}

// The sequential pass resumes after a cut, and every request is counted
// against the retry budget as a span's are.
func TestInstallRangeIgnoredCut(t *testing.T) {
	img, ix := testImage(t, 61)
	ps := newPayloadServer(t, img)
	var mu sync.Mutex
	calls := 0
	whole := wholeFile(img, true, 0)
	cut := wholeFile(img, true, 70*testChunk+5)
	ps.setHook(func(w http.ResponseWriter, r *http.Request, n int64) bool {
		mu.Lock()
		calls++
		k := calls
		mu.Unlock()
		if k == 2 { // the first request of the sequential pass
			return cut(w, r, 1)
		}
		return whole(w, r, n)
	})
	slot := newSlot(t, len(img), 0)
	if _, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slotBytes(t, slot), img) {
		t.Fatal("slot differs from the image")
	}
	if n := ps.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (refused span, cut pass, resumed pass)", n)
	}
}

// A whole file with a swapped chunk: the sequential pass refuses that
// chunk before writing it, as the parallel fetch does.
func TestInstallRangeIgnoredSwappedChunk(t *testing.T) {
	img, ix := testImage(t, 62)
	const bad = 77
	c := ix.Chunks[bad]
	swapped := bytes.Clone(img)
	swapped[c.Offset+3] ^= 0xff
	ps := newPayloadServer(t, img)
	ps.setHook(wholeFile(swapped, true, 0))
	slot := newSlot(t, len(img), 0xa5)
	_, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{Workers: 2})
	var cm *ChunkMismatchError
	if !errors.As(err, &cm) || cm.Chunk != bad {
		t.Fatalf("err = %v, want a mismatch of chunk %d", err, bad)
	}
	if got := slotBytes(t, slot)[c.Offset : c.Offset+c.Length]; !bytes.Equal(got, bytes.Repeat([]byte{0xa5}, int(c.Length))) {
		t.Error("bytes of the swapped chunk reached the slot")
	}
}

// A whole file longer than the signed image is endless data, declared or
// not: refused, not retried, and the last chunk is never written.
func TestInstallRangeIgnoredLongerFile(t *testing.T) {
	img, ix := testImage(t, 63)
	last := ix.Chunks[len(ix.Chunks)-1]
	for _, declare := range []bool{true, false} {
		t.Run("content-length="+strconv.FormatBool(declare), func(t *testing.T) {
			ps := newPayloadServer(t, img)
			ps.setHook(wholeFile(append(bytes.Clone(img), "more"...), declare, 0))
			slot := newSlot(t, len(img), 0xa5)
			_, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{Workers: 2})
			if !errors.Is(err, ErrEndlessData) || !errors.Is(err, ErrFetch) {
				t.Fatalf("err = %v, want ErrEndlessData", err)
			}
			if got := slotBytes(t, slot)[last.Offset:]; !bytes.Equal(got, bytes.Repeat([]byte{0xa5}, int(last.Length))) {
				t.Error("the last chunk was written from an over-long file")
			}
			if n := ps.requests.Load(); n > 3 {
				t.Errorf("%d requests: endless data was retried", n)
			}
		})
	}
}

// Direct ReadTail: a 206 answer is taken as it is; a 200 answer is read
// from the file's start; a shorter whole file is a short body.
func TestHTTPSourceReadTail(t *testing.T) {
	img, ix := testImage(t, 64)
	const first = 90
	ps := newPayloadServer(t, img)
	read := func(src *HTTPSource) ([]int, error) {
		var got []int
		err := src.ReadTail(context.Background(), first, ix.Chunks[first:], make([]byte, testChunk), func(i int, d []byte) error {
			if ix.VerifyChunk(i, d) != nil {
				t.Errorf("chunk %d does not verify", i)
			}
			got = append(got, i)
			return nil
		})
		return got, err
	}
	if got, err := read(ps.source()); err != nil || len(got) != len(ix.Chunks)-first {
		t.Fatalf("206: delivered %v, %v", got, err)
	}
	ps.setHook(wholeFile(img, false, 0))
	if got, err := read(ps.source()); err != nil || len(got) != len(ix.Chunks)-first {
		t.Fatalf("200: delivered %v, %v", got, err)
	}
	ps.setHook(wholeFile(img[:len(img)-10], true, 0))
	src := ps.source()
	src.Backoff = func(int) time.Duration { return 0 }
	if _, err := read(src); !errors.Is(err, errShortBody) {
		t.Fatalf("short whole file: err = %v, want a short body", err)
	}
}
