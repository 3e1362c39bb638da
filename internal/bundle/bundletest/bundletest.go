// Package bundletest writes hostile offline bundles for tests: a tar
// writer that writes whatever it is told (oversized and negative sizes,
// extension headers of any size and number, broken end-of-archive blocks,
// any member type), and a splitter that turns a genuine bundle into its
// members so a test can reorder, duplicate, rename or pad them.
// archive/tar cannot write most of these shapes; that is its job.
package bundletest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

const block = 512

// Writer writes tar blocks to W exactly as asked.
type Writer struct {
	W   io.Writer
	Err error // the first write error
}

func (w *Writer) write(b []byte) {
	if w.Err == nil {
		_, w.Err = w.W.Write(b)
	}
}

// Header writes one ustar header block (name up to 100 bytes; a longer
// one is cut: use PAX or GNULongName for long names). A negative size is
// written in base-256, as a hostile writer would.
func (w *Writer) Header(name string, typ byte, size int64) {
	var h [block]byte
	copy(h[0:100], name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	if size >= 0 && size < 1<<33 {
		copy(h[124:136], fmt.Sprintf("%011o\x00", size))
	} else {
		// base-256, two's complement for negative sizes
		v := uint64(size)
		h[124] = 0x80
		if size < 0 {
			h[124] = 0xff
		}
		for i := 135; i > 127; i-- {
			h[i] = byte(v)
			v >>= 8
		}
		for i := 125; i <= 127; i++ {
			if size < 0 {
				h[i] = 0xff
			}
		}
	}
	copy(h[136:148], "00000000000\x00")
	h[156] = typ
	copy(h[257:265], "ustar\x0000")
	Checksum(&h)
	w.write(h[:])
}

// Checksum sets a header block's checksum field.
func Checksum(h *[block]byte) {
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// Body writes b and its padding to the next block.
func (w *Writer) Body(b []byte) {
	w.write(b)
	w.Pad(int64(len(b)))
}

// Pad writes the zeros that follow a member of n bytes.
func (w *Writer) Pad(n int64) {
	if r := n % block; r != 0 {
		w.write(make([]byte, block-r))
	}
}

// File writes a regular member.
func (w *Writer) File(name string, body []byte) {
	w.Header(name, '0', int64(len(body)))
	w.Body(body)
}

// FileFrom writes a regular member of size bytes read from r, without
// holding it in memory.
func (w *Writer) FileFrom(name string, size int64, r io.Reader) {
	w.Header(name, '0', size)
	if w.Err == nil {
		var n int64
		n, w.Err = io.Copy(w.W, io.LimitReader(r, size))
		if w.Err == nil && n != size {
			w.Err = io.ErrUnexpectedEOF
		}
	}
	w.Pad(size)
}

// PAX writes a PAX extended header holding records ("key=value").
func (w *Writer) PAX(records ...string) {
	var b bytes.Buffer
	for _, r := range records {
		n := len(r) + 2
		for l := len(strconv.Itoa(n)) + n; ; l++ {
			if len(strconv.Itoa(l))+n == l {
				n = l
				break
			}
		}
		fmt.Fprintf(&b, "%d %s\n", n, r)
	}
	w.Header("PaxHeaders/x", 'x', int64(b.Len()))
	w.Body(b.Bytes())
}

// GNULongName writes a GNU long-name header for the next member.
func (w *Writer) GNULongName(name string) {
	w.Header("././@LongLink", 'L', int64(len(name)+1))
	w.Body(append([]byte(name), 0))
}

// End writes the two end-of-archive blocks.
func (w *Writer) End() { w.write(make([]byte, 2*block)) }

// Raw writes b as it is.
func (w *Writer) Raw(b []byte) { w.write(b) }

// Member is one regular member of a bundle.
type Member struct {
	Name string
	Body []byte
}

// Split returns the members of a bundle written by bundle.Write.
func Split(b []byte) ([]Member, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	var ms []Member
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ms, nil
		}
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Member{Name: h.Name, Body: body})
	}
}

// Join writes members as regular files followed by the end-of-archive
// blocks: Split's inverse.
func Join(ms []Member) []byte {
	var buf bytes.Buffer
	w := &Writer{W: &buf}
	for _, m := range ms {
		w.File(m.Name, m.Body)
	}
	w.End()
	return buf.Bytes()
}

// Index returns the position of the member named name, or -1.
func Index(ms []Member, name string) int {
	for i, m := range ms {
		if m.Name == name {
			return i
		}
	}
	return -1
}

// Members is a bundle's members, as a test edits them.
type Members []Member

// Before writes ms up to (not including) the member named name.
func (ms Members) Before(w *Writer, name string) {
	for _, m := range ms[:Index(ms, name)] {
		w.File(m.Name, m.Body)
	}
}

// From writes ms from the member named name on.
func (ms Members) From(w *Writer, name string) {
	for _, m := range ms[Index(ms, name):] {
		w.File(m.Name, m.Body)
	}
}
