// Package bundle reads and writes offline bundles: one file that carries a
// release's image, its chunk index and every metadata file needed to verify
// it without a network (the root chain, timestamp, snapshot, targets and
// the product role).
//
// A bundle is a POSIX tar stream with a fixed member order, so a reader can
// verify all metadata and the index before the first image byte arrives and
// then stream the image in constant memory:
//
//	rampart-bundle.json           {"format":2,"target":"P/V/F","role":"P"}
//	metadata/1.root.json … N.root.json   consecutive root versions from 1
//	metadata/timestamp.json
//	metadata/snapshot.json
//	metadata/targets.json
//	metadata/ROLE.json            the delegated role that signs the target
//	log-proof.json                format 2 only: the release's statement and
//	                              inclusion proof, as the server's
//	                              /api/v1/log/proof answers them
//	index                         the chunk index
//	image                         the image itself
//
// Format 1 is the same without log-proof.json: a bundle made without the
// server. Devices refuse it unless told not to require the log.
//
// The reader treats every byte as hostile: member names, order, types and
// sizes are checked against this layout before a member's body is read,
// every metadata member is bounded and all of them share one budget, and
// nothing but the end-of-archive blocks and their zero padding may follow
// the image. It keeps no member longer than it takes to check it. Verify
// is the whole check, in the bundle's member order, for every program
// that reads bundles (rampart verify, rampart-agent install).
package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/strictjson"
	"github.com/rampartfw/rampart/internal/verify"
)

// Limits on untrusted input.
const (
	MaxManifest = 4 << 10
	MaxMetadata = 8 << 20
	MaxIndex    = 64 << 20
	MaxLogProof = 64 << 10
	MaxRoots    = 256
	// MaxMetadataTotal bounds everything before the index: the manifest,
	// every root (skipped ones too), the timestamp, snapshot, targets,
	// product role and log proof, headers included. A bundle that fills
	// every member to its own limit is refused once it passes this, so
	// reading its metadata never costs more than this in time, and the
	// verifier never holds more than one member of it at a time.
	MaxMetadataTotal = 16 << 20
	// maxTrailer bounds the zero padding accepted after the archive end.
	maxTrailer = 64 << 10
)

// Errors a reader returns, each wrapped with detail.
var (
	ErrMalformed = errors.New("malformed bundle")
	ErrTruncated = errors.New("truncated bundle")
	ErrTrailing  = errors.New("data after the end of the bundle")
	ErrEscape    = errors.New("bundle member name escapes the bundle")
)

// Manifest is the first member.
type Manifest struct {
	Format int    `json:"format"`
	Target string `json:"target"`
	Role   string `json:"role"`
}

// Contents is everything in a bundle but the image bytes.
type Contents struct {
	Manifest
	Roots     [][]byte
	Timestamp []byte
	Snapshot  []byte
	Targets   []byte
	Delegated []byte
	LogProof  []byte // nil in a format 1 bundle
	Index     []byte
	ImageSize int64
}

// Write writes a bundle whose image is read from image (exactly
// c.ImageSize bytes).
func Write(w io.Writer, c *Contents, image io.Reader) error {
	tw := tar.NewWriter(w)
	add := func(name string, size int64, body io.Reader) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if size < 8<<30 {
			hdr.Format = tar.FormatUSTAR
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		n, err := io.Copy(tw, body)
		if err != nil {
			return fmt.Errorf("writing bundle member %s: %w", name, err)
		}
		if n != size {
			return fmt.Errorf("bundle member %s: wrote %d bytes, expected %d", name, n, size)
		}
		return nil
	}
	addBytes := func(name string, b []byte) error { return add(name, int64(len(b)), strings.NewReader(string(b))) }
	m := c.Manifest
	m.Format = 1
	if c.LogProof != nil {
		m.Format = 2
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := addBytes("rampart-bundle.json", mb); err != nil {
		return err
	}
	for i, r := range c.Roots {
		if err := addBytes(fmt.Sprintf("metadata/%d.root.json", i+1), r); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{
		{"metadata/timestamp.json", c.Timestamp},
		{"metadata/snapshot.json", c.Snapshot},
		{"metadata/targets.json", c.Targets},
		{"metadata/" + c.Role + ".json", c.Delegated},
		{"log-proof.json", c.LogProof},
		{"index", c.Index},
	} {
		if f.name == "log-proof.json" && c.LogProof == nil {
			continue
		}
		if err := addBytes(f.name, f.b); err != nil {
			return err
		}
	}
	if err := add("image", c.ImageSize, image); err != nil {
		return err
	}
	return tw.Close()
}

// Reader reads a bundle one member at a time, in the bundle's order, and
// keeps none of them: NewReader reads the manifest, then NextRoot (until it
// reports no more roots), Metadata for the timestamp, snapshot, targets and
// product role, LogProof, Index, Image and Finish. Verify drives it; it is
// exported for tools and tests that need the structure without the trust
// decisions.
//
// Every member is checked against the layout before its body is read (name,
// type, declared size against its limit and against MaxMetadataTotal), so a
// hostile header costs at most its own block. Errors wrap ErrMalformed,
// ErrTruncated, ErrEscape or ErrTrailing; a failing medium is a *ReadError.
type Reader struct {
	Manifest
	t     *tarReader
	ahead *header // the member after the roots, read to find where they end
	roots int64
	image *header
}

// NewReader reads and checks the manifest.
func NewReader(r io.Reader) (*Reader, error) {
	br := &Reader{t: &tarReader{r: r}}
	mb, err := br.metadata("rampart-bundle.json", MaxManifest)
	if err != nil {
		return nil, err
	}
	// The strict decoder: a case variant of a member name ("FORMAT") or
	// anything after the first value would be read differently by another
	// parser.
	if err := strictjson.Unmarshal(mb, &br.Manifest); err != nil {
		return nil, fmt.Errorf("%w: rampart-bundle.json: %v", ErrMalformed, err)
	}
	if br.Format != 1 && br.Format != 2 {
		return nil, fmt.Errorf("%w: unsupported bundle format %d", ErrMalformed, br.Format)
	}
	product, _, _, err := release.ParseTargetPath(br.Target)
	if err != nil {
		return nil, fmt.Errorf("%w: rampart-bundle.json: %v", ErrMalformed, err)
	}
	if br.Role != product {
		return nil, fmt.Errorf("%w: rampart-bundle.json names role %s for a target of product %s", ErrMalformed, quote(br.Role), quote(product))
	}
	return br, nil
}

// header reads the next member's header; want names the member expected,
// for the message when the archive ends instead.
func (br *Reader) header(want string) (*header, error) {
	if h := br.ahead; h != nil {
		br.ahead = nil
		return h, nil
	}
	h, err := br.t.next()
	if errors.Is(err, errEnd) {
		return nil, fmt.Errorf("%w: the archive ends before the image (expected member %s)", ErrTruncated, want)
	}
	return h, err
}

// named reads the next header, which must be want's.
func (br *Reader) named(want string) (*header, error) {
	h, err := br.header(want)
	if err != nil {
		return nil, err
	}
	if h.name != want {
		return nil, fmt.Errorf("%w: expected member %s, found %s", ErrMalformed, want, quote(h.name))
	}
	return h, nil
}

// budget refuses a metadata member over its own limit or one that would
// take the metadata past MaxMetadataTotal, before its body is read.
func budget(h *header, limit int64) error {
	if h.size > limit {
		return fmt.Errorf("%w: member %s is %d bytes, the limit is %d", ErrMalformed, h.name, h.size, limit)
	}
	if h.offset+h.size > MaxMetadataTotal {
		return fmt.Errorf("%w: member %s ends at byte %d: the metadata of a bundle may take at most %d bytes", ErrMalformed, h.name, h.offset+h.size, MaxMetadataTotal)
	}
	return nil
}

func (br *Reader) metadata(name string, limit int64) ([]byte, error) {
	h, err := br.named(name)
	if err != nil {
		return nil, err
	}
	if err := budget(h, limit); err != nil {
		return nil, err
	}
	return br.t.readAll(h.size, "member "+h.name, nil)
}

// NextRoot reads the next root member. keep says, from the version in the
// member's name, whether its body is wanted: one that is not (a version
// the verifier already trusts) is skipped unread. ok is false once the
// members after the roots begin; raw is nil for a skipped root.
func (br *Reader) NextRoot(keep func(version int64) bool) (version int64, raw []byte, ok bool, err error) {
	want := fmt.Sprintf("metadata/%d.root.json", br.roots+1)
	h, err := br.header(want)
	if err != nil {
		return 0, nil, false, err
	}
	if h.name != want {
		if br.roots == 0 {
			return 0, nil, false, fmt.Errorf("%w: expected member %s, found %s", ErrMalformed, want, quote(h.name))
		}
		br.ahead = h
		return 0, nil, false, nil
	}
	if br.roots == MaxRoots {
		return 0, nil, false, fmt.Errorf("%w: more than %d root versions", ErrMalformed, MaxRoots)
	}
	if err := budget(h, MaxMetadata); err != nil {
		return 0, nil, false, err
	}
	br.roots++
	if !keep(br.roots) {
		return br.roots, nil, true, nil // the next header skips the body
	}
	raw, err = br.t.readAll(h.size, "member "+h.name, nil)
	return br.roots, raw, err == nil, err
}

// Metadata reads the next member, which must be name: the timestamp,
// snapshot, targets or product role (metadata/ROLE.json).
func (br *Reader) Metadata(name string) ([]byte, error) {
	return br.metadata(name, MaxMetadata)
}

// LogProof reads log-proof.json in a format 2 bundle (an empty member is
// returned as a non-nil empty slice, for the verifier to refuse); it reads
// nothing and returns nil in a format 1 bundle.
func (br *Reader) LogProof() ([]byte, error) {
	if br.Format != 2 {
		return nil, nil
	}
	b, err := br.metadata("log-proof.json", MaxLogProof)
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

// Index reads the chunk index, which must be length bytes (its signed
// length) with the SHA-256 sum (its signed hash): a member of another size
// is refused before it is read, and the hash is checked as it is read.
// Both refusals are *verify.Error of class mismatch.
func (br *Reader) Index(length int64, sum []byte) ([]byte, error) {
	return br.index(length, sum)
}

// index is Index; a negative length (tests, fuzzing) takes any size up to
// MaxIndex and a nil sum skips the hash.
func (br *Reader) index(length int64, sum []byte) ([]byte, error) {
	h, err := br.named("index")
	if err != nil {
		return nil, err
	}
	if h.size > MaxIndex {
		return nil, fmt.Errorf("%w: member index is %d bytes, the limit is %d", ErrMalformed, h.size, MaxIndex)
	}
	if length >= 0 && h.size != length {
		return nil, &verify.Error{Class: verify.Mismatch, Msg: fmt.Sprintf("chunk index is %d bytes, signed metadata says %d", h.size, length)}
	}
	hash := sha256.New()
	b, err := br.t.readAll(h.size, "member index", hash)
	if err != nil {
		return nil, err
	}
	if got := hash.Sum(nil); sum != nil && !bytes.Equal(got, sum) {
		return nil, &verify.Error{Class: verify.Mismatch, Msg: fmt.Sprintf("chunk index sha256 %x differs from the signed %x", got, sum)}
	}
	return b, nil
}

// Image reads the image member's header and returns its size and its
// offset in the bundle; ImageReader then yields its bytes.
func (br *Reader) Image() (size, offset int64, err error) {
	h, err := br.named("image")
	if err != nil {
		return 0, 0, err
	}
	br.image = h
	return h.size, h.offset, nil
}

// ImageReader reads the image member (after Image). It ends at the size
// the header declares; a file cut inside it is ErrTruncated.
func (br *Reader) ImageReader() io.Reader { return br.t }

// Finish checks that the archive ends after the image: the two
// end-of-archive blocks, then nothing but at most 64 KiB of zero padding.
// The rest of the image, if unread, is skipped.
func (br *Reader) Finish() error {
	if br.image == nil {
		return fmt.Errorf("%w: Finish before the image", ErrMalformed)
	}
	return br.t.finish()
}

// Offset is how many bytes of the bundle were read.
func (br *Reader) Offset() int64 { return br.t.off }

// ReadError is a failure to read the bundle (a failing medium, a
// directory): the environment's fault, not the bundle's, so never a
// refusal.
type ReadError struct {
	Offset int64
	Err    error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("reading the bundle failed at offset %d: %v", e.Offset, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// FailureKind makes a read error an environment failure (exit 3).
func (e *ReadError) FailureKind() failure.Kind { return failure.Environment }

// FailureHint says what to do.
func (e *ReadError) FailureHint() string {
	return "the bundle could not be read; this is not a refusal: check the medium, or copy the bundle to another one, and try again"
}

func escapes(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.IndexByte(name, 0) >= 0 {
		return true
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return true
		}
	}
	return path.Clean(name) != name
}
