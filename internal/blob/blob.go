// Package blob stores the server's large, immutable objects (release
// payloads, chunk indexes) by the SHA-256 of their content.
//
// A Store never holds a blob under a name that does not match its content:
// Put hashes what it receives and commits it only when the digest and
// length equal what the caller expected, so a truncated or substituted
// upload cannot land. Blobs are immutable; reads support ranges (for HTTP
// Range requests and resumable device downloads).
//
// The filesystem implementation (FS) is the default; an S3-compatible one
// can be added behind the same interface. Every implementation must pass
// blobtest.Run.
package blob

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Errors every implementation returns (wrapped) for these conditions.
var (
	ErrNotFound = errors.New("blob not found")
	// ErrMismatch means the content did not have the expected digest or
	// length; nothing was stored.
	ErrMismatch = errors.New("blob content does not match its digest or length")
	// ErrInvalidDigest means a digest is not 64 lower-case hex digits.
	ErrInvalidDigest = errors.New("invalid blob digest")
)

// Store is a content-addressed blob store. Implementations are safe for
// concurrent use.
type Store interface {
	// Put reads exactly length bytes from r and stores them under digest
	// (hex SHA-256), failing with ErrMismatch, and storing nothing, if the
	// content differs or r yields more or fewer bytes. Putting a blob that
	// already exists succeeds after the same check.
	Put(ctx context.Context, digest string, length int64, r io.Reader) error
	// Open returns a reader over a whole blob and its size.
	Open(ctx context.Context, digest string) (Reader, error)
	// Stat returns a blob's size.
	Stat(ctx context.Context, digest string) (int64, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, digest string) error
}

// Reader reads a stored blob; ReadAt serves ranges.
type Reader interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
	Size() int64
}

// CheckDigest validates a hex SHA-256 digest.
func CheckDigest(d string) error {
	if len(d) != 64 {
		return fmt.Errorf("%w: %q is not 64 hex digits", ErrInvalidDigest, d)
	}
	if _, err := hex.DecodeString(d); err != nil {
		return fmt.Errorf("%w: %q is not 64 hex digits", ErrInvalidDigest, d)
	}
	for _, c := range d {
		if c >= 'A' && c <= 'F' {
			return fmt.Errorf("%w: %q must be lower case", ErrInvalidDigest, d)
		}
	}
	return nil
}
