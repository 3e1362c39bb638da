package agent

import (
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/mod/semver"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

// InstallBundle is the out-of-band update from a bundle file (a USB stick):
// the image repository's checks against the device's trusted image root
// (the cached one, else the shipped one), hardware id, security counter and
// chunk index, then the same install, trial boot and commit as an online
// update. There is no director here, so director freshness is not checked;
// offline.policy decides whether such installs are allowed at all.
func (a *Agent) InstallBundle(ctx context.Context, path string) (*Outcome, error) {
	if a.Config.Offline.Policy == OfflineNever {
		return nil, fmt.Errorf("%w: offline.policy is never", ErrOfflineRefused)
	}
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	if out, err := a.settle(ctx, st, false); out != nil || err != nil {
		return out, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// No read-ahead buffer: the count of bytes consumed is then exactly
	// the offset of the image in the file, which the installer reads at
	// random offsets.
	cr := &countingReader{r: f}
	br, err := bundle.NewReader(cr)
	if err != nil {
		return nil, a.refusedOrFailed(ctx, st, &verify.Error{Class: verify.Malformed, Msg: path, Err: err})
	}
	root, err := uptane.TrustedImageRoot(a.TUFDir, a.ImageRoot)
	if err != nil {
		return nil, err
	}
	res, err := verify.Target(root, verify.Metadata{
		Roots: br.Roots, Timestamp: br.Timestamp, Snapshot: br.Snapshot, Targets: br.Targets,
		Delegated: map[string][]byte{br.Role: br.Delegated},
	}, br.Target, verify.Options{Hardware: a.Config.Device.HardwareID, MinSecurityVersion: st.SecurityCounter, Time: a.now()})
	if err != nil {
		return nil, a.refusedOrFailed(ctx, st, err)
	}
	if br.LogProof == nil && a.Config.Offline.LogRequired() {
		return nil, a.refusedOrFailed(ctx, st, &verify.Error{Class: uptane.NotLogged, Role: "log",
			Msg: fmt.Sprintf("%s carries no proof that %s is in the transparency log: make the bundle with rampart bundle --server URL --ca FILE (offline.require_log = false accepts it, for fleets without a log)", path, res.Target)})
	}
	if br.LogProof != nil {
		if err := uptane.CheckOfflineLog(a.uptaneConfig(st), br.LogProof, res); err != nil {
			return nil, a.refusedOrFailed(ctx, st, err)
		}
	}
	if br.ImageSize != res.File.Length {
		return nil, a.refusedOrFailed(ctx, st, &verify.Error{Class: verify.Mismatch, Role: res.Role,
			Msg: fmt.Sprintf("the bundle's image is %d bytes, the signed length is %d", br.ImageSize, res.File.Length)})
	}
	rel := releaseOf(res)
	if st.Running != nil && st.Running.SHA256 == rel.SHA256 {
		return &Outcome{Action: "up-to-date", Target: rel.Target}, nil
	}
	if a.Config.Offline.Policy == OfflineNewer && !newer(rel, st.Running) {
		return nil, fmt.Errorf("%w: %s (version %s, security version %d) is not newer than the running %s (version %s, security version %d); offline.policy = \"always\" allows it",
			ErrOfflineRefused, rel.Target, rel.Version, rel.SecurityVersion, st.Running.Target, st.Running.Version, st.Running.SecurityVersion)
	}
	src := &sectionSource{r: io.NewSectionReader(f, cr.n, br.ImageSize)}
	index := func(context.Context) ([]byte, error) { return br.Index, nil }
	return a.install(ctx, st, rel, "bundle", res, index, src)
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

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// sectionSource reads chunks of the image inside a bundle file.
type sectionSource struct{ r *io.SectionReader }

func (s *sectionSource) ReadChunk(_ context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	if _, err := s.r.ReadAt(buf, c.Offset); err != nil {
		return nil, fmt.Errorf("bundle chunk %d: %w", i, err)
	}
	return buf, nil
}
