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
	// A blob larger than one part of a multipart upload (S3's parts are
	// at least 5 MiB) goes through every path of a streaming store: parts
	// sent while the next is read, the check at the end, the abort.
	big := make([]byte, 11<<20+13)
	rand.Read(big)
	bigD := digest(big)
	t.Run("LargePutAndRanges", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(ctx, bigD, int64(len(big)), bytes.NewReader(big)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Stat(ctx, bigD); err != nil || n != int64(len(big)) {
			t.Fatalf("Stat = %d, %v", n, err)
		}
		r, err := s.Open(ctx, bigD)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read back %d bytes, %v", len(got), err)
		}
		size := int64(len(big))
		for _, c := range []struct {
			off, n int64
			want   int64 // bytes ReadAt returns; fewer than n means io.EOF
		}{{0, 100, 100}, {5<<20 - 7, 20, 20}, {size - 10, 100, 10}, {size, 1, 0}, {size + 5, 1, 0}} {
			p := make([]byte, c.n)
			n, err := r.ReadAt(p, c.off)
			if int64(n) != c.want || !bytes.Equal(p[:n], big[min(c.off, size):min(c.off, size)+int64(n)]) {
				t.Errorf("ReadAt(%d bytes at %d) = %d, %v", c.n, c.off, n, err)
			}
			if c.want < c.n && err != io.EOF || c.want == c.n && err != nil {
				t.Errorf("ReadAt(%d bytes at %d): err %v", c.n, c.off, err)
			}
		}
		if _, err := r.Seek(6<<20+1, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 3000)
		if _, err := io.ReadFull(r, p); err != nil || !bytes.Equal(p, big[6<<20+1:6<<20+3001]) {
			t.Fatalf("Read after Seek: %v", err)
		}
		if _, err := r.Seek(-10, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		if tail, err := io.ReadAll(r); err != nil || !bytes.Equal(tail, big[len(big)-10:]) {
			t.Fatalf("Read of the tail: %d bytes, %v", len(tail), err)
		}
	})
	t.Run("LargeMismatch", func(t *testing.T) {
		s := newStore(t)
		bad := bytes.Clone(big)
		bad[len(bad)-1] ^= 1
		for name, c := range map[string]struct {
			length int64
			body   []byte
		}{
			"last byte wrong":            {int64(len(big)), bad},
			"one byte short":             {int64(len(big)), big[:len(big)-1]},
			"one byte long":              {int64(len(big)) - 1, big},
			"a part boundary short":      {int64(len(big)), big[:10<<20]},
			"endless after a large blob": {int64(len(big)), append(bytes.Clone(big), make([]byte, 6<<20)...)},
		} {
			if err := s.Put(ctx, bigD, c.length, bytes.NewReader(c.body)); !errors.Is(err, blob.ErrMismatch) {
				t.Errorf("%s: got %v, want ErrMismatch", name, err)
			}
			if _, err := s.Stat(ctx, bigD); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("%s: a mismatching blob was stored (%v)", name, err)
			}
		}
	})
	t.Run("CancelledMidway", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r := &hookReader{r: bytes.NewReader(big), at: 6 << 20, hook: func() error { cancel(); return nil }}
		if err := s.Put(cctx, bigD, int64(len(big)), r); err == nil {
			t.Fatal("a Put cancelled midway succeeded")
		}
		if _, err := s.Stat(ctx, bigD); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("a Put cancelled midway stored the blob (%v)", err)
		}
	})
	t.Run("ReaderFails", func(t *testing.T) {
		s := newStore(t)
		gone := errors.New("the client went away")
		for _, at := range []int{100, 6 << 20} {
			r := &hookReader{r: bytes.NewReader(big), at: at, hook: func() error { return gone }}
			if err := s.Put(ctx, bigD, int64(len(big)), r); !errors.Is(err, gone) {
				t.Errorf("failing after %d bytes: got %v, want the reader's error", at, err)
			}
			if _, err := s.Stat(ctx, bigD); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("failing after %d bytes: the blob was stored (%v)", at, err)
			}
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

// hookReader reads r and calls hook once at least at bytes have been
// read; a hook error ends the reads with it.
type hookReader struct {
	r    io.Reader
	at   int
	n    int
	hook func() error
	err  error
	done bool
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	if !h.done && h.n >= h.at {
		h.done = true
		if h.err = h.hook(); h.err != nil {
			return 0, h.err
		}
	}
	if !h.done && h.n+len(p) > h.at {
		p = p[:h.at-h.n]
	}
	n, err := h.r.Read(p)
	h.n += n
	return n, err
}
