package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/mod/semver"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

// InstallBundle is the out-of-band update from a bundle file (a USB stick):
// the image repository's checks against the device's trusted image root
// (the cached one, else the shipped one), hardware id, security counter,
// log proof and chunk index, then the same install, trial boot and commit
// as an online update. There is no director here, so director freshness is
// not checked; offline.policy decides whether such installs are allowed at
// all.
//
// The bundle is local, so it is checked whole before the device changes:
// a first pass reads it front to back through bundle.Verify, the reader and
// the order of checks rampart verify uses (every chunk, and the end of the
// file, included), and only a bundle that passes is installed, in a second
// pass over the same file. A refused bundle therefore leaves slots, boot
// order, releases and pending state as they were; only the refusal is
// recorded (last error, report). The second pass checks every chunk again
// before writing it: a medium that changes its answers between the passes
// can make the install fail, never write an unverified byte.
func (a *Agent) InstallBundle(ctx context.Context, path string) (*Outcome, error) {
	if a.Config.Offline.Policy == OfflineNever {
		return nil, fmt.Errorf("%w: offline.policy is never", ErrOfflineRefused)
	}
	f, size, err := openBundle(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	if out, err := a.settle(ctx, st, false); out != nil || err != nil {
		return out, err
	}
	root, err := uptane.TrustedImageRoot(a.TUFDir, a.ImageRoot)
	if err != nil {
		return nil, err
	}
	ra := bundleReader(f)
	v, err := bundle.Verify(io.NewSectionReader(ra, 0, size), root, bundle.Options{
		Options: verify.Options{Hardware: a.Config.Device.HardwareID, MinSecurityVersion: st.SecurityCounter, Time: a.now()},
		Name:    path,
		Workers: a.Config.Download.Workers,
		Log: func(proof []byte, res *verify.Result) error {
			if proof == nil {
				if !a.Config.Offline.LogRequired() {
					return nil
				}
				return &verify.Error{Class: verify.NotLogged, Role: "log",
					Msg: fmt.Sprintf("%s carries no proof that %s is in the transparency log: make the bundle with rampart bundle --server URL --ca FILE (offline.require_log = false accepts it, for fleets without a log)", path, res.Target)}
			}
			return uptane.CheckOfflineLog(a.uptaneConfig(st), proof, res)
		},
	})
	if err != nil {
		return nil, a.refusedOrFailed(ctx, st, err)
	}
	res := v.Result
	rel := releaseOf(res)
	if st.Running != nil && st.Running.SHA256 == rel.SHA256 {
		return &Outcome{Action: "up-to-date", Target: rel.Target}, nil
	}
	if a.Config.Offline.Policy == OfflineNewer && !newer(rel, st.Running) {
		return nil, fmt.Errorf("%w: %s (version %s, security version %d) is not newer than the running %s (version %s, security version %d); offline.policy = \"always\" allows it",
			ErrOfflineRefused, rel.Target, rel.Version, rel.SecurityVersion, st.Running.Target, st.Running.Version, st.Running.SecurityVersion)
	}
	src := &sectionSource{r: io.NewSectionReader(ra, v.ImageOffset, v.ImageSize), base: v.ImageOffset}
	index := func(context.Context) ([]byte, error) { return v.IndexBytes, nil }
	return a.install(ctx, st, rel, "bundle", res, index, src)
}

// bundleReader is how the bundle file is read; tests put a failing medium
// in its place.
var bundleReader = func(f *os.File) io.ReaderAt { return f }

// UsageError is a command line the agent cannot act on (a BUNDLE that is
// not a readable regular file): nothing was judged and nothing changed.
type UsageError struct {
	Err  error
	Hint string
}

func (e *UsageError) Error() string       { return e.Err.Error() }
func (e *UsageError) Unwrap() error       { return e.Err }
func (e *UsageError) FailureHint() string { return e.Hint }

// openBundle opens BUNDLE and returns its size. It must be a regular file:
// it is read twice (verified whole, then installed), and the install reads
// the image at offsets, which a pipe or a terminal cannot give. This is
// checked before anything is recorded.
func openBundle(path string) (*os.File, int64, error) {
	// O_NONBLOCK: opening a pipe without a writer would otherwise wait
	// for one; a regular file reads as usual.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, &UsageError{Err: err, Hint: "name the bundle file (rampart bundle writes one)"}
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", path, fileType(fi.Mode()))
	}
	if err != nil {
		f.Close()
		return nil, 0, &UsageError{Err: err, Hint: "name the bundle file itself: a bundle is read twice, checked whole before anything is written, so one on a pipe or a device must be copied to a file first"}
	}
	return f, fi.Size(), nil
}

func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// newer reports whether rel is newer than running by security version or
// by version (semver; a non-semver version never counts as newer).
func newer(rel Release, running *Release) bool {
	if running == nil {
		return true
	}
	if rel.SecurityVersion > running.SecurityVersion {
		return true
	}
	v, r := "v"+rel.Version, "v"+running.Version
	return semver.IsValid(v) && semver.IsValid(r) && semver.Compare(v, r) > 0
}

// sectionSource reads chunks of the image inside a bundle file. The bundle
// was verified whole before; a read that fails now (or finds the file
// shorter) is the medium's fault, reported as a *bundle.ReadError.
type sectionSource struct {
	r    *io.SectionReader
	base int64
}

func (s *sectionSource) ReadChunk(_ context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	if n, err := s.r.ReadAt(buf, c.Offset); err != nil && !(n == len(buf) && errors.Is(err, io.EOF)) {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("the bundle is shorter than when it was verified: %w", io.ErrUnexpectedEOF)
		}
		return nil, &bundle.ReadError{Offset: s.base + c.Offset + int64(n), Err: fmt.Errorf("chunk %d: %w", i, err)}
	}
	return buf, nil
}
