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
// Source instead. When all chunks are written, the slot is synced and read
// back in full against the index, so what the bootloader will boot is what
// was signed.
//
// Chunks are fetched, verified and written concurrently (Options.Workers)
// at their offsets with WriteAt, in no particular order. Memory is bounded:
// each worker owns one chunk buffer, used for local reuse and lent to the
// Source, and the final read-back holds Workers+2 (chunkindex.VerifyStream)
// after the workers have finished, so at most Workers+2 chunk buffers are
// in use at any moment. A Source is called by at most Workers goroutines
// at once. An
// interrupted install resumes at chunk granularity: the agent records the
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
	// Workers is the number of chunks fetched, verified and written
	// concurrently, and the parallelism of the final read-back
	// verification. 0 or less means runtime.GOMAXPROCS(0).
	Workers int

	// Done reports whether chunk i was written and synced to this slot
	// by an earlier attempt at installing the same index; such chunks are
	// neither fetched nor written, but they are still checked by the
	// final read-back verification, so a wrong answer makes Install fail
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
// before any of its bytes is written with dst.WriteAt at its offset. When
// all chunks are written, Install calls dst.Sync and then reads dst back
// over [0, ix.ImageLength) and verifies it with ix.VerifyStream.
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

	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, min(ix.ChunkSize, ix.ImageLength))
			for i := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := in.chunk(ctx, i, buf); err != nil {
					in.fail(err)
					cancel()
				}
			}
		}()
	}
dispatch:
	for i := range ix.Chunks {
		if opt.Done != nil && opt.Done(i) {
			in.mu.Lock()
			res.Skipped++
			in.mu.Unlock()
			continue
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()

	if in.err != nil {
		return res, in.err
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	if err := dst.Sync(); err != nil {
		return res, fmt.Errorf("install: syncing slot: %w", err)
	}
	if err := readBack(ctx, ix, dst, workers); err != nil {
		return res, err
	}
	return res, nil
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

	mu  sync.Mutex // guards res, err and serializes opt.Progress
	res *Result
	err error
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

// chunk obtains, verifies and writes chunk i. buf is the worker's buffer,
// at least one chunk long.
func (in *installer) chunk(ctx context.Context, i int, buf []byte) error {
	c := in.ix.Chunks[i]
	var (
		data     []byte
		reused   bool
		corrupt  bool
		download int64
	)
	b := buf[:c.Length]
	if off, ok := in.reuse[localKey{c.Hash, c.Length}]; ok {
		// A ReaderAt may return io.EOF with a full read; only n matters.
		if n, _ := in.image.ReadAt(b, off); n == len(b) && chunkOK(c, b) {
			data, reused = b, true
		} else {
			corrupt = true // fall back to the source
		}
	}
	if data == nil {
		d, err := in.src.ReadChunk(ctx, i, c, b)
		download = int64(len(d))
		if err != nil {
			in.count(false, corrupt, download, 0)
			if ctx.Err() != nil && !errors.Is(err, ErrFetch) {
				return fmt.Errorf("install: chunk %d: %w", i, ctx.Err())
			}
			var fe *FetchError
			if errors.As(err, &fe) {
				return err
			}
			return &FetchError{Chunk: i, Err: err}
		}
		if !chunkOK(c, d) {
			in.count(false, corrupt, download, 0)
			return &ChunkMismatchError{Chunk: i, Offset: c.Offset,
				Err: chunkindex.ChunkMismatchError{Chunk: i, Offset: c.Offset}}
		}
		data = d
	}
	if _, err := in.dst.WriteAt(data, c.Offset); err != nil {
		in.count(false, corrupt, download, 0)
		return fmt.Errorf("install: writing chunk %d at offset %d: %w", i, c.Offset, err)
	}

	in.mu.Lock()
	defer in.mu.Unlock()
	var reusedBytes int64
	if reused {
		in.res.Reused++
		reusedBytes = c.Length
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

// readBack verifies the slot against the index after it was synced.
func readBack(ctx context.Context, ix *chunkindex.Index, dst Slot, workers int) error {
	r := io.NewSectionReader(ctxReaderAt{ctx, dst}, 0, ix.ImageLength)
	err := ix.VerifyStream(r, nil, workers)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("install: read-back: %w", ctx.Err())
	}
	rb := &ReadBackError{Chunk: -1, Err: err}
	var cm chunkindex.ChunkMismatchError
	if errors.As(err, &cm) {
		rb.Chunk = cm.Chunk
	}
	return rb
}

// ctxReaderAt stops the read-back when the context is cancelled.
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}
