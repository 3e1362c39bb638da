package install

import (
	"errors"
	"fmt"
)

var (
	// ErrChunkMismatch is matched (errors.Is) by every *ChunkMismatchError:
	// a chunk's bytes from the source do not match the trusted index.
	ErrChunkMismatch = errors.New("install: chunk does not match the index")
	// ErrFetch is matched by every *FetchError: a chunk could not be
	// fetched from the source.
	ErrFetch = errors.New("install: fetching chunk failed")
	// ErrReadBack is matched by every *ReadBackError: after all chunks
	// were written and synced, the slot did not read back as the image.
	ErrReadBack = errors.New("install: slot read-back verification failed")
	// ErrEndlessData is matched by a *FetchError whose response carried, or
	// declared, more bytes than were asked for: beyond the requested
	// range, or beyond the image's signed length. Unlike a body that ends
	// early it is never retried: a network cuts data short, only a hostile
	// or broken server adds to it (TUF's endless data attack).
	ErrEndlessData = errors.New("install: more data than requested")
	// ErrRangeIgnored is matched by a *FetchError when the server answered
	// a Range request with the whole file (200 OK). Install then reads the
	// rest of the image in one sequential pass (TailSource).
	ErrRangeIgnored = errors.New("install: the server ignores Range requests")
)

// ChunkMismatchError reports that the bytes the Source returned for chunk
// Chunk (at image offset Offset) do not have the length and SHA-256 the
// index lists. No byte of that chunk was written to the slot.
//
// It matches ErrChunkMismatch with errors.Is and unwraps to a
// chunkindex.ChunkMismatchError.
type ChunkMismatchError struct {
	Chunk  int
	Offset int64
	Err    error // the chunkindex.ChunkMismatchError
}

func (e *ChunkMismatchError) Error() string {
	return fmt.Sprintf("install: chunk %d at offset %d from the source does not match the index", e.Chunk, e.Offset)
}

func (e *ChunkMismatchError) Is(target error) bool { return target == ErrChunkMismatch }
func (e *ChunkMismatchError) Unwrap() error        { return e.Err }

// FetchError reports that chunk Chunk could not be obtained from the
// Source. Status is the HTTP status of the last response when the source
// is an HTTPSource and a response was received, 0 otherwise. Attempts is
// the number of requests made (0 when unknown, e.g. for other sources).
//
// It matches ErrFetch with errors.Is and unwraps to the cause.
type FetchError struct {
	Chunk    int
	Status   int
	Attempts int
	Err      error
}

func (e *FetchError) Error() string {
	s := fmt.Sprintf("install: fetching chunk %d", e.Chunk)
	if e.Status != 0 {
		s += fmt.Sprintf(": HTTP status %d", e.Status)
	}
	if e.Attempts > 0 {
		s += fmt.Sprintf(" after %d attempt(s)", e.Attempts)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FetchError) Is(target error) bool { return target == ErrFetch }
func (e *FetchError) Unwrap() error        { return e.Err }

// ReadBackError reports that the slot, read back, is not the image: a
// chunk's hash differs (Chunk is its index); or the slot is shorter than
// the image, reading it failed, or every chunk matches but the whole does
// not have the index's image hash (Chunk is -1 for these).
//
// It matches ErrReadBack with errors.Is and unwraps to the cause (a
// chunkindex.ChunkMismatchError, chunkindex.ErrImageTooShort,
// chunkindex.ErrImageHash or a read error).
type ReadBackError struct {
	Chunk int
	Err   error
}

func (e *ReadBackError) Error() string {
	if e.Chunk >= 0 {
		return fmt.Sprintf("install: slot read-back: chunk %d does not match the index: %v", e.Chunk, e.Err)
	}
	return fmt.Sprintf("install: slot read-back: %v", e.Err)
}

func (e *ReadBackError) Is(target error) bool { return target == ErrReadBack }
func (e *ReadBackError) Unwrap() error        { return e.Err }
