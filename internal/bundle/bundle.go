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
// sizes are checked against this layout, every metadata member is bounded,
// and nothing but the end-of-archive padding may follow the image.
package bundle

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/release"
)

// Limits on untrusted input.
const (
	MaxManifest = 4 << 10
	MaxMetadata = 8 << 20
	MaxIndex    = 64 << 20
	MaxLogProof = 64 << 10
	MaxRoots    = 256
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

// Reader reads a bundle. NewReader consumes everything before the image;
// Image then yields the image bytes and Finish checks the end of the stream.
type Reader struct {
	Contents
	src   io.Reader
	tr    *tar.Reader
	image io.Reader
}

// NewReader parses a bundle up to the start of its image.
func NewReader(r io.Reader) (*Reader, error) {
	br := &Reader{src: r, tr: tar.NewReader(r)}
	mb, err := br.member("rampart-bundle.json", MaxManifest)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(strings.NewReader(string(mb)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&br.Manifest); err != nil {
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
		return nil, fmt.Errorf("%w: rampart-bundle.json names role %q for a target of product %q", ErrMalformed, br.Role, product)
	}
	// Roots come first, consecutively from version 1; the first non-root
	// member must be the timestamp.
	var next *tar.Header
	for {
		hdr, err := br.header()
		if err != nil {
			return nil, err
		}
		want := fmt.Sprintf("metadata/%d.root.json", len(br.Roots)+1)
		if hdr.Name != want {
			if len(br.Roots) == 0 {
				return nil, fmt.Errorf("%w: expected member %s, found %q", ErrMalformed, want, hdr.Name)
			}
			next = hdr
			break
		}
		if len(br.Roots) == MaxRoots {
			return nil, fmt.Errorf("%w: more than %d root versions", ErrMalformed, MaxRoots)
		}
		b, err := br.body(hdr, MaxMetadata)
		if err != nil {
			return nil, err
		}
		br.Roots = append(br.Roots, b)
	}
	if br.Timestamp, err = br.bodyNamed(next, "metadata/timestamp.json", MaxMetadata); err != nil {
		return nil, err
	}
	if br.Snapshot, err = br.member("metadata/snapshot.json", MaxMetadata); err != nil {
		return nil, err
	}
	if br.Targets, err = br.member("metadata/targets.json", MaxMetadata); err != nil {
		return nil, err
	}
	if br.Delegated, err = br.member("metadata/"+br.Role+".json", MaxMetadata); err != nil {
		return nil, err
	}
	if br.Format == 2 {
		if br.LogProof, err = br.member("log-proof.json", MaxLogProof); err != nil {
			return nil, err
		}
		if br.LogProof == nil {
			br.LogProof = []byte{} // present, if empty: the verifier refuses it
		}
	}
	if br.Index, err = br.member("index", MaxIndex); err != nil {
		return nil, err
	}
	hdr, err := br.header()
	if err != nil {
		return nil, err
	}
	if hdr.Name != "image" {
		return nil, fmt.Errorf("%w: expected member image, found %q", ErrMalformed, hdr.Name)
	}
	br.ImageSize = hdr.Size
	br.image = &truncationReader{br.tr}
	return br, nil
}

// Image returns the image member's bytes. The tar reader ends it at the
// size its header declares; the verifier compares that with the signed
// length before trusting any of it.
func (br *Reader) Image() io.Reader { return br.image }

// Finish checks that nothing but end-of-archive padding follows the image.
// Call it after the image has been read completely.
func (br *Reader) Finish() error {
	hdr, err := br.tr.Next()
	if err == nil {
		return fmt.Errorf("%w: unexpected member %q after the image", ErrTrailing, hdr.Name)
	}
	if !errors.Is(err, io.EOF) {
		return br.wrap(err)
	}
	buf := make([]byte, 32<<10)
	total := 0
	for {
		n, err := br.src.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return fmt.Errorf("%w: non-zero bytes after the end-of-archive marker", ErrTrailing)
			}
		}
		total += n
		if total > maxTrailer {
			return fmt.Errorf("%w: more than %d bytes of padding", ErrTrailing, maxTrailer)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (br *Reader) header() (*tar.Header, error) {
	hdr, err := br.tr.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: archive ended before the image", ErrTruncated)
		}
		return nil, br.wrap(err)
	}
	if escapes(hdr.Name) {
		return nil, fmt.Errorf("%w: %q", ErrEscape, hdr.Name)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: member %q is not a regular file (type %q)", ErrMalformed, hdr.Name, hdr.Typeflag)
	}
	// PAX records can turn a regular entry into a sparse file whose holes
	// read as zeros that are not in the stream: a few bytes of input could
	// then pose as gigabytes. Bundles are written without them.
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, fmt.Errorf("%w: member %q is a sparse file", ErrMalformed, hdr.Name)
		}
	}
	if hdr.Size < 0 {
		return nil, fmt.Errorf("%w: member %q has a negative size", ErrMalformed, hdr.Name)
	}
	return hdr, nil
}

func (br *Reader) member(name string, limit int64) ([]byte, error) {
	hdr, err := br.header()
	if err != nil {
		return nil, err
	}
	return br.bodyNamed(hdr, name, limit)
}

func (br *Reader) bodyNamed(hdr *tar.Header, name string, limit int64) ([]byte, error) {
	if hdr.Name != name {
		return nil, fmt.Errorf("%w: expected member %s, found %q", ErrMalformed, name, hdr.Name)
	}
	return br.body(hdr, limit)
}

func (br *Reader) body(hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("%w: member %s is %d bytes, the limit is %d", ErrMalformed, hdr.Name, hdr.Size, limit)
	}
	// Read rather than allocate the declared size: a hostile header may
	// claim megabytes that never follow.
	b, err := io.ReadAll(io.LimitReader(br.tr, hdr.Size))
	if err != nil {
		return nil, br.wrap(fmt.Errorf("member %s: %w", hdr.Name, err))
	}
	if int64(len(b)) != hdr.Size {
		return nil, fmt.Errorf("%w: member %s: %v", ErrTruncated, hdr.Name, io.ErrUnexpectedEOF)
	}
	return b, nil
}

func (br *Reader) wrap(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

// truncationReader reports a stream cut inside the image as ErrTruncated.
type truncationReader struct{ r io.Reader }

func (t *truncationReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: image: %v", ErrTruncated, err)
	}
	return n, err
}

func escapes(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return true
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return true
		}
	}
	return path.Clean(name) != name
}
