package bundle_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/bundle/bundletest"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/verify"
)

// trustedRoot is a signed version 1 root.
func trustedRoot(t testing.TB) []byte {
	t.Helper()
	priv, err := keys.Generate(keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	key, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	root := metadata.Root(time.Now().AddDate(1, 0, 0))
	for _, r := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if err := root.Signed.AddKey(key, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := root.Sign(keys.ForTUF(keys.InMemory(priv))); err != nil {
		t.Fatal(err)
	}
	b, err := root.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// zeros reads as n bytes of 'x' without holding them.
type filler struct{ n int64 }

func (f *filler) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), f.n)]
	for i := range p {
		p[i] = 'x'
	}
	f.n -= int64(len(p))
	return len(p), nil
}

// paddedRootsBundle streams the bundle of the issue: n root members, each
// the trusted root padded with an unsigned field (signatures cover
// "signed" only) to size bytes, then the rest of a bundle. It is written as it is read,
// so the test holds none of it.
func paddedRootsBundle(root []byte, n int, size int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		w := &bundletest.Writer{W: pw}
		w.File("rampart-bundle.json", []byte(`{"format":1,"target":"acme-gw/2.4.1/fw.img","role":"acme-gw"}`))
		prefix, suffix := `{"padding":"`, `",`+string(root[1:])
		pad := size - int64(len(prefix)+len(suffix))
		for i := 1; i <= n && w.Err == nil; i++ {
			body := io.MultiReader(strings.NewReader(prefix), &filler{pad}, strings.NewReader(suffix))
			w.FileFrom(fmt.Sprintf("metadata/%d.root.json", i), int64(len(prefix))+pad+int64(len(suffix)), body)
		}
		for _, name := range []string{"metadata/timestamp.json", "metadata/snapshot.json", "metadata/targets.json", "metadata/acme-gw.json", "index", "image"} {
			w.File(name, []byte("{}"))
		}
		w.End()
		pw.CloseWithError(w.Err)
	}()
	return pr
}

// peakHeap runs f and returns the most heap in use seen while it ran and
// the bytes it allocated in all.
func peakHeap(f func()) (peak, total uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base, allocs := m.HeapAlloc, m.TotalAlloc
	var max atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > max.Load() {
				max.Store(m.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	runtime.ReadMemStats(&m)
	p := max.Load()
	if p < base {
		p = base
	}
	return p - base, m.TotalAlloc - allocs
}

// The bundle of the issue that made both programs take 1.27 GB and 45 s:
// 64 root members of 8 MiB each. The first is the trusted version and is
// skipped unread; the metadata budget refuses the bundle before another 8
// MiB is read. Smaller padding under the budget is parsed one root at a
// time. Memory stays within a few MiB beyond one member, whatever the
// bundle carries.
func TestPaddedRootsMemory(t *testing.T) {
	root := trustedRoot(t)
	for _, tc := range []struct {
		n     int
		pad   int64
		class verify.Class
		msg   string
		// limits on the peak heap and on all bytes allocated
		peak, total uint64
	}{
		{64, bundle.MaxMetadata, verify.Malformed, "the metadata of a bundle may take at most", 4 << 20, 8 << 20},
		{3, 4 << 20, verify.Rollback, "root version 2", 32 << 20, 48 << 20},
	} {
		t.Run(fmt.Sprintf("%d roots of %d MiB", tc.n, tc.pad>>20), func(t *testing.T) {
			var err error
			start := time.Now()
			peak, total := peakHeap(func() {
				_, err = bundle.Verify(paddedRootsBundle(root, tc.n, tc.pad), root, bundle.Options{Name: "padded.rbundle"})
			})
			t.Logf("peak heap %.1f MiB, allocated %.1f MiB, %v: %v", float64(peak)/(1<<20), float64(total)/(1<<20), time.Since(start), err)
			var ve *verify.Error
			if !errors.As(err, &ve) || ve.Class != tc.class || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want a %s refusal containing %q", err, tc.class, tc.msg)
			}
			if peak > tc.peak || total > tc.total {
				t.Fatalf("peak heap %d bytes (limit %d), allocated %d (limit %d)", peak, tc.peak, total, tc.total)
			}
		})
	}
}

// TestWritePaddedRoots writes the 64-root bundle to $BUNDLE_WRITE_PADDED,
// for measuring a binary's peak RSS on it (docs/performance.md).
func TestWritePaddedRoots(t *testing.T) {
	out := os.Getenv("BUNDLE_WRITE_PADDED")
	if out == "" {
		t.Skip("set BUNDLE_WRITE_PADDED=FILE to write the 64-root bundle and its trusted root (FILE.root.json)")
	}
	root := trustedRoot(t)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, paddedRootsBundle(root, 64, 8<<20)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out+".root.json", root, 0o644); err != nil {
		t.Fatal(err)
	}
}
