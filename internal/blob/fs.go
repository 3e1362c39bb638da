package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/atomicfile"
)

// FS stores blobs as files under a directory, fanned out by the first two
// hex digits of their digest. A blob is written to a temporary file, hashed
// on the way, fsynced, and renamed into place only when it matches, so a
// crash or a bad upload never leaves a partial blob under a real name.
//
// It bounds what uploads may take (Limits): a Put is refused with
// ErrInsufficientStorage before any of its content is read when the
// blobs stored and being uploaded would pass the quota, or when the file
// system would be left with less free space than the reserve, so that
// the database and the logs on the same disk keep room for what the
// server must still write when uploads are refused.
type FS struct {
	dir string
	lim Limits

	mu       sync.Mutex
	used     int64 // bytes of stored blobs
	count    int64
	inflight int64 // lengths of Puts in progress
}

// Limits bound an FS.
type Limits struct {
	// Quota is the most bytes the blobs may take; 0 for no quota.
	Quota int64
	// Reserve is the free space (bytes) an upload must leave on the file
	// system; 0 for none.
	Reserve int64
}

// NewFS returns a Store rooted at dir, creating it if needed, with no
// limits.
func NewFS(dir string) (*FS, error) { return NewLimitedFS(dir, Limits{}) }

// NewLimitedFS returns a Store rooted at dir with limits. It adds up the
// blobs already stored (one directory walk).
func NewLimitedFS(dir string, lim Limits) (*FS, error) {
	if lim.Quota < 0 || lim.Reserve < 0 {
		return nil, fmt.Errorf("blob store limits: negative quota %d or reserve %d", lim.Quota, lim.Reserve)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	s := &FS{dir: dir, lim: lim}
	err := s.Walk(context.Background(), func(b Info) error {
		s.used += b.Size
		s.count++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Info describes a stored blob.
type Info struct {
	Digest string
	Size   int64
	// ModTime is when it was last stored (a Put of an existing blob
	// stores it again).
	ModTime time.Time
}

// Walk calls fn for every stored blob, in no particular order.
func (s *FS) Walk(ctx context.Context, fn func(Info) error) error {
	fans, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		es, err := os.ReadDir(filepath.Join(s.dir, fan.Name()))
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := ctx.Err(); err != nil {
				return err
			}
			if CheckDigest(e.Name()) != nil || !strings.HasPrefix(e.Name(), fan.Name()) {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			} else if err != nil {
				return err
			}
			if err := fn(Info{Digest: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Usage returns the bytes and the number of blobs stored.
func (s *FS) Usage() (bytes, blobs int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.count
}

// Limits returns the limits in force.
func (s *FS) Limits() Limits { return s.lim }

// reserve claims room for an upload of length bytes of blob digest, or
// says why there is none. release gives it back. Storing a blob again
// replaces it, so its current size does not count against the quota.
func (s *FS) reserve(digest string, length int64) error {
	var replaced int64
	if fi, err := os.Stat(s.path(digest)); err == nil {
		replaced = fi.Size()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.lim.Quota; q > 0 && s.used-replaced+s.inflight+length > q {
		return &StorageError{Length: length, Quota: q, Used: s.used + s.inflight}
	}
	if s.lim.Reserve > 0 {
		if free, ok := freeSpace(s.dir); ok && free-s.inflight-length < s.lim.Reserve {
			return &StorageError{Length: length, Free: max(0, free-s.inflight), Reserve: s.lim.Reserve}
		}
	}
	s.inflight += length
	return nil
}

func (s *FS) release(length int64) {
	s.mu.Lock()
	s.inflight -= length
	s.mu.Unlock()
}

func (s *FS) path(d string) string { return filepath.Join(s.dir, d[:2], d) }

func (s *FS) Put(ctx context.Context, digest string, length int64, r io.Reader) (err error) {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	if length < 0 {
		return fmt.Errorf("%w: negative length %d", ErrMismatch, length)
	}
	if err := s.reserve(digest, length); err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	defer s.release(length)
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// One byte more than expected reveals an over-long body without
	// reading an endless one.
	// Write-behind starts the disk writes while the upload continues, so
	// the fsync below waits only for the tail.
	n, err := pipeCopy(io.MultiWriter(h, atomicfile.WriteBehind(tmp)), io.LimitReader(ctxReader{ctx, r}, length+1))
	if err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if n != length {
		return fmt.Errorf("%w: blob %s: got %s bytes, expected %d", ErrMismatch, digest, countString(n, length), length)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: content hashes to %s, expected %s", ErrMismatch, got, digest)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	dst := s.path(digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// Under the lock, so that ExpireIfOlder never removes a blob that
	// was stored again since it looked.
	s.mu.Lock()
	defer s.mu.Unlock()
	old, statErr := os.Stat(dst)
	if err := atomicfile.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	if statErr == nil {
		s.used -= old.Size()
		s.count--
	}
	s.used += length
	s.count++
	return nil
}

// CleanTemp removes the temporary files of uploads that never finished
// (a killed process leaves them; a failed Put removes its own) last
// written more than olderThan ago, and returns how many it removed. With
// olderThan 0 it removes all of them, which is right only when no Put is
// running: when the server starts. An upload that is running writes its
// file continually, so a file untouched for long is abandoned.
func (s *FS) CleanTemp(olderThan time.Duration) (int, error) {
	dir := filepath.Join(s.dir, "tmp")
	es, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), "put-") {
			continue
		}
		if olderThan > 0 {
			fi, err := e.Info()
			if err != nil || fi.ModTime().After(cutoff) {
				continue
			}
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			n++
		} else if !errors.Is(err, fs.ErrNotExist) {
			return n, err
		}
	}
	return n, nil
}

func countString(n, length int64) string {
	if n > length {
		return "more"
	}
	return fmt.Sprint(n)
}

func (s *FS) Open(ctx context.Context, digest string) (Reader, error) {
	if err := CheckDigest(digest); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(digest))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileReader{File: f, size: fi.Size()}, nil
}

func (s *FS) Stat(ctx context.Context, digest string) (int64, error) {
	if err := CheckDigest(digest); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.path(digest))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("%w: %s", ErrNotFound, digest)
		}
		return 0, err
	}
	return fi.Size(), nil
}

func (s *FS) Delete(ctx context.Context, digest string) error {
	_, err := s.ExpireIfOlder(digest, time.Time{})
	return err
}

// ExpireIfOlder removes a blob unless it was stored at or after before
// (the zero time removes it whatever its age), and says whether it
// removed it. A blob stored again while a caller decided to expire it is
// kept.
func (s *FS) ExpireIfOlder(digest string, before time.Time) (bool, error) {
	if err := CheckDigest(digest); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if !before.IsZero() && !fi.ModTime().Before(before) {
		return false, nil
	}
	if err := os.Remove(s.path(digest)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	s.used -= fi.Size()
	s.count--
	return true, nil
}

type fileReader struct {
	*os.File
	size int64
}

func (f *fileReader) Size() int64 { return f.size }

// ctxReader stops a long copy when the request is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// pipeCopy copies r to w on two goroutines: this one reads r (for an
// upload, that is receiving and decrypting TLS) while the other writes
// what was read to w (hashing it and writing it to disk), so the two run
// on two cores at once instead of taking turns. It holds pipeDepth
// buffers of pipeBuf bytes. It stops at r's EOF or the first error; a
// write error is returned in preference to the read error it causes.
func pipeCopy(w io.Writer, r io.Reader) (int64, error) {
	free := make(chan []byte, pipeDepth)
	full := make(chan []byte, pipeDepth)
	for range pipeDepth {
		free <- make([]byte, pipeBuf)
	}
	writeErr := make(chan error, 1)
	stop := make(chan struct{}) // closed when the writer fails
	go func() {
		var err error
		for b := range full {
			if err == nil {
				if _, err = w.Write(b); err != nil {
					close(stop)
				}
			}
			free <- b[:cap(b)]
		}
		writeErr <- err
	}()
	var n int64
	var readErr error
	for readErr == nil {
		var b []byte
		select {
		case b = <-free:
		case <-stop:
			readErr = errWriterStopped
			continue
		}
		k, err := io.ReadFull(r, b)
		n += int64(k)
		if k > 0 {
			full <- b[:k]
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			readErr = io.EOF
		case err != nil:
			readErr = err
		}
	}
	close(full)
	if err := <-writeErr; err != nil {
		return n, err
	}
	if readErr != io.EOF {
		return n, readErr
	}
	return n, nil
}

const (
	pipeBuf   = 1 << 20
	pipeDepth = 3
)

var errWriterStopped = errors.New("writer failed")

var _ Store = (*FS)(nil)
