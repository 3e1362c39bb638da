// Package blobtest is the conformance suite every blob.Store implementation
// runs, so that the filesystem store and any later one (S3-compatible)
// behave the same way.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/rampartfw/rampart/internal/blob"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Run runs the suite against a fresh, empty store from newStore.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	ctx := context.Background()
	data := make([]byte, 3<<20+7)
	rand.Read(data)
	d := digest(data)

	t.Run("PutOpenStat", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		n, err := s.Stat(ctx, d)
		if err != nil || n != int64(len(data)) {
			t.Fatalf("Stat = %d, %v", n, err)
		}
		r, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) || r.Size() != int64(len(data)) {
			t.Fatalf("read back %d bytes, %v", len(got), err)
		}
		part := make([]byte, 1000)
		if _, err := r.ReadAt(part, 1<<20); err != nil || !bytes.Equal(part, data[1<<20:1<<20+1000]) {
			t.Fatalf("ReadAt: %v", err)
		}
	})
	t.Run("PutIsIdempotent", func(t *testing.T) {
		s := newStore(t)
		for i := 0; i < 2; i++ {
			if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("PutRefusesMismatch", func(t *testing.T) {
		s := newStore(t)
		bad := bytes.Clone(data)
		bad[100] ^= 1
		cases := map[string]struct {
			length int64
			body   []byte
		}{
			"wrong content": {int64(len(data)), bad},
			"short":         {int64(len(data)), data[:len(data)-1]},
			"long":          {int64(len(data)) - 1, data},
			"wrong length":  {int64(len(data)) + 5, data},
		}
		for name, c := range cases {
			if err := s.Put(ctx, d, c.length, bytes.NewReader(c.body)); !errors.Is(err, blob.ErrMismatch) {
				t.Errorf("%s: got %v, want ErrMismatch", name, err)
			}
			if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("%s: a mismatching blob was stored (%v)", name, err)
			}
		}
	})
	t.Run("EndlessBodyIsBounded", func(t *testing.T) {
		s := newStore(t)
		err := s.Put(ctx, d, 1<<20, endless{})
		if !errors.Is(err, blob.ErrMismatch) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("InvalidDigests", func(t *testing.T) {
		s := newStore(t)
		for _, bad := range []string{"", "abc", strings.Repeat("g", 64), strings.ToUpper(d), "../" + d[3:], d + "0"} {
			if err := s.Put(ctx, bad, 1, bytes.NewReader([]byte{1})); !errors.Is(err, blob.ErrInvalidDigest) {
				t.Errorf("Put(%q) = %v", bad, err)
			}
			if _, err := s.Open(ctx, bad); !errors.Is(err, blob.ErrInvalidDigest) {
				t.Errorf("Open(%q) = %v", bad, err)
			}
		}
	})
	t.Run("MissingAndDelete", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Open missing = %v", err)
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Fatalf("Delete missing = %v", err)
		}
		if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Stat after delete = %v", err)
		}
	})
	t.Run("EmptyBlob", func(t *testing.T) {
		s := newStore(t)
		e := digest(nil)
		if err := s.Put(ctx, e, 0, bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Stat(ctx, e); err != nil || n != 0 {
			t.Fatalf("%d %v", n, err)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, d, int64(len(data)), bytes.NewReader(data)); err == nil {
			t.Fatal("a cancelled Put succeeded")
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			t.Fatal("a cancelled Put stored the blob")
		}
	})
	t.Run("ConcurrentPuts", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Put(ctx, d, int64(len(data)), bytes.NewReader(data))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		r, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, data) {
			t.Fatal("concurrent puts corrupted the blob")
		}
	})
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}
