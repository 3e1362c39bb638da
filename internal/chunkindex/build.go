package chunkindex

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// normChunkSize maps 0 to DefaultChunkSize and rejects invalid sizes.
func normChunkSize(chunkSize int64) (int64, error) {
	if chunkSize == 0 {
		return DefaultChunkSize, nil
	}
	if chunkSize < 0 || chunkSize&(chunkSize-1) != 0 || chunkSize > MaxChunkSize {
		return 0, fmt.Errorf("chunkindex: invalid chunk size %d: must be a power of two no larger than %d", chunkSize, MaxChunkSize)
	}
	return chunkSize, nil
}

func errTooManyChunks(chunkSize int64) error {
	return fmt.Errorf("chunkindex: image too large: more than MaxChunks (%d) chunks of %d bytes", MaxChunks, chunkSize)
}

// Build reads an image from r until EOF and returns its index with chunks
// of chunkSize bytes (0 means DefaultChunkSize). Chunk hashes are computed
// in parallel with the whole-image hash; memory is
// O(GOMAXPROCS*chunkSize).
func Build(r io.Reader, chunkSize int64) (*Index, error) {
	cs, err := normChunkSize(chunkSize)
	if err != nil {
		return nil, err
	}
	p := newPipe(runtime.GOMAXPROCS(0), int(cs))
	go p.produce(func() {
		for i := 0; ; i++ {
			buf, ok := p.getBuf()
			if !ok {
				return
			}
			k, err := io.ReadFull(r, buf)
			if k > 0 {
				if i >= MaxChunks {
					p.emit(&item{err: errTooManyChunks(cs)})
					return
				}
				if !p.emit(&item{index: i, buf: buf[:k]}) {
					return
				}
			}
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				return
			case err != nil:
				p.emit(&item{err: fmt.Errorf("chunkindex: reading image: %w", err)})
				return
			}
		}
	})
	ix := &Index{ChunkSize: cs, Chunks: []Chunk{}}
	whole := sha256.New()
	err = p.consume(func(it *item, sum [32]byte) error {
		whole.Write(it.buf)
		ix.Chunks = append(ix.Chunks, Chunk{Offset: ix.ImageLength, Length: int64(len(it.buf)), Hash: sum})
		ix.ImageLength += int64(len(it.buf))
		return nil
	})
	if err != nil {
		return nil, err
	}
	whole.Sum(ix.ImageHash[:0])
	return ix, nil
}

// BuildFile returns the index of the file at path with chunks of chunkSize
// bytes (0 means DefaultChunkSize). It is the fast path: one goroutine
// streams the file through the whole-image SHA-256 while the other
// GOMAXPROCS-1 (at least one) hash chunks read with ReadAt, so on two
// cores the wall time is about one sequential SHA-256 pass. The file must
// not change while BuildFile runs; a change of its length is detected.
// Files that are not regular (pipes, devices) are read with Build.
func BuildFile(path string, chunkSize int64) (*Index, error) {
	cs, err := normChunkSize(chunkSize)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return Build(f, cs)
	}
	size := fi.Size()
	count, err := chunkCount(uint64(size), uint64(cs))
	if err != nil {
		return nil, errTooManyChunks(cs)
	}
	ix := &Index{ChunkSize: cs, ImageLength: size, Chunks: make([]Chunk, count)}

	var (
		wg      sync.WaitGroup
		failed  atomic.Bool
		errOnce sync.Once
		first   error
	)
	fail := func(err error) {
		errOnce.Do(func() { first = err })
		failed.Store(true)
	}

	// Whole-image hash: one sequential pass, which also detects growth.
	wg.Add(1)
	go func() {
		defer wg.Done()
		h := sha256.New()
		buf := make([]byte, min(1<<20, max(size, 1)+1))
		sr := io.NewSectionReader(f, 0, math.MaxInt64)
		var n int64
		for !failed.Load() {
			k, err := sr.Read(buf)
			h.Write(buf[:k])
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				fail(fmt.Errorf("chunkindex: reading %s: %w", path, err))
				return
			}
		}
		if failed.Load() {
			return
		}
		if n != size {
			fail(fmt.Errorf("chunkindex: %s changed while indexing: read %d bytes, expected %d", path, n, size))
			return
		}
		h.Sum(ix.ImageHash[:0])
	}()

	// Chunk hashes: parallel ReadAt.
	var next atomic.Int64
	workers := max(1, runtime.GOMAXPROCS(0)-1)
	for range min(workers, max(len(ix.Chunks), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, min(cs, size))
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(len(ix.Chunks)) {
					return
				}
				off := i * cs
				b := buf[:min(cs, size-off)]
				k, err := f.ReadAt(b, off)
				if k < len(b) {
					if err == nil || errors.Is(err, io.EOF) {
						err = fmt.Errorf("file shrank: short read at offset %d", off+int64(k))
					}
					fail(fmt.Errorf("chunkindex: reading %s: %w", path, err))
					return
				}
				ix.Chunks[i] = Chunk{Offset: off, Length: int64(len(b)), Hash: sha256.Sum256(b)}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return ix, nil
}
