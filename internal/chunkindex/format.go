package chunkindex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrMalformed is wrapped by every error that reports a chunk index which
// does not follow the binary format or its consistency rules, whether it
// comes from Parse or from an Index value handed to MarshalBinary,
// VerifyStream or VerifyChunk.
var ErrMalformed = errors.New("malformed chunk index")

const (
	magic = "RPIDX1\n\x00"

	// FormatVersion is the only format version this package reads or writes.
	FormatVersion = 1
	// HashSHA256 is the hash algorithm identifier for SHA-256.
	HashSHA256 = 1

	// MaxChunkSize is the largest chunk size Parse accepts.
	MaxChunkSize = 64 << 20

	// HeaderSize is the size in bytes of the fixed header.
	HeaderSize = 8 + 4 + 4 + 8 + 8 + 32 + 8
	// EntrySize is the size in bytes of one chunk entry.
	EntrySize = 8 + 8 + 32
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// checkChunkSize validates the nominal chunk size.
func checkChunkSize(cs uint64) error {
	switch {
	case cs == 0:
		return malformed("chunk size: is 0")
	case cs&(cs-1) != 0:
		return malformed("chunk size: %d is not a power of two", cs)
	case cs > MaxChunkSize:
		return malformed("chunk size: %d exceeds the maximum %d", cs, MaxChunkSize)
	}
	return nil
}

// chunkCount returns how many fixed-size chunks of size cs an image of
// length n has, or an error if that exceeds MaxChunks (or n is out of
// range). cs must already be valid.
func chunkCount(n, cs uint64) (uint64, error) {
	if n > math.MaxInt64 {
		return 0, malformed("image length: %d out of range", n)
	}
	if n/cs > MaxChunks || (n/cs == MaxChunks && n%cs != 0) {
		return 0, malformed("image length: %d needs more than MaxChunks (%d) chunks of %d bytes", n, MaxChunks, cs)
	}
	return (n + cs - 1) / cs, nil // no overflow: n <= MaxInt64, cs <= 64 MiB
}

// checkGeometry validates chunk size, image length and chunk count
// against each other.
func checkGeometry(cs, n, count uint64) error {
	if err := checkChunkSize(cs); err != nil {
		return err
	}
	want, err := chunkCount(n, cs)
	if err != nil {
		return err
	}
	if count > MaxChunks {
		return malformed("chunk count: %d exceeds MaxChunks (%d)", count, MaxChunks)
	}
	if count != want {
		return malformed("chunk count: %d disagrees with image length %d and chunk size %d (want %d)", count, n, cs, want)
	}
	return nil
}

// checkChunk validates entry i's offset and length against fixed-size
// chunking. Geometry must already be valid.
func checkChunk(i, cs, n, off, length uint64) error {
	wantOff := i * cs
	if off != wantOff {
		return malformed("chunk %d offset: %d, want %d (chunks must be contiguous)", i, off, wantOff)
	}
	wantLen := min(cs, n-wantOff)
	if length != wantLen {
		return malformed("chunk %d length: %d out of range, want %d", i, length, wantLen)
	}
	return nil
}

// Validate checks that the index is well formed (what Parse checks), so a
// caller that verifies many chunks can validate once and compare hashes
// itself; VerifyChunk validates the whole index on every call.
func (ix *Index) Validate() error {
	if ix == nil {
		return fmt.Errorf("%w: nil index", ErrMalformed)
	}
	return ix.validate()
}

// validate checks that ix is a well-formed fixed-size chunk index.
func (ix *Index) validate() error {
	if ix == nil {
		return malformed("index: nil")
	}
	if ix.ChunkSize < 0 {
		return malformed("chunk size: %d is negative", ix.ChunkSize)
	}
	if ix.ImageLength < 0 {
		return malformed("image length: %d is negative", ix.ImageLength)
	}
	cs, n := uint64(ix.ChunkSize), uint64(ix.ImageLength)
	if err := checkGeometry(cs, n, uint64(len(ix.Chunks))); err != nil {
		return err
	}
	for i, c := range ix.Chunks {
		if c.Offset < 0 || c.Length < 0 {
			return malformed("chunk %d: negative offset or length", i)
		}
		if err := checkChunk(uint64(i), cs, n, uint64(c.Offset), uint64(c.Length)); err != nil {
			return err
		}
	}
	return nil
}

// MarshalBinary encodes the index in the binary format described in the
// package documentation. It fails, with an error wrapping ErrMalformed, if
// the index is not one that Parse would accept, so every encoded index
// parses back to an equal value.
func (ix *Index) MarshalBinary() ([]byte, error) {
	if err := ix.validate(); err != nil {
		return nil, err
	}
	out := make([]byte, 0, HeaderSize+EntrySize*len(ix.Chunks))
	out = append(out, magic...)
	out = binary.BigEndian.AppendUint32(out, FormatVersion)
	out = binary.BigEndian.AppendUint32(out, HashSHA256)
	out = binary.BigEndian.AppendUint64(out, uint64(ix.ChunkSize))
	out = binary.BigEndian.AppendUint64(out, uint64(ix.ImageLength))
	out = append(out, ix.ImageHash[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(len(ix.Chunks)))
	for _, c := range ix.Chunks {
		out = binary.BigEndian.AppendUint64(out, uint64(c.Offset))
		out = binary.BigEndian.AppendUint64(out, uint64(c.Length))
		out = append(out, c.Hash[:]...)
	}
	return out, nil
}

// Parse decodes a chunk index from untrusted bytes. It accepts exactly the
// encodings MarshalBinary produces: any deviation (wrong magic, version or
// hash algorithm; a chunk size that is 0, not a power of two or larger than
// MaxChunkSize; a chunk count that disagrees with the image length or
// exceeds MaxChunks; offsets or lengths other than those fixed-size chunking
// implies; truncation or trailing bytes) yields an error wrapping
// ErrMalformed whose message names the offending field. Parse allocates
// only after checking that data is exactly as long as the declared chunk
// count requires, so its allocation is proportional to len(data).
func Parse(data []byte) (*Index, error) {
	if len(data) < HeaderSize {
		return nil, malformed("header: truncated, %d bytes, need %d", len(data), HeaderSize)
	}
	if string(data[:8]) != magic {
		return nil, malformed("magic: %q, want %q", data[:8], magic)
	}
	be := binary.BigEndian
	if v := be.Uint32(data[8:]); v != FormatVersion {
		return nil, malformed("version: unsupported version %d", v)
	}
	if h := be.Uint32(data[12:]); h != HashSHA256 {
		return nil, malformed("hash algorithm: unsupported id %d", h)
	}
	cs := be.Uint64(data[16:])
	n := be.Uint64(data[24:])
	count := be.Uint64(data[64:])
	if err := checkGeometry(cs, n, count); err != nil {
		return nil, err
	}
	// count <= MaxChunks, so this cannot overflow.
	want := uint64(HeaderSize) + count*EntrySize
	if got := uint64(len(data)); got < want {
		return nil, malformed("chunks: truncated, %d bytes, need %d for %d chunks", got, want, count)
	} else if got > want {
		return nil, malformed("trailing bytes: %d after the last chunk", got-want)
	}
	ix := &Index{
		ChunkSize:   int64(cs),
		ImageLength: int64(n),
		Chunks:      make([]Chunk, count),
	}
	copy(ix.ImageHash[:], data[32:64])
	p := data[HeaderSize:]
	for i := range ix.Chunks {
		off, length := be.Uint64(p), be.Uint64(p[8:])
		if err := checkChunk(uint64(i), cs, n, off, length); err != nil {
			return nil, err
		}
		c := &ix.Chunks[i]
		c.Offset, c.Length = int64(off), int64(length)
		copy(c.Hash[:], p[16:48])
		p = p[EntrySize:]
	}
	return ix, nil
}
