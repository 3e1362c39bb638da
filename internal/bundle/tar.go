package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The reader's own tar parser. archive/tar is built to read any archive
// any tool wrote, and a bundle is one kind of archive that one writer
// makes: archive/tar reads GNU long names and PAX headers of up to 1 MiB
// each and any number of PAX headers in a row inside one Next call, and it
// takes an archive that simply stops, without its end-of-archive blocks, as
// complete. This parser reads only what Write produces (ustar members,
// with at most one PAX header each) plus the GNU long name some tools add,
// refuses every extension by its declared size before reading it, and
// demands the two end-of-archive blocks.

const blockSize = 512

// Bounds on tar extension headers.
const (
	// MaxName bounds a member name, however it is spelled (ustar name and
	// prefix, PAX path, GNU long name). Bundle names are at most 78
	// bytes.
	MaxName = 256
	// maxPAX bounds one PAX extended header's body, maxPAXRecords the
	// records in it. Write emits one record ("size", for images of 8 GiB
	// or more).
	maxPAX        = 4 << 10
	maxPAXRecords = 16
)

// header is one member, its extension headers applied.
type header struct {
	name   string
	size   int64
	offset int64 // of the member's first byte in the stream
}

// errEnd is the first end-of-archive block.
var errEnd = errors.New("end of archive")

type tarReader struct {
	r      io.Reader
	off    int64 // bytes consumed from r
	remain int64 // unread bytes of the current member
	pad    int64 // padding after the current member
	blk    [blockSize]byte
}

// fill reads exactly len(p) bytes. An early end is ErrTruncated; any other
// failure of the medium is a *ReadError, never a refusal.
func (t *tarReader) fill(p []byte, what string) error {
	n, err := io.ReadFull(t.r, p)
	t.off += int64(n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: the file ends inside %s at offset %d", ErrTruncated, what, t.off)
	}
	return &ReadError{Offset: t.off, Err: err}
}

// discard skips n bytes.
func (t *tarReader) discard(n int64, what string) error {
	var buf [32 << 10]byte
	for n > 0 {
		k := min(n, int64(len(buf)))
		if err := t.fill(buf[:k], what); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// skip moves past the rest of the current member and its padding.
func (t *tarReader) skip() error {
	if err := t.discard(t.remain, "a member"); err != nil {
		return err
	}
	t.remain = 0
	if err := t.discard(t.pad, "a member's padding"); err != nil {
		return err
	}
	t.pad = 0
	return nil
}

// body starts reading a member of size bytes.
func (t *tarReader) body(size int64) {
	t.remain = size
	t.pad = (blockSize - size%blockSize) % blockSize
}

// Read reads the current member. It ends with io.EOF at the member's end;
// a file that ends before is ErrTruncated.
func (t *tarReader) Read(p []byte) (int, error) {
	if t.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > t.remain {
		p = p[:t.remain]
	}
	n, err := t.r.Read(p)
	t.off += int64(n)
	t.remain -= int64(n)
	switch {
	case err == nil || n > 0 && errors.Is(err, io.EOF):
		return n, nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, fmt.Errorf("%w: the file ends inside a member at offset %d", ErrTruncated, t.off)
	}
	return n, &ReadError{Offset: t.off, Err: err}
}

// readAll reads the whole current member (size bytes) into memory. It
// grows its buffer as bytes arrive rather than allocating the declared
// size, so a header that claims more than the file holds costs no more
// than the file; h, when set, hashes the bytes as they are read.
func (t *tarReader) readAll(size int64, what string, h hash.Hash) ([]byte, error) {
	b := make([]byte, 0, min(size, 64<<10))
	for int64(len(b)) < size {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(size-int64(len(b)), int64(cap(b)))))
		}
		n := int(min(int64(cap(b)-len(b)), size-int64(len(b))))
		if err := t.fill(b[len(b):len(b)+n], what); err != nil {
			return nil, err
		}
		if h != nil {
			h.Write(b[len(b) : len(b)+n])
		}
		b = b[:len(b)+n]
	}
	t.remain = 0
	return b, nil
}

// next returns the next member's header, or errEnd at an end-of-archive
// block. Only regular files are members.
func (t *tarReader) next() (*header, error) {
	if err := t.skip(); err != nil {
		return nil, err
	}
	var (
		name             string
		haveName         bool
		size             int64 = -1
		seenPAX, seenGNU bool
	)
	for {
		at := t.off
		if err := t.fill(t.blk[:], "a header"); err != nil {
			if errors.Is(err, ErrTruncated) && t.off == at && !seenPAX && !seenGNU {
				return nil, fmt.Errorf("%w: the archive stops at offset %d without its end-of-archive blocks", ErrTruncated, at)
			}
			return nil, err
		}
		if isZero(t.blk[:]) {
			if seenPAX || seenGNU {
				return nil, fmt.Errorf("%w: an extension header at offset %d belongs to no member", ErrMalformed, at)
			}
			return nil, errEnd
		}
		if err := checkHeader(&t.blk, at); err != nil {
			return nil, err
		}
		typ := t.blk[156]
		n, err := parseNumber(t.blk[124:136])
		if err != nil {
			return nil, fmt.Errorf("%w: header at offset %d: size: %v", ErrMalformed, at, err)
		}
		switch typ {
		case 'x':
			// Refused by its declared size, before a byte of it is read.
			if seenPAX {
				return nil, fmt.Errorf("%w: more than one PAX header for the member at offset %d", ErrMalformed, at)
			}
			if n > maxPAX {
				return nil, fmt.Errorf("%w: a PAX header of %d bytes at offset %d (at most %d)", ErrMalformed, n, at, maxPAX)
			}
			seenPAX = true
			t.body(n)
			b, err := t.readAll(n, "a PAX header", nil)
			if err != nil {
				return nil, err
			}
			p, s, err := parsePAX(b)
			if err != nil {
				return nil, fmt.Errorf("%w: PAX header at offset %d: %v", ErrMalformed, at, err)
			}
			if p != nil {
				name, haveName = *p, true
			}
			if s >= 0 {
				size = s
			}
			if err := t.skip(); err != nil {
				return nil, err
			}
		case 'L':
			if seenGNU {
				return nil, fmt.Errorf("%w: more than one GNU long name for the member at offset %d", ErrMalformed, at)
			}
			if n > MaxName+1 {
				return nil, fmt.Errorf("%w: a member name of %d bytes at offset %d (at most %d)", ErrMalformed, n, at, MaxName)
			}
			seenGNU = true
			t.body(n)
			b, err := t.readAll(n, "a GNU long name", nil)
			if err != nil {
				return nil, err
			}
			if err := t.skip(); err != nil {
				return nil, err
			}
			if !haveName {
				name, haveName = strings.TrimRight(string(b), "\x00"), true
			}
		default:
			if !haveName {
				name = ustarName(&t.blk)
			}
			if len(name) > MaxName {
				return nil, fmt.Errorf("%w: a member name of %d bytes at offset %d (at most %d)", ErrMalformed, len(name), at, MaxName)
			}
			if escapes(name) {
				return nil, fmt.Errorf("%w: %s", ErrEscape, quote(name))
			}
			if typ != '0' && typ != 0 {
				return nil, fmt.Errorf("%w: member %s is not a regular file (type %s)", ErrMalformed, quote(name), strconv.QuoteRune(rune(typ)))
			}
			if size < 0 {
				size = n
			}
			t.body(size)
			return &header{name: name, size: size, offset: t.off}, nil
		}
	}
}

// finish checks that the archive ends properly after the current member:
// two zero blocks, then at most maxTrailer bytes of zeros (tools pad an
// archive to their record size), then the end of the file.
func (t *tarReader) finish() error {
	if err := t.skip(); err != nil {
		return err
	}
	for i := range 2 {
		at := t.off
		if err := t.fill(t.blk[:], "the end-of-archive blocks"); err != nil {
			if errors.Is(err, ErrTruncated) {
				return fmt.Errorf("%w: the end-of-archive blocks are missing or cut (%d of %d bytes)", ErrTruncated, int64(i*blockSize)+t.off-at, 2*blockSize)
			}
			return err
		}
		if isZero(t.blk[:]) {
			continue
		}
		if i == 0 && checkHeader(&t.blk, at) == nil {
			name := ustarName(&t.blk)
			if len(name) > MaxName {
				name = name[:MaxName]
			}
			return fmt.Errorf("%w: unexpected member %s after the image", ErrTrailing, quote(name))
		}
		return fmt.Errorf("%w: non-zero bytes in the end-of-archive blocks at offset %d", ErrTrailing, at)
	}
	var buf [32 << 10]byte
	total := int64(0)
	for {
		n, err := t.r.Read(buf[:])
		t.off += int64(n)
		if !isZero(buf[:n]) {
			return fmt.Errorf("%w: non-zero bytes after the end-of-archive blocks", ErrTrailing)
		}
		total += int64(n)
		if total > maxTrailer {
			return fmt.Errorf("%w: more than %d bytes of padding", ErrTrailing, maxTrailer)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &ReadError{Offset: t.off, Err: err}
		}
	}
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkHeader checks a header block's checksum and magic.
func checkHeader(blk *[blockSize]byte, at int64) error {
	want, err := parseNumber(blk[148:156])
	if err != nil {
		return fmt.Errorf("%w: not a tar header at offset %d", ErrMalformed, at)
	}
	var unsigned, signed int64
	for i, c := range blk {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	if want != unsigned && want != signed {
		return fmt.Errorf("%w: not a tar header at offset %d (bad checksum)", ErrMalformed, at)
	}
	magic := blk[257:265]
	if !bytes.Equal(magic, []byte("ustar\x0000")) && !bytes.Equal(magic, []byte("ustar  \x00")) {
		return fmt.Errorf("%w: the header at offset %d is not ustar", ErrMalformed, at)
	}
	return nil
}

// ustarName is the name in a header block: prefix/name in POSIX ustar
// (GNU headers keep other fields where ustar has the prefix).
func ustarName(blk *[blockSize]byte) string {
	name := cstring(blk[0:100])
	if bytes.Equal(blk[257:265], []byte("ustar\x0000")) {
		if prefix := cstring(blk[345:500]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	return name
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseNumber reads a numeric header field: octal, space or NUL padded,
// or GNU base-256 (which only some tools write, for values ustar cannot
// hold). Negative values are refused.
func parseNumber(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0] != 0x80 {
			return 0, errors.New("negative or oversized base-256 number")
		}
		var v uint64
		for _, c := range b[1:] {
			if v > math.MaxInt64>>8 {
				return 0, errors.New("number out of range")
			}
			v = v<<8 | uint64(c)
		}
		if v > math.MaxInt64 {
			return 0, errors.New("number out of range")
		}
		return int64(v), nil
	}
	s := strings.TrimLeft(strings.TrimRight(string(b), " \x00"), " ")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 8, 64)
	if err != nil || v < 0 {
		return 0, errors.New("not an octal number")
	}
	return v, nil
}

// paxKeys are the PAX records a bundle may carry; the ones that change
// how a member reads (sparse maps, above all) are not among them.
var paxKeys = map[string]bool{"path": true, "size": true, "mtime": true, "atime": true, "ctime": true, "uid": true, "gid": true, "uname": true, "gname": true}

// parsePAX reads PAX records ("LEN key=value\n"). It returns the path
// record (nil without one) and the size record (-1 without one).
func parsePAX(b []byte) (path *string, size int64, err error) {
	size = -1
	for n := 0; len(b) > 0; n++ {
		if n == maxPAXRecords {
			return nil, 0, fmt.Errorf("more than %d records", maxPAXRecords)
		}
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 || sp > 7 {
			return nil, 0, errors.New("a record without its length")
		}
		l, err := strconv.Atoi(string(b[:sp]))
		if err != nil || l <= sp+1 || l > len(b) || b[l-1] != '\n' {
			return nil, 0, errors.New("a record of a wrong length")
		}
		rec := string(b[sp+1 : l-1])
		b = b[l:]
		k, v, ok := strings.Cut(rec, "=")
		if !ok {
			return nil, 0, errors.New("a record without a value")
		}
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, 0, errors.New("a sparse file: its holes would read as bytes that are not in the bundle")
		}
		if !paxKeys[k] {
			return nil, 0, fmt.Errorf("an unsupported record %s", quote(k))
		}
		switch k {
		case "path":
			if len(v) > MaxName {
				return nil, 0, fmt.Errorf("a member name of %d bytes (at most %d)", len(v), MaxName)
			}
			path = &v
		case "size":
			s, err := strconv.ParseInt(v, 10, 64)
			if err != nil || s < 0 {
				return nil, 0, errors.New("a size that is not a non-negative integer")
			}
			size = s
		}
	}
	return path, size, nil
}

// quote quotes untrusted text for a message, bounded: callers have
// already refused names over MaxName, and this keeps even those short.
func quote(s string) string {
	if len(s) > 96 {
		s = s[:96] + "…"
	}
	return strconv.Quote(s)
}
