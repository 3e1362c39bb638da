package chunkindex

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestCopyMatchesBuild(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 3*4096 + 17, 1 << 20} {
		img := make([]byte, n)
		rand.Read(img)
		var out bytes.Buffer
		got, err := Copy(&out, bytes.NewReader(img), 4096)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Build(bytes.NewReader(img), 4096)
		if err != nil {
			t.Fatal(err)
		}
		gb, _ := got.MarshalBinary()
		wb, _ := want.MarshalBinary()
		if !bytes.Equal(gb, wb) || !bytes.Equal(out.Bytes(), img) {
			t.Fatalf("size %d: Copy differs from Build or from the input", n)
		}
	}
}

func TestCopyOneByteReader(t *testing.T) {
	img := make([]byte, 10000)
	rand.Read(img)
	var out bytes.Buffer
	got, err := Copy(&out, iotest.OneByteReader(bytes.NewReader(img)), 4096)
	if err != nil || !bytes.Equal(out.Bytes(), img) || got.ImageLength != 10000 || len(got.Chunks) != 3 {
		t.Fatalf("%v %d", err, out.Len())
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return len(p), nil
}

func TestCopyErrors(t *testing.T) {
	img := make([]byte, 64<<10)
	if _, err := Copy(&failWriter{n: 3}, bytes.NewReader(img), 4096); err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Fatalf("write error lost: %v", err)
	}
	if _, err := Copy(io.Discard, iotest.ErrReader(errors.New("eio")), 4096); err == nil || !bytes.Contains([]byte(err.Error()), []byte("eio")) {
		t.Fatalf("read error lost: %v", err)
	}
	if _, err := Copy(io.Discard, bytes.NewReader(img), 3000); err == nil {
		t.Fatal("invalid chunk size accepted")
	}
}
