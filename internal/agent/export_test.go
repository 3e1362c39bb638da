package agent

import (
	"context"
	"io"
	"os"

	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/verify"
)

// SetProgressEvery changes how many chunks go between progress syncs, for
// tests that need batches with images of a few chunks; it returns a func
// restoring the default.
func SetProgressEvery(n int) func() {
	old := progressEvery
	progressEvery = n
	return func() { progressEvery = old }
}

// InstallVerified runs the install step for res as if verification had
// returned it, with index as the chunk index and src as the image: tests
// use it to stand in for release signers who signed something that
// verification alone cannot catch.
func (a *Agent) InstallVerified(ctx context.Context, res *verify.Result, index []byte, src install.Source) (*Outcome, error) {
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	return a.install(ctx, st, releaseOf(res), "server", res, func(context.Context) ([]byte, error) { return index, nil }, src)
}

// SetBundleMedium makes InstallBundle read bundle files through wrap (a
// failing medium); it returns a func restoring the default.
func SetBundleMedium(wrap func(io.ReaderAt) io.ReaderAt) func() {
	old := bundleReader
	bundleReader = func(f *os.File) io.ReaderAt { return wrap(f) }
	return func() { bundleReader = old }
}

// NewBundleImageSource is the Source InstallBundle reads the image with:
// the size bytes at base in the bundle file r.
func NewBundleImageSource(r io.ReaderAt, base, size int64) install.Source {
	return &sectionSource{r: io.NewSectionReader(r, base, size), base: base}
}
