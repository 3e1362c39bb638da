package offlinerepo

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/release"
)

// ReleaseOptions describe a new release.
type ReleaseOptions struct {
	Image           string // path of the image file
	Product         string
	Version         string
	SecurityVersion uint64
	Hardware        []string
	// Filename is the last element of the target path; default: the
	// image's base name.
	Filename string
	// LowerSecurityVersionReason allows a security version below the
	// product's highest one and is recorded in the signed metadata.
	LowerSecurityVersionReason string
	ChunkSize                  int64
}

// AddedRelease describes what AddRelease staged.
type AddedRelease struct {
	Target string
	Length int64
	SHA256 string
	Meta   *release.Meta
	Chunks int
}

// AddRelease copies the image into the repository, cuts it into chunks,
// writes its chunk index, and adds the target to the product's role (staged,
// unsigned). The product's release signers sign it next.
func (r *Repo) AddRelease(opt ReleaseOptions) (*AddedRelease, error) {
	if opt.Filename == "" {
		opt.Filename = filepath.Base(opt.Image)
	}
	if opt.ChunkSize == 0 {
		opt.ChunkSize = chunkindex.DefaultChunkSize
	}
	meta := &release.Meta{
		Product:                    opt.Product,
		Version:                    opt.Version,
		SecurityVersion:            opt.SecurityVersion,
		HardwareIDs:                opt.Hardware,
		Created:                    r.now(),
		LowerSecurityVersionReason: opt.LowerSecurityVersionReason,
		// Placeholders until the index exists; Validate runs again below.
		Index: release.IndexRef{Length: 1, SHA256: hex.EncodeToString(make([]byte, 32)), ChunkSize: opt.ChunkSize},
	}
	if err := meta.Validate(); err != nil {
		return nil, err
	}
	if err := release.ValidateFilename(opt.Filename); err != nil {
		return nil, err
	}
	target := release.TargetPath(opt.Product, opt.Version, opt.Filename)
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	if s.delegation(opt.Product) == nil {
		return nil, fmt.Errorf("%w %q: product %s is not delegated yet (rampart repo delegate)", ErrUnknownRole, opt.Product, opt.Product)
	}
	role := s.roles[opt.Product]
	var highest uint64
	for path, tf := range role.Signed.Targets {
		m, err := release.FromTarget(path, tf)
		if err != nil {
			return nil, fmt.Errorf("existing target %s: %w", path, err)
		}
		if m.Version == opt.Version {
			return nil, fmt.Errorf("release %s %s %w (%s); versions are immutable, use a new version", opt.Product, opt.Version, ErrExists, path)
		}
		highest = max(highest, m.SecurityVersion)
	}
	if opt.SecurityVersion < highest && opt.LowerSecurityVersionReason == "" {
		return nil, fmt.Errorf("%w: %s already has security version %d, this release says %d (devices would refuse it; to publish it anyway give --allow-lower-security-version REASON)", ErrSecurityLower, opt.Product, highest, opt.SecurityVersion)
	}
	if opt.SecurityVersion >= highest && opt.LowerSecurityVersionReason != "" {
		return nil, fmt.Errorf("%w: --allow-lower-security-version given but %d is not below the highest security version %d", ErrBadInput, opt.SecurityVersion, highest)
	}

	if err := os.MkdirAll(r.blobDir(), 0o755); err != nil {
		return nil, err
	}
	imgBlob, existed, ix, err := r.ingest(opt.Image, opt.ChunkSize)
	if err != nil {
		return nil, err
	}
	var cleanup []string
	if !existed {
		// Another staged release with the same content owns an existing blob.
		cleanup = append(cleanup, imgBlob)
	}
	defer func() {
		for _, p := range cleanup {
			os.Remove(p)
		}
	}()
	ixBytes, err := ix.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ixHash := sha256Hex(ixBytes)
	ixBlob := r.blobPath(ixHash)
	if _, err := os.Stat(ixBlob); err != nil {
		if err := atomicfile.WriteFile(ixBlob, ixBytes, 0o644); err != nil {
			return nil, err
		}
		cleanup = append(cleanup, ixBlob)
	}
	meta.Index = release.IndexRef{Length: int64(len(ixBytes)), SHA256: ixHash, ChunkSize: ix.ChunkSize}
	if err := meta.Validate(); err != nil {
		return nil, err
	}
	custom, err := meta.Custom()
	if err != nil {
		return nil, err
	}
	tf := metadata.TargetFile()
	tf.Path = target
	tf.Length = ix.ImageLength
	tf.Hashes = metadata.Hashes{"sha256": ix.ImageHash[:]}
	tf.Custom = custom
	role = r.stageTargets(s, opt.Product)
	role.Signed.Targets[target] = tf
	if err := r.saveStaged(s, opt.Product); err != nil {
		return nil, err
	}
	cleanup = nil
	return &AddedRelease{Target: target, Length: ix.ImageLength, SHA256: hex.EncodeToString(ix.ImageHash[:]), Meta: meta, Chunks: len(ix.Chunks)}, nil
}

// ingest copies the image into the blob store and indexes it in the same
// pass, so that what was hashed is exactly what will be published even if
// the source changes meanwhile.
func (r *Repo) ingest(image string, chunkSize int64) (blob string, existed bool, ix *chunkindex.Index, err error) {
	src, err := os.Open(image)
	if err != nil {
		return "", false, nil, err
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil {
		return "", false, nil, err
	} else if !fi.Mode().IsRegular() {
		return "", false, nil, fmt.Errorf("%w: %s is not a regular file", ErrBadInput, image)
	} else if fi.Size() == 0 {
		return "", false, nil, fmt.Errorf("%w: %s is empty", ErrBadInput, image)
	}
	tmp, err := os.CreateTemp(r.blobDir(), ".ingest-*")
	if err != nil {
		return "", false, nil, err
	}
	ok := false
	defer func() {
		tmp.Close()
		if !ok {
			os.Remove(tmp.Name())
		}
	}()
	// One read of the source feeds the copy and both hash passes, so the
	// bytes indexed are exactly the bytes stored, and the copy overlaps the
	// hashing instead of adding to it.
	//
	// The blob is not fsynced here: nothing refers to it until publish,
	// which verifies every staged blob against its index and fsyncs it
	// before the new metadata is written. Write-behind starts the disk
	// writes now so that publish's fsync finds little left to do.
	ix, err = chunkindex.Copy(atomicfile.WriteBehind(tmp), src, chunkSize)
	if err != nil {
		return "", false, nil, fmt.Errorf("indexing %s: %w", image, err)
	}
	dst := r.blobPath(hex.EncodeToString(ix.ImageHash[:]))
	if _, err := os.Stat(dst); err == nil {
		return dst, true, ix, nil // the deferred cleanup drops our copy
	}
	if err := atomicfile.Rename(tmp.Name(), dst); err != nil {
		return "", false, nil, err
	}
	ok = true
	return dst, false, ix, nil
}
