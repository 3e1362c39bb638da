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
	// ErrInsufficientStorage means a Put was refused before reading any
	// of its content because storing it would pass the store's quota or
	// leave the disk less free space than its reserve; *StorageError
	// says which.
	ErrInsufficientStorage = errors.New("insufficient storage for the blob")
)

// StorageError is a Put refused for lack of room.
type StorageError struct {
	// Length is the blob's length.
	Length int64
	// Quota and Used (bytes stored and being uploaded) when the quota
	// refused it; Quota 0 otherwise.
	Quota, Used int64
	// Free and Reserve when the disk's free space refused it.
	Free, Reserve int64
}

func (e *StorageError) Error() string {
	if e.Quota > 0 {
		return fmt.Sprintf("the blob store holds %d bytes of its %d-byte quota (uploads in progress included); a %d-byte blob does not fit: remove unreferenced blobs or raise blob_quota", e.Used, e.Quota, e.Length)
	}
	return fmt.Sprintf("the disk has %d bytes free, and the server keeps %d free for reports and the audit log; a %d-byte blob does not fit: free disk space or lower disk_reserve", e.Free, e.Reserve, e.Length)
}

func (e *StorageError) Unwrap() error { return ErrInsufficientStorage }

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
