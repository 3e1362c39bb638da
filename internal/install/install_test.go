package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/chunkindex"
)

const testChunk = 4096

// testImage is a random image of 100 full chunks and a partial last one.
func testImage(t *testing.T, seed uint64) ([]byte, *chunkindex.Index) {
	t.Helper()
	img := make([]byte, 100*testChunk+123)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	return img, index(t, img)
}

func index(t *testing.T, img []byte) *chunkindex.Index {
	t.Helper()
	ix, err := chunkindex.Build(bytes.NewReader(img), testChunk)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// payloadServer serves img with http.ServeContent (real Range support).
// hook, if not nil, may handle a request itself and return true. Requests
// are counted, and so are the bytes they ask for.
type payloadServer struct {
	*httptest.Server
	requests atomic.Int64
	asked    atomic.Int64 // bytes requested with Range headers
	mu       sync.Mutex
	hook     func(w http.ResponseWriter, r *http.Request, n int64) bool
}

func newPayloadServer(t *testing.T, img []byte) *payloadServer {
	t.Helper()
	ps := &payloadServer{}
	ps.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := ps.requests.Add(1)
		if a, b, ok := rangeOf(r); ok {
			ps.asked.Add(b - a + 1)
		}
		ps.mu.Lock()
		hook := ps.hook
		ps.mu.Unlock()
		if hook != nil && hook(w, r, n) {
			return
		}
		http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(img))
	}))
	t.Cleanup(ps.Close)
	return ps
}

func (ps *payloadServer) setHook(h func(w http.ResponseWriter, r *http.Request, n int64) bool) {
	ps.mu.Lock()
	ps.hook = h
	ps.mu.Unlock()
}

func (ps *payloadServer) source() *HTTPSource {
	return &HTTPSource{
		Client:     ps.Client(),
		URL:        ps.URL + "/image",
		MaxRetries: 3,
		Backoff:    func(int) time.Duration { return time.Millisecond },
	}
}

// rangeOf parses a "bytes=a-b" Range header.
func rangeOf(r *http.Request) (a, b int64, ok bool) {
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b); err != nil {
		return 0, 0, false
	}
	return a, b, true
}

// covers reports whether the request's Range includes the start of c.
func covers(r *http.Request, c chunkindex.Chunk) bool {
	a, b, ok := rangeOf(r)
	return ok && a <= c.Offset && c.Offset <= b
}

// newSlot creates a temp file slot pre-filled with size bytes of pattern.
func newSlot(t *testing.T, size int, pattern byte) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "slot"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if size > 0 {
		if _, err := f.Write(bytes.Repeat([]byte{pattern}, size)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func slotBytes(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInstallFull(t *testing.T) {
	img, ix := testImage(t, 1)
	ps := newPayloadServer(t, img)
	slot := newSlot(t, 0, 0)
	var mu sync.Mutex
	seen := map[int]int{}
	res, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{
		Workers:  4,
		Progress: func(i int) { mu.Lock(); seen[i]++; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := slotBytes(t, slot); !bytes.Equal(got, img) {
		t.Fatal("slot differs from image")
	}
	n := len(ix.Chunks)
	want := Result{Chunks: n, Fetched: n, BytesDownloaded: int64(len(img))}
	if *res != want {
		t.Errorf("result %+v, want %+v", *res, want)
	}
	if len(seen) != n {
		t.Errorf("progress for %d chunks, want %d", len(seen), n)
	}
	for i, k := range seen {
		if k != 1 {
			t.Errorf("progress for chunk %d called %d times", i, k)
		}
	}
	// Runs of chunks, each with one request: 101 chunks over 4 workers
	// give runs of 7 (a quarter of each worker's share).
	if got, want := ps.requests.Load(), int64((n+6)/7); got != want {
		t.Errorf("%d requests, want %d", got, want)
	}
	if got := ps.asked.Load(); got != int64(len(img)) {
		t.Errorf("%d bytes requested, want %d", got, len(img))
	}
}

func TestInstallReuse(t *testing.T) {
	img, ix := testImage(t, 2)
	old := bytes.Clone(img)
	changed := 0
	for i := 0; i < len(ix.Chunks); i += 20 { // 5% of the chunks
		old[ix.Chunks[i].Offset+7] ^= 0xff
		changed++
	}
	ps := newPayloadServer(t, img)
	slot := newSlot(t, len(img), 0x5a)
	local := &Local{Index: index(t, old), Image: bytes.NewReader(old)}
	res, err := Install(context.Background(), ix, ps.source(), slot, local, Options{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slotBytes(t, slot), img) {
		t.Fatal("slot differs from image")
	}
	if res.Fetched != changed || res.Reused != len(ix.Chunks)-changed || res.LocalCorrupt != 0 {
		t.Errorf("result %+v, want %d fetched", *res, changed)
	}
	if res.BytesDownloaded > int64(len(img))/10 {
		t.Errorf("downloaded %d of %d bytes, want <= 10%%", res.BytesDownloaded, len(img))
	}
	if res.BytesDownloaded+res.BytesReused != int64(len(img)) {
		t.Errorf("downloaded %d + reused %d != %d", res.BytesDownloaded, res.BytesReused, len(img))
	}
	if got := ps.requests.Load(); got != int64(changed) {
		t.Errorf("%d requests, want %d", got, changed)
	}
}

func TestInstallHostileSwappedChunk(t *testing.T) {
	img, ix := testImage(t, 3)
	const bad = 17
	c := ix.Chunks[bad]
	ps := newPayloadServer(t, img)
	// Chunk bad+1's bytes served in chunk bad's place, whatever range
	// is asked for.
	swapped := bytes.Clone(img)
	copy(swapped[c.Offset:c.Offset+c.Length], img[c.Offset+c.Length:])
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(swapped))
		return true
	})
	slot := newSlot(t, len(img), 0xa5)
	res, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{Workers: 4})
	if !errors.Is(err, ErrChunkMismatch) {
		t.Fatalf("err = %v, want ErrChunkMismatch", err)
	}
	var cm *ChunkMismatchError
	if !errors.As(err, &cm) || cm.Chunk != bad || cm.Offset != c.Offset {
		t.Fatalf("err = %#v, want chunk %d", err, bad)
	}
	var ccm chunkindex.ChunkMismatchError
	if !errors.As(err, &ccm) || ccm.Chunk != bad {
		t.Errorf("does not unwrap to chunkindex.ChunkMismatchError: %v", err)
	}
	got := slotBytes(t, slot)[c.Offset : c.Offset+c.Length]
	if !bytes.Equal(got, bytes.Repeat([]byte{0xa5}, int(c.Length))) {
		t.Error("bytes of the mismatching chunk reached the slot")
	}
	if res == nil || res.Fetched >= len(ix.Chunks) {
		t.Errorf("result %+v", res)
	}
}

func TestInstallCorruptLocalFallsBack(t *testing.T) {
	img, ix := testImage(t, 4)
	// The running image was indexed when healthy, then chunk 9 rotted.
	rotted := bytes.Clone(img)
	rotted[ix.Chunks[9].Offset+100] ^= 1
	local := &Local{Index: ix, Image: bytes.NewReader(rotted)}
	ps := newPayloadServer(t, img)
	slot := newSlot(t, 0, 0)
	res, err := Install(context.Background(), ix, ps.source(), slot, local, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slotBytes(t, slot), img) {
		t.Fatal("slot differs from image")
	}
	if res.Fetched != 1 || res.LocalCorrupt != 1 || res.Reused != len(ix.Chunks)-1 {
		t.Errorf("result %+v", *res)
	}
	if got := ps.requests.Load(); got != 1 {
		t.Errorf("%d requests, want 1", got)
	}
}

// A local image shorter than its index says: unreadable chunks are fetched.
func TestInstallLocalShortImage(t *testing.T) {
	img, ix := testImage(t, 5)
	local := &Local{Index: ix, Image: bytes.NewReader(img[:len(img)/2])}
	ps := newPayloadServer(t, img)
	slot := newSlot(t, 0, 0)
	res, err := Install(context.Background(), ix, ps.source(), slot, local, Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slotBytes(t, slot), img) {
		t.Fatal("slot differs")
	}
	if res.Reused+res.Fetched != len(ix.Chunks) || res.LocalCorrupt != res.Fetched || res.Fetched == 0 {
		t.Errorf("result %+v", *res)
	}
}

func TestInstallResume(t *testing.T) {
	img, ix := testImage(t, 6)
	ps := newPayloadServer(t, img)
	const bad = 60
	ps.setHook(func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		if covers(r, ix.Chunks[bad]) {
			http.Error(w, "gone", http.StatusNotFound)
			return true
		}
		return false
	})
	slot := newSlot(t, 0, 0)
	// First attempt fails at chunk bad; the agent records progress after
	// syncing (here: after every chunk, for simplicity).
	done := map[int]bool{}
	_, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{
		Workers: 2,
		Progress: func(i int) {
			if err := slot.Sync(); err != nil {
				t.Error(err)
			}
			done[i] = true // serialized by Install
		},
	})
	if !errors.Is(err, ErrFetch) {
		t.Fatalf("first attempt: err = %v, want ErrFetch", err)
	}
	if len(done) == 0 || done[bad] {
		t.Fatalf("first attempt recorded %d chunks (bad done: %v)", len(done), done[bad])
	}

	// A fresh server: requests cancelled in the first attempt may still
	// reach the old one.
	ps = newPayloadServer(t, img)
	res, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{
		Workers: 2,
		Done:    func(i int) bool { return done[i] },
	})
	if err != nil {
		t.Fatal(err)
	}
	remaining, left := len(ix.Chunks)-len(done), int64(0)
	for i, c := range ix.Chunks {
		if !done[i] {
			left += c.Length
		}
	}
	if got := ps.asked.Load(); got != left {
		t.Errorf("resume asked for %d bytes, want the %d left", got, left)
	}
	if res.Skipped != len(done) || res.Fetched != remaining {
		t.Errorf("result %+v", *res)
	}
	if !bytes.Equal(slotBytes(t, slot), img) {
		t.Fatal("slot differs")
	}
}

// Chunks claimed Done but never written are caught by the read-back.
func TestInstallResumeLiesCaughtByReadBack(t *testing.T) {
	img, ix := testImage(t, 7)
	ps := newPayloadServer(t, img)
	slot := newSlot(t, len(img), 0)
	_, err := Install(context.Background(), ix, ps.source(), slot, nil, Options{
		Done: func(i int) bool { return i == 42 },
	})
	var rb *ReadBackError
	if !errors.Is(err, ErrReadBack) || !errors.As(err, &rb) || rb.Chunk != 42 {
		t.Fatalf("err = %v, want ErrReadBack for chunk 42", err)
	}
}

// flipSlot is a file slot whose ReadAt flips one bit at offset flip.
type flipSlot struct {
	*os.File
	flip int64
}

func (s flipSlot) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.File.ReadAt(p, off)
	if s.flip >= off && s.flip < off+int64(n) {
		p[s.flip-off] ^= 0x10
	}
	return n, err
}

func TestInstallReadBackDetectsBitFlip(t *testing.T) {
	img, ix := testImage(t, 8)
	ps := newPayloadServer(t, img)
	f := newSlot(t, 0, 0)
	flip := ix.Chunks[33].Offset + 5
	res, err := Install(context.Background(), ix, ps.source(), flipSlot{f, flip}, nil, Options{})
	var rb *ReadBackError
	if !errors.Is(err, ErrReadBack) || !errors.As(err, &rb) || rb.Chunk != 33 {
		t.Fatalf("err = %v, want ErrReadBack for chunk 33", err)
	}
	var cm chunkindex.ChunkMismatchError
	if !errors.As(err, &cm) {
		t.Error("ReadBackError does not unwrap to chunkindex.ChunkMismatchError")
	}
	if res.Fetched == 0 {
		t.Errorf("result %+v", *res)
	}
	// The file itself holds the right bytes: the fault was in reading.
	c := ix.Chunks[33]
	if !bytes.Equal(slotBytes(t, f)[c.Offset:c.Offset+c.Length], img[c.Offset:c.Offset+c.Length]) {
		t.Error("file differs")
	}
}

// TestInstallReadBackDuringDownload proves the read-back runs beside the
// download: the source holds the last chunk until the slot has been read
// back up to the chunk before it, which never happens if the read-back
// waits for the download. The flipped bit in chunk 5 is then found.
func TestInstallReadBackDuringDownload(t *testing.T) {
	img, ix := testImage(t, 15)
	last := len(ix.Chunks) - 1
	readUpTo := ix.Chunks[last-1].Offset
	reached := make(chan struct{})
	var once sync.Once
	slot := &watchSlot{flipSlot: flipSlot{newSlot(t, 0, 0), ix.Chunks[5].Offset}, onRead: func(off int64) {
		if off == readUpTo {
			once.Do(func() { close(reached) })
		}
	}}
	src := funcSource(func(ctx context.Context, i int, c chunkindex.Chunk) ([]byte, error) {
		if i == last {
			select {
			case <-reached:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Second):
				return nil, errors.New("the read-back did not reach the chunk before the last while the last was held")
			}
		}
		return img[c.Offset : c.Offset+c.Length], nil
	})
	_, err := Install(context.Background(), ix, src, slot, nil, Options{Workers: 2})
	var rb *ReadBackError
	if !errors.As(err, &rb) || rb.Chunk != 5 {
		t.Fatalf("err = %v, want ErrReadBack for chunk 5", err)
	}
}

// watchSlot calls onRead with the offset of every ReadAt.
type watchSlot struct {
	flipSlot
	onRead func(off int64)
}

func (s *watchSlot) ReadAt(p []byte, off int64) (int, error) {
	s.onRead(off)
	return s.flipSlot.ReadAt(p, off)
}

// TestInstallReadBackImageHash installs an index whose chunk hashes are
// right but whose whole-image hash is not the image's: each chunk passes,
// the image as a whole must not.
func TestInstallReadBackImageHash(t *testing.T) {
	img, ix := testImage(t, 16)
	ix.ImageHash[0] ^= 1
	ps := newPayloadServer(t, img)
	f := newSlot(t, 0, 0)
	res, err := Install(context.Background(), ix, ps.source(), f, nil, Options{})
	var rb *ReadBackError
	if !errors.As(err, &rb) || rb.Chunk != -1 || !errors.Is(err, chunkindex.ErrImageHash) || !errors.Is(err, ErrReadBack) {
		t.Fatalf("err = %v, want ReadBackError wrapping chunkindex.ErrImageHash", err)
	}
	if res.Fetched != len(ix.Chunks) {
		t.Errorf("fetched %d of %d chunks: every chunk should have passed", res.Fetched, len(ix.Chunks))
	}
}

// shortSlot is a slot whose reads stop at limit (a device smaller than
// the image that silently accepted writes).
type shortSlot struct {
	*os.File
	limit int64
}

func (s shortSlot) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.limit {
		return 0, io.EOF
	}
	if off+int64(len(p)) > s.limit {
		n, _ := s.File.ReadAt(p[:s.limit-off], off)
		return n, io.EOF
	}
	return s.File.ReadAt(p, off)
}

func TestInstallReadBackShortSlot(t *testing.T) {
	img, ix := testImage(t, 9)
	ps := newPayloadServer(t, img)
	_, err := Install(context.Background(), ix, ps.source(), shortSlot{newSlot(t, 0, 0), int64(len(img) - 10)}, nil, Options{})
	var rb *ReadBackError
	if !errors.As(err, &rb) || rb.Chunk != -1 || !errors.Is(err, chunkindex.ErrImageTooShort) {
		t.Fatalf("err = %v, want ReadBackError wrapping ErrImageTooShort", err)
	}
}

type failSlot struct {
	*os.File
	writeErr, syncErr error
	syncs             atomic.Int64
}

func (s *failSlot) WriteAt(p []byte, off int64) (int, error) {
	if s.writeErr != nil {
		return 0, s.writeErr
	}
	return s.File.WriteAt(p, off)
}

func (s *failSlot) Sync() error {
	s.syncs.Add(1)
	if s.syncErr != nil {
		return s.syncErr
	}
	return s.File.Sync()
}

func TestInstallSlotErrors(t *testing.T) {
	img, ix := testImage(t, 10)
	ps := newPayloadServer(t, img)
	boom := errors.New("boom")

	s := &failSlot{File: newSlot(t, 0, 0), writeErr: boom}
	if _, err := Install(context.Background(), ix, ps.source(), s, nil, Options{}); !errors.Is(err, boom) {
		t.Errorf("write error: got %v", err)
	}
	if s.syncs.Load() != 0 {
		t.Error("Sync called after a failed write")
	}

	s = &failSlot{File: newSlot(t, 0, 0), syncErr: boom}
	if _, err := Install(context.Background(), ix, ps.source(), s, nil, Options{}); !errors.Is(err, boom) || errors.Is(err, ErrReadBack) {
		t.Errorf("sync error: got %v", err)
	}
}

func TestInstallBadArguments(t *testing.T) {
	img, ix := testImage(t, 11)
	ps := newPayloadServer(t, img)
	slot := newSlot(t, 0, 0)
	bad := *ix
	bad.Chunks = bad.Chunks[1:]
	if _, err := Install(context.Background(), &bad, ps.source(), slot, nil, Options{}); !errors.Is(err, chunkindex.ErrMalformed) {
		t.Errorf("malformed index: %v", err)
	}
	if _, err := Install(context.Background(), nil, ps.source(), slot, nil, Options{}); err == nil {
		t.Error("nil index accepted")
	}
	if _, err := Install(context.Background(), ix, nil, slot, nil, Options{}); err == nil {
		t.Error("nil source accepted")
	}
	if _, err := Install(context.Background(), ix, ps.source(), nil, nil, Options{}); err == nil {
		t.Error("nil slot accepted")
	}
	// A local with nil parts is ignored.
	if _, err := Install(context.Background(), ix, ps.source(), slot, &Local{Index: ix}, Options{}); err != nil {
		t.Error(err)
	}
}

func TestInstallEmptyImage(t *testing.T) {
	ix := index(t, nil)
	slot := newSlot(t, 0, 0)
	res, err := Install(context.Background(), ix, &HTTPSource{URL: "http://127.0.0.1:1/"}, slot, nil, Options{})
	if err != nil || res.Chunks != 0 {
		t.Fatalf("res %+v err %v", res, err)
	}
}

func TestInstallCancel(t *testing.T) {
	img, ix := testImage(t, 12)
	ps := newPayloadServer(t, img)
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	ps.setHook(func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n == 5 {
			cancel()
		}
		if n >= 5 {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return true
		}
		return false
	})
	defer close(release)
	var progressAfterReturn atomic.Bool
	var returned atomic.Bool
	_, err := Install(ctx, ix, ps.source(), newSlot(t, 0, 0), nil, Options{
		Workers:  3,
		Progress: func(int) { progressAfterReturn.Store(returned.Load()) },
	})
	returned.Store(true)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if progressAfterReturn.Load() {
		t.Error("Progress called after Install returned")
	}
}

// A Source other than HTTPSource: its errors become FetchErrors.
type funcSource func(ctx context.Context, i int, c chunkindex.Chunk) ([]byte, error)

func (f funcSource) ReadChunk(ctx context.Context, i int, c chunkindex.Chunk, _ []byte) ([]byte, error) {
	return f(ctx, i, c)
}

func TestInstallOtherSource(t *testing.T) {
	img, ix := testImage(t, 13)
	boom := errors.New("bundle unreadable")
	src := funcSource(func(_ context.Context, i int, c chunkindex.Chunk) ([]byte, error) {
		if i == 7 {
			return nil, boom
		}
		if i == 8 { // long data
			return append(bytes.Clone(img[c.Offset:c.Offset+c.Length]), 0), nil
		}
		return img[c.Offset : c.Offset+c.Length], nil
	})
	_, err := Install(context.Background(), ix, src, newSlot(t, 0, 0), nil, Options{Workers: 1})
	var fe *FetchError
	if !errors.Is(err, ErrFetch) || !errors.Is(err, boom) || !errors.As(err, &fe) || fe.Chunk != 7 || fe.Status != 0 {
		t.Fatalf("err = %v", err)
	}
	src2 := funcSource(func(_ context.Context, i int, c chunkindex.Chunk) ([]byte, error) {
		if i == 8 { // the right bytes plus one: still a mismatch
			return append(bytes.Clone(img[c.Offset:c.Offset+c.Length]), 0), nil
		}
		return img[c.Offset : c.Offset+c.Length], nil
	})
	_, err = Install(context.Background(), ix, src2, newSlot(t, 0, 0), nil, Options{Workers: 1})
	var cm *ChunkMismatchError
	if !errors.As(err, &cm) || cm.Chunk != 8 {
		t.Fatalf("err = %v, want mismatch of chunk 8", err)
	}
}

// The Source is never called by more than Workers goroutines at once, and
// local reuse respects the same bound.
func TestInstallConcurrencyBound(t *testing.T) {
	img, ix := testImage(t, 14)
	old := bytes.Clone(img)
	for i := 0; i < len(ix.Chunks); i += 2 {
		old[ix.Chunks[i].Offset] ^= 1
	}
	var cur, peak atomic.Int64
	src := funcSource(func(_ context.Context, i int, c chunkindex.Chunk) ([]byte, error) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		return bytes.Clone(img[c.Offset : c.Offset+c.Length]), nil
	})
	slot := newSlot(t, 0, 0)
	res, err := Install(context.Background(), ix, src, slot, &Local{Index: index(t, old), Image: bytes.NewReader(old)}, Options{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if p := peak.Load(); p > 3 || p < 1 {
		t.Errorf("peak concurrent source calls %d, want 1..3", p)
	}
	if res.Reused == 0 || res.Fetched == 0 || res.Reused+res.Fetched != len(ix.Chunks) {
		t.Errorf("result %+v", *res)
	}
	if !bytes.Equal(slotBytes(t, slot), img) {
		t.Error("slot differs")
	}
}

func TestErrorStrings(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&ChunkMismatchError{Chunk: 3, Offset: 12288}, "install: chunk 3 at offset 12288 from the source does not match the index"},
		{&FetchError{Chunk: 2, Status: 503, Attempts: 4, Err: errors.New("server error")}, "install: fetching chunk 2: HTTP status 503 after 4 attempt(s): server error"},
		{&FetchError{Chunk: 2, Err: io.EOF}, "install: fetching chunk 2: EOF"},
		{&ReadBackError{Chunk: 5, Err: errors.New("x")}, "install: slot read-back: chunk 5 does not match the index: x"},
		{&ReadBackError{Chunk: -1, Err: io.ErrUnexpectedEOF}, "install: slot read-back: unexpected EOF"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
