package blob

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestPipeCopy(t *testing.T) {
	for _, size := range []int{0, 1, pipeBuf - 1, pipeBuf, pipeBuf + 1, 5*pipeBuf + 12345} {
		src := make([]byte, size)
		rand.Read(src)
		var dst bytes.Buffer
		// HalfReader makes short reads: the copy must still be exact.
		for _, r := range []io.Reader{bytes.NewReader(src), iotest.HalfReader(bytes.NewReader(src))} {
			dst.Reset()
			n, err := pipeCopy(&dst, r)
			if err != nil || n != int64(size) || !bytes.Equal(dst.Bytes(), src) {
				t.Fatalf("size %d: n=%d err=%v equal=%v", size, n, err, bytes.Equal(dst.Bytes(), src))
			}
		}
	}
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	f.n--
	return len(p), nil
}

// countingReader is endless and counts what was read from it.
type countingReader struct{ n int64 }

func (c *countingReader) Read(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// A failing writer (a full disk) ends the copy with its error, and the
// reader is not drained: an upload stops soon after the disk fails.
func TestPipeCopyWriteError(t *testing.T) {
	full := errors.New("no space left on device")
	r := &countingReader{}
	_, err := pipeCopy(&failAfter{n: 2, err: full}, r)
	if !errors.Is(err, full) {
		t.Fatalf("err = %v, want the write error", err)
	}
	if r.n > (2+pipeDepth+2)*pipeBuf {
		t.Fatalf("read %d bytes after the writer failed", r.n)
	}
}

func TestPipeCopyReadError(t *testing.T) {
	cut := errors.New("connection reset")
	src := make([]byte, 3*pipeBuf)
	r := io.MultiReader(bytes.NewReader(src), iotest.ErrReader(cut))
	var dst bytes.Buffer
	n, err := pipeCopy(&dst, r)
	if !errors.Is(err, cut) {
		t.Fatalf("err = %v, want the read error", err)
	}
	if n != int64(len(src)) || dst.Len() != len(src) {
		t.Fatalf("n = %d, wrote %d, want %d before the error", n, dst.Len(), len(src))
	}
}
