// Package install writes a verified release image into the inactive A/B
// slot of a device, chunk by chunk.
//
// The caller passes the release's chunk index, already authenticated (its
// SHA-256 comes from verified TUF metadata), so the *chunkindex.Index is
// trusted; every byte from a Source is not. Install upholds one rule: no
// byte of a chunk is written to the slot before that chunk's SHA-256 has
// been checked against the index. Chunks the running image already holds
// (same hash and length in the local index) are read from the active slot
// instead of downloaded, and are verified too, because the active slot may
// have rotted; a local chunk that fails verification is fetched from the
// Source instead. The whole slot is then read back and its SHA-256 checked
// against the image's (chunks written by an earlier, interrupted attempt
// too), and the slot is synced: Install succeeds only when the slot reads
// back as the signed image, so what the bootloader will boot is what was
// signed.
//
// Chunks are fetched, verified and written concurrently (Options.Workers)
// at their offsets with WriteAt, in no particular order. A Source that is
// also a SpanSource is asked for runs of consecutive chunks at once (up to
// Options.SpanBytes), so a download streams instead of paying a request
// per chunk; each chunk of a run is still verified before it is written.
// When the source turns out to ignore ranges (ErrRangeIgnored from a
// TailSource), the rest of the image is read in one sequential pass
// instead, verified chunk by chunk the same way.
// The read-back runs beside the download, in image order, each chunk as
// soon as it is written, so it costs little wall time. Memory is bounded:
// each worker owns one chunk buffer (used for local reuse and lent to the
// Source) and the read-back one more, so at most Workers+1 chunk buffers
// are in use. A Source is called by at most Workers
// goroutines at once. An interrupted install resumes at chunk granularity: the agent records the
// chunks reported by Options.Progress (after syncing the slot) and passes
// them back as Options.Done.
//
// HTTPSource fetches chunks with HTTP Range requests and bounded retries.
// The package uses only the standard library and internal/chunkindex, so
// it links into the pure-Go device agent without server code.
package install

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/rampartfw/rampart/internal/chunkindex"
)

// Source returns the untrusted bytes of chunk i, described by c (from the
// trusted index): an HTTP Range fetch, a reader of an update bundle, ... It
// is called concurrently from several goroutines. buf is the caller's
// buffer of exactly c.Length bytes: a Source fills it and returns it, so a
// download allocates nothing per chunk. Install verifies what it gets; a
// Source need not.
type Source interface {
	ReadChunk(ctx context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error)
}

// SpanSource is a Source that can also deliver a run of consecutive
// chunks at once, e.g. with one HTTP Range request for all of them.
// ReadSpan reads the chunks cs (numbered first, first+1, ...; each follows
// the previous one in the image) in order, each into buf (as long as the
// longest of them), and passes it to yield, which may use buf only until
// it returns. ReadSpan never delivers a chunk twice. It stops at the first
// error from yield and returns that error as it is.
type SpanSource interface {
	Source
	ReadSpan(ctx context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(i int, data []byte) error) error
}

// TailSource is a SpanSource that can also serve a server that ignores
// Range requests. When ReadSpan fails with ErrRangeIgnored, Install stops
// fetching in parallel and calls ReadTail once, for every chunk from the
// first one not yet written to the end of the image; ReadTail delivers
// them in order as ReadSpan does, reading (and dropping) whatever comes
// before them. Each chunk is still verified before it is written.
type TailSource interface {
	SpanSource
	ReadTail(ctx context.Context, first int, cs []chunkindex.Chunk, buf []byte, yield func(i int, data []byte) error) error
}

// DefaultSpanBytes is the most bytes Install asks a SpanSource for at
// once when Options.SpanBytes is 0: large enough that the request costs
// nothing next to the transfer, small enough that the last run does not
// keep the other workers waiting long.
const DefaultSpanBytes = 16 << 20

// Slot is the inactive slot the image is written to. An *os.File is one,
// whether a regular file or a block device. WriteAt is called
// concurrently for disjoint ranges.
type Slot interface {
	io.WriterAt
	io.ReaderAt
	Sync() error
}

// Local is the running image and its chunk index, used to reuse chunks
// instead of downloading them. Neither is trusted: a reused chunk is
// verified against the new release's index before it is written.
type Local struct {
	Index *chunkindex.Index
	Image io.ReaderAt
}

// Options tunes Install. The zero value is valid.
type Options struct {
	// Workers is the number of chunks (or runs of chunks) fetched,
	// verified and written concurrently, and the number of chunks read
	// back at once. 0 or less means runtime.GOMAXPROCS(0).
	Workers int

	// SpanBytes bounds the bytes asked for in one ReadSpan call when the
	// Source is a SpanSource (never less than one chunk). Runs are also
	// kept short enough to give every worker several of them. 0 means
	// DefaultSpanBytes.
	SpanBytes int64

	// Done reports whether chunk i was written and synced to this slot
	// by an earlier attempt at installing the same index; such chunks are
	// neither fetched nor written, but they are still checked by the
	// read-back verification, so a wrong answer makes Install fail
	// with ErrReadBack, never install a bad image. Done is called from
	// Install's own goroutine, once per chunk, in index order. nil means
	// no chunk is done.
	Done func(i int) bool

	// Progress is called after chunk i was verified and written with
	// dst.WriteAt. The write is NOT yet durable: before persisting i as
	// done (for a later Options.Done), the caller must call dst.Sync()
	// (it may do so from inside Progress, e.g. every N chunks, and then
	// persist every chunk reported up to that Sync). Chunks complete in
	// no particular order, so persist a set (e.g. a bitmap), not a
	// high-water mark. Calls are serialized (never concurrent), but
	// Progress must be quick: it holds up the worker that calls it. It
	// is never called after Install returns.
	Progress func(i int)
}

// Result counts what Install did. Chunks is the number of chunks in the
// index; Fetched+Reused+Skipped of them were handled by this call when it
// succeeds (Skipped ones were Done by an earlier attempt).
type Result struct {
	Chunks  int
	Reused  int // chunks copied from Local after verification
	Fetched int // chunks obtained from the Source and verified
	Skipped int // chunks Options.Done reported as already written

	// LocalCorrupt counts chunks the local index offered for reuse whose
	// local bytes failed verification (or could not be read); they were
	// fetched from the Source instead.
	LocalCorrupt int

	BytesDownloaded int64 // bytes returned by the Source (verified or not)
	BytesReused     int64 // bytes of reused chunks
}

// Install writes the image described by ix into dst, taking every chunk
// either from local (when the running image holds a chunk with the same
// hash and length and it verifies) or from src. Each chunk is verified
// before any of its bytes is written with dst.WriteAt at its offset. The
// slot is read back with dst.ReadAt as chunks are written, and when all
// chunks are written Install calls dst.Sync; it returns when the whole of
// [0, ix.ImageLength) read back with the index's whole-image SHA-256 and
// the sync succeeded.
//
// Errors: an invalid index or a nil src or dst is an ordinary error; a
// chunk from src that does not match is a *ChunkMismatchError
// (ErrChunkMismatch); a Source failure is a *FetchError (ErrFetch); a
// failed WriteAt or Sync is an ordinary wrapped error; a read-back
// failure is a *ReadBackError (ErrReadBack); cancellation returns an
// error wrapping ctx.Err(). Install stops at the first error: it cancels
// the context passed to the Source and waits for every worker, so it
// never calls src, dst or the callbacks after it returns. The Result is
// never nil and counts the work done, also on error.
//
// dst must be at least ix.ImageLength bytes long or able to grow (a file);
// bytes beyond ImageLength are left as they are.
func Install(ctx context.Context, ix *chunkindex.Index, src Source, dst Slot, local *Local, opt Options) (*Result, error) {
	res := &Result{}
	if err := validIndex(ix); err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	res.Chunks = len(ix.Chunks)
	if src == nil || dst == nil {
		return res, errors.New("install: nil source or slot")
	}
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, len(ix.Chunks)))

	in := &installer{ix: ix, src: src, dst: dst, opt: opt, res: res}
	in.indexLocal(local)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The parallel fetch runs under its own context, so that it can stop
	// early to switch to one sequential pass (a server that ignores
	// Range) while the read-back goes on.
	fctx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()

	// Which chunks are left to do, and which of them must come from src.
	todo := make([]bool, len(ix.Chunks))
	in.written = make([]bool, len(ix.Chunks))
	fetch := 0
	for i := range ix.Chunks {
		if opt.Done != nil && opt.Done(i) {
			res.Skipped++
			continue
		}
		todo[i] = true
		if !in.reusable(i) {
			fetch++
		}
	}
	maxSpan := 1
	if _, ok := src.(SpanSource); ok {
		maxSpan = spanChunks(opt.SpanBytes, ix.ChunkSize, fetch, workers)
	}
	tail, _ := src.(TailSource)

	// The read-back: every chunk is queued once, Done ones now, the others
	// by put once written; the slot is read back in image order as the
	// queue allows.
	in.readBack = make(chan int, len(ix.Chunks))
	for i, t := range todo {
		if !t {
			in.readBack <- i
		}
	}
	var rangeIgnored atomic.Bool
	stop := func(err error) {
		switch {
		case tail != nil && errors.Is(err, ErrRangeIgnored):
			rangeIgnored.Store(true)
			stopFetch()
			return
		case rangeIgnored.Load() && ctx.Err() == nil && errors.Is(err, context.Canceled):
			return // a fetch cut short by the switch to one pass
		}
		in.fail(err)
		cancel()
	}
	bufLen := min(ix.ChunkSize, ix.ImageLength)
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		if err := in.readBackImage(ctx, make([]byte, bufLen)); err != nil {
			stop(err)
		}
	}()
	jobs := make(chan job)
	fetchers := startWorkers(fctx, workers, bufLen, jobs, stop, func(j job, buf []byte) error {
		if j.n == 1 {
			return in.chunk(fctx, j.first, buf)
		}
		return in.span(fctx, j.first, j.n, buf)
	})
	send := func(j job) bool {
		select {
		case jobs <- j:
			return true
		case <-fctx.Done():
			return false
		}
	}
	var run job // consecutive chunks to fetch, not yet sent
dispatch:
	for i := range ix.Chunks {
		fetchHere := todo[i] && !in.reusable(i)
		if run.n > 0 && (!fetchHere || run.n == maxSpan) {
			if !send(run) {
				break dispatch
			}
			run.n = 0
		}
		switch {
		case fetchHere:
			if run.n == 0 {
				run.first = i
			}
			run.n++
		case todo[i]:
			if !send(job{first: i, n: 1}) {
				break dispatch
			}
		}
	}
	if run.n > 0 {
		send(run)
	}
	close(jobs)
	fetchers.Wait()
	if rangeIgnored.Load() && ctx.Err() == nil {
		// Every worker has stopped: the pass has the source to itself
		// and a buffer of its own within the Workers+1 bound.
		if err := in.tail(ctx, tail, todo, make([]byte, bufLen)); err != nil {
			stop(err)
		}
	}
	close(in.readBack) // every chunk written was queued

	// The sync runs while the last chunks are read back.
	var syncErr error
	if ctx.Err() == nil {
		if err := dst.Sync(); err != nil {
			syncErr = fmt.Errorf("install: syncing slot: %w", err)
		}
	}
	reader.Wait()

	switch {
	case in.err != nil:
		return res, in.err
	case ctx.Err() != nil:
		return res, fmt.Errorf("install: %w", ctx.Err())
	case syncErr != nil:
		return res, syncErr
	}
	return res, nil
}

// startWorkers starts n goroutines, each with its own buffer of bufLen
// bytes, that call do for every item of items until it is closed. The
// first error goes to stop; after it, and after ctx is done, the rest of
// items is drained without work.
func startWorkers[T any](ctx context.Context, n int, bufLen int64, items <-chan T, stop func(error), do func(T, []byte) error) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bufLen)
			for it := range items {
				if ctx.Err() != nil {
					continue
				}
				if err := do(it, buf); err != nil {
					stop(err)
				}
			}
		}()
	}
	return &wg
}

// readBackImage reads the whole slot back in image order, each chunk as
// soon as it is written (or at once for a chunk done by an earlier
// attempt), and checks the SHA-256 of all of it against the index's
// whole-image hash, which verify.Index has matched with the signed target.
// The chunk hashes checked before writing prove each chunk; this proves
// the slot is the signed image itself, even if the index's chunks did not
// add up to it. It runs beside the download, so it costs one SHA-256 pass
// on one core and, at the end, about the last span.
//
// On a mismatch it reads the slot again chunk by chunk to name the first
// bad chunk; if every chunk matches, the index does not describe its own
// image hash, which is ErrImageHash.
func (in *installer) readBackImage(ctx context.Context, buf []byte) error {
	ix := in.ix
	h := sha256.New()
	written := make([]bool, len(ix.Chunks))
	for next := 0; next < len(ix.Chunks); {
		if !written[next] {
			i, ok := <-in.readBack
			if !ok {
				if ctx.Err() != nil {
					return nil // Install reports why it stopped
				}
				return &ReadBackError{Chunk: -1, Err: fmt.Errorf("chunk %d was never written", next)}
			}
			written[i] = true
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		b, err := readChunk(ix, in.dst, next, buf)
		if err != nil {
			return err
		}
		h.Write(b)
		next++
	}
	if [sha256.Size]byte(h.Sum(nil)) == ix.ImageHash {
		return nil
	}
	for i := range ix.Chunks {
		if ctx.Err() != nil {
			return nil
		}
		b, err := readChunk(ix, in.dst, i, buf)
		if err != nil {
			return err
		}
		if c := ix.Chunks[i]; !chunkOK(c, b) {
			return &ReadBackError{Chunk: i, Err: chunkindex.ChunkMismatchError{Chunk: i, Offset: c.Offset}}
		}
	}
	return &ReadBackError{Chunk: -1, Err: chunkindex.ErrImageHash}
}

// readChunk reads chunk i of the slot into buf.
func readChunk(ix *chunkindex.Index, dst Slot, i int, buf []byte) ([]byte, error) {
	c := ix.Chunks[i]
	b := buf[:c.Length]
	// A ReaderAt may return io.EOF with a full read; only n matters.
	n, err := dst.ReadAt(b, c.Offset)
	switch {
	case n == len(b):
		return b, nil
	case err == nil || errors.Is(err, io.EOF):
		return nil, &ReadBackError{Chunk: -1, Err: fmt.Errorf("%w: %d bytes at offset %d", chunkindex.ErrImageTooShort, n, c.Offset)}
	default:
		return nil, &ReadBackError{Chunk: -1, Err: fmt.Errorf("reading chunk %d: %w", i, err)}
	}
}

// job is a run of n consecutive chunks starting at first: one chunk, or a
// span fetched at once from a SpanSource.
type job struct{ first, n int }

// spanChunks is the most chunks of a span: spanBytes worth (at least one
// chunk), and no more than a quarter of each worker's share of the fetch,
// so that the work spreads over all workers.
func spanChunks(spanBytes, chunkSize int64, fetch, workers int) int {
	if spanBytes <= 0 {
		spanBytes = DefaultSpanBytes
	}
	n := int(max(1, min(spanBytes/chunkSize, 1<<20)))
	share := (fetch + 4*workers - 1) / (4 * workers)
	return max(1, min(n, share))
}

// validIndex checks the index once; chunks are then checked with chunkOK
// in constant time each (VerifyChunk re-validates the whole index per call).
func validIndex(ix *chunkindex.Index) error {
	return ix.Validate()
}

// chunkOK is ix.VerifyChunk(i, data) == nil for an index already validated.
func chunkOK(c chunkindex.Chunk, data []byte) bool {
	return int64(len(data)) == c.Length && sha256.Sum256(data) == c.Hash
}

type localKey struct {
	hash   [32]byte
	length int64
}

type installer struct {
	ix    *chunkindex.Index
	src   Source
	dst   Slot
	opt   Options
	image io.ReaderAt
	reuse map[localKey]int64 // local offset of a chunk with this hash and length

	// readBack queues chunks to read back; it holds every chunk, so
	// sending never blocks.
	readBack chan int

	mu      sync.Mutex // guards res, err, written and serializes opt.Progress
	res     *Result
	err     error
	written []bool // chunks written by this call
}

func (in *installer) indexLocal(local *Local) {
	if local == nil || local.Index == nil || local.Image == nil {
		return
	}
	in.image = local.Image
	in.reuse = make(map[localKey]int64, len(local.Index.Chunks))
	for _, c := range local.Index.Chunks {
		if c.Offset < 0 || c.Length <= 0 || c.Length > chunkindex.MaxChunkSize {
			continue // not a chunk we could read; never trusted anyway
		}
		k := localKey{c.Hash, c.Length}
		if _, ok := in.reuse[k]; !ok {
			in.reuse[k] = c.Offset
		}
	}
}

// fail records the first error. Cancellation errors caused by an earlier
// failure are not recorded over it.
func (in *installer) fail(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.err == nil {
		in.err = err
	}
}

// reusable reports whether the running image may hold chunk i.
func (in *installer) reusable(i int) bool {
	c := in.ix.Chunks[i]
	_, ok := in.reuse[localKey{c.Hash, c.Length}]
	return ok
}

// span fetches chunks first..first+n-1 with one ReadSpan call, verifying
// and writing each as it arrives.
func (in *installer) span(ctx context.Context, first, n int, buf []byte) error {
	next := first // the chunk expected from the source
	var putErr error
	err := in.src.(SpanSource).ReadSpan(ctx, first, in.ix.Chunks[first:first+n], buf, func(i int, d []byte) error {
		if i != next {
			putErr = &FetchError{Chunk: next, Err: fmt.Errorf("source delivered chunk %d, expected %d", i, next)}
			return putErr
		}
		next++
		putErr = in.put(i, d, false, false)
		return putErr
	})
	switch {
	case err == nil && next != first+n:
		return &FetchError{Chunk: next, Err: fmt.Errorf("source ended the span of chunks %d-%d before chunk %d", first, first+n-1, next)}
	case err == nil || err == putErr:
		return err
	}
	return sourceError(ctx, next, err)
}

// tail reads every chunk from the first one not yet written to the end of
// the image with one ReadTail call, verifying and writing the chunks still
// to do and passing over the others (done by an earlier attempt, or
// written before the switch), whose bytes only count as downloaded.
func (in *installer) tail(ctx context.Context, src TailSource, todo []bool, buf []byte) error {
	in.mu.Lock()
	first := len(todo)
	for i, t := range todo {
		if t && !in.written[i] {
			first = i
			break
		}
	}
	in.mu.Unlock()
	if first == len(todo) {
		return nil
	}
	next := first
	var putErr error
	err := src.ReadTail(ctx, first, in.ix.Chunks[first:], buf, func(i int, d []byte) error {
		if i != next {
			putErr = &FetchError{Chunk: next, Err: fmt.Errorf("source delivered chunk %d, expected %d", i, next)}
			return putErr
		}
		next++
		in.mu.Lock()
		pass := !todo[i] || in.written[i]
		in.mu.Unlock()
		if pass {
			in.count(false, false, int64(len(d)), 0)
			return nil
		}
		putErr = in.put(i, d, false, false)
		return putErr
	})
	switch {
	case err == nil && next != len(todo):
		return &FetchError{Chunk: next, Err: fmt.Errorf("source ended the image before chunk %d", next)}
	case err == nil || err == putErr:
		return err
	}
	return sourceError(ctx, next, err)
}

// sourceError classes a Source's failure at chunk i: cancellation stays
// cancellation, a *FetchError is kept as it is, and anything else becomes
// one.
func sourceError(ctx context.Context, i int, err error) error {
	switch {
	case errors.Is(err, ErrFetch):
		return err
	case ctx.Err() != nil:
		return fmt.Errorf("install: chunk %d: %w", i, ctx.Err())
	}
	return &FetchError{Chunk: i, Err: err}
}

// chunk obtains, verifies and writes chunk i, from the running image when
// it holds the chunk intact, otherwise from the source.
func (in *installer) chunk(ctx context.Context, i int, buf []byte) error {
	c := in.ix.Chunks[i]
	b := buf[:c.Length]
	corrupt := false
	if off, ok := in.reuse[localKey{c.Hash, c.Length}]; ok {
		// A ReaderAt may return io.EOF with a full read; only n matters.
		if n, _ := in.image.ReadAt(b, off); n == len(b) && chunkOK(c, b) {
			return in.put(i, b, true, false)
		}
		corrupt = true // fall back to the source
	}
	d, err := in.src.ReadChunk(ctx, i, c, b)
	if err != nil {
		in.count(false, corrupt, int64(len(d)), 0)
		return sourceError(ctx, i, err)
	}
	return in.put(i, d, false, corrupt)
}

// put verifies chunk i (unless reused: the caller has verified the local
// copy), writes it to the slot, counts it and reports progress. corrupt
// says the local copy failed verification before d was fetched.
func (in *installer) put(i int, d []byte, reused, corrupt bool) error {
	c := in.ix.Chunks[i]
	var download, reusedBytes int64
	if reused {
		reusedBytes = c.Length
	} else {
		download = int64(len(d))
		if !chunkOK(c, d) {
			in.count(false, corrupt, download, 0)
			return &ChunkMismatchError{Chunk: i, Offset: c.Offset,
				Err: chunkindex.ChunkMismatchError{Chunk: i, Offset: c.Offset}}
		}
	}
	if _, err := in.dst.WriteAt(d, c.Offset); err != nil {
		in.count(false, corrupt, download, 0)
		return fmt.Errorf("install: writing chunk %d at offset %d: %w", i, c.Offset, err)
	}

	in.readBack <- i

	in.mu.Lock()
	defer in.mu.Unlock()
	in.written[i] = true
	if reused {
		in.res.Reused++
	}
	in.countLocked(!reused, corrupt, download, reusedBytes)
	if in.opt.Progress != nil {
		in.opt.Progress(i)
	}
	return nil
}

func (in *installer) count(fetched, corrupt bool, download, reused int64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.countLocked(fetched, corrupt, download, reused)
}

func (in *installer) countLocked(fetched, corrupt bool, download, reused int64) {
	if fetched {
		in.res.Fetched++
	}
	if corrupt {
		in.res.LocalCorrupt++
	}
	in.res.BytesDownloaded += download
	in.res.BytesReused += reused
}
