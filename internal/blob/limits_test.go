package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/blob"
)

func randomBlob(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.Read(b)
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// countingReader counts what was read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A blob that would pass the quota is refused before any of it is read,
// with an error that says so; uploads in progress count; what is already
// stored counts after a restart; removing a blob frees its room.
func TestQuota(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := blob.NewLimitedFS(dir, blob.Limits{Quota: 3000})
	if err != nil {
		t.Fatal(err)
	}
	a, da := randomBlob(2000)
	if err := s.Put(ctx, da, 2000, bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	b, db := randomBlob(1001)
	cr := &countingReader{r: bytes.NewReader(b)}
	err = s.Put(ctx, db, 1001, cr)
	var se *blob.StorageError
	if !errors.Is(err, blob.ErrInsufficientStorage) || !errors.As(err, &se) || se.Quota != 3000 || se.Used != 2000 || se.Length != 1001 {
		t.Fatalf("over the quota: %v", err)
	}
	if cr.n.Load() != 0 {
		t.Fatalf("read %d bytes of a refused blob", cr.n.Load())
	}
	// Storing the same blob again takes no more room.
	if err := s.Put(ctx, da, 2000, bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	if used, n := s.Usage(); used != 2000 || n != 1 {
		t.Fatalf("usage %d bytes in %d blobs", used, n)
	}
	// Reopened, it counts what is stored.
	s2, err := blob.NewLimitedFS(dir, blob.Limits{Quota: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if used, n := s2.Usage(); used != 2000 || n != 1 {
		t.Fatalf("reopened: usage %d bytes in %d blobs", used, n)
	}
	if err := s2.Delete(ctx, da); err != nil {
		t.Fatal(err)
	}
	if err := s2.Put(ctx, db, 1001, bytes.NewReader(b)); err != nil {
		t.Fatalf("after freeing room: %v", err)
	}
	// An upload in progress holds its room.
	c, dc := randomBlob(1500)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- s2.Put(ctx, dc, 1500, pr) }()
	pw.Write(c[:10])
	d, dd := randomBlob(1000)
	if err := s2.Put(ctx, dd, 1000, bytes.NewReader(d)); !errors.Is(err, blob.ErrInsufficientStorage) {
		t.Fatalf("beside an upload in progress: %v", err)
	}
	pw.Write(c[10:])
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The reserve: an upload that would leave the file system with less free
// space than the reserve is refused before it is read.
func TestDiskReserve(t *testing.T) {
	ctx := context.Background()
	s, err := blob.NewLimitedFS(t.TempDir(), blob.Limits{Reserve: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	b, d := randomBlob(10)
	err = s.Put(ctx, d, 10, bytes.NewReader(b))
	var se *blob.StorageError
	if !errors.As(err, &se) || se.Reserve != 1<<62 || se.Free <= 0 {
		t.Fatalf("%v", err)
	}
	t.Log(err)
}

// ExpireIfOlder removes a blob by age, and keeps one stored again since.
func TestExpireIfOlder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, d := randomBlob(100)
	s.Put(ctx, d, 100, bytes.NewReader(b))
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(filepath.Join(dir, d[:2], d), old, old)
	var seen []blob.Info
	s.Walk(ctx, func(i blob.Info) error { seen = append(seen, i); return nil })
	if len(seen) != 1 || seen[0].Digest != d || seen[0].Size != 100 || !seen[0].ModTime.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("walk: %+v", seen)
	}
	cutoff := time.Now().Add(-24 * time.Hour)
	// Stored again after the caller looked: kept.
	s.Put(ctx, d, 100, bytes.NewReader(b))
	if gone, err := s.ExpireIfOlder(d, cutoff); gone || err != nil {
		t.Fatalf("a fresh blob expired: %v %v", gone, err)
	}
	os.Chtimes(filepath.Join(dir, d[:2], d), old, old)
	if gone, err := s.ExpireIfOlder(d, cutoff); !gone || err != nil {
		t.Fatalf("an old blob kept: %v %v", gone, err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after expiry: %v", err)
	}
	if used, n := s.Usage(); used != 0 || n != 0 {
		t.Fatalf("usage %d in %d", used, n)
	}
}
