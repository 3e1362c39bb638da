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
	"time"

	"github.com/rampartfw/rampart/internal/atomicfile"
)

// FS stores blobs as files under a directory, fanned out by the first two
// hex digits of their digest. A blob is written to a temporary file, hashed
// on the way, fsynced, and renamed into place only when it matches, so a
// crash or a bad upload never leaves a partial blob under a real name.
type FS struct {
	dir string
}

// NewFS returns a Store rooted at dir, creating it if needed.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	return &FS{dir: dir}, nil
}

func (s *FS) path(d string) string { return filepath.Join(s.dir, d[:2], d) }

func (s *FS) Put(ctx context.Context, digest string, length int64, r io.Reader) (err error) {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	if length < 0 {
		return fmt.Errorf("%w: negative length %d", ErrMismatch, length)
	}
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
	return atomicfile.Rename(tmp.Name(), dst)
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
	if err := CheckDigest(digest); err != nil {
		return err
	}
	if err := os.Remove(s.path(digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
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
