// Package sourcetest is the conformance suite every install.Source
// implementation runs (HTTPSource, which fetches an image with Range
// requests, and the agent's reader of the image inside a bundle file), so
// that Install can rely on one contract whatever the image comes from:
// each chunk read is exactly the medium's bytes at the chunk's range,
// delivered in the caller's buffer, from several goroutines at once; and
// a chunk the medium cannot give whole (past its end, cut short after the
// source was made, or unreadable) is an error of the implementation's
// failure type, never a short or padded chunk.
package sourcetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/install"
)

// Medium is what a Source reads from, under the suite's control: Size
// bytes the source is made for (a file on a server, the image inside a
// bundle). Reads through it may be made to fail or to find it shorter
// than Size, as a flaky disk or a file truncated under the reader does.
type Medium struct {
	io.ReaderAt
	Size int64
}

// New makes the implementation under test over m.
type New func(t testing.TB, m Medium) install.Source

// Options describe the implementation.
type Options struct {
	// IsFailure reports whether err is of the implementation's failure
	// type (an *install.FetchError, a *bundle.ReadError): every failed
	// read must be one.
	IsFailure func(err error) bool
}

// chunkSize is small so that images of several chunks stay small.
const chunkSize = 64 << 10

// image is three full chunks and a short fourth.
func image() []byte {
	b := make([]byte, 3*chunkSize+1234)
	rand.Read(b)
	return b
}

func chunks(size int64) []chunkindex.Chunk {
	var cs []chunkindex.Chunk
	for off := int64(0); off < size; off += chunkSize {
		cs = append(cs, chunkindex.Chunk{Offset: off, Length: min(chunkSize, size-off)})
	}
	return cs
}

// medium serves data, with faults the cases switch on.
type medium struct {
	data []byte
	// cut, when positive, is where the medium now ends.
	cut atomic.Int64
	// badFrom and badTo delimit bytes whose reads fail.
	badFrom, badTo atomic.Int64
	// eofWithLast returns io.EOF with the last bytes, as io.ReaderAt
	// allows, rather than on the next read.
	eofWithLast bool
}

var errMedium = errors.New("sourcetest: injected medium failure")

func (m *medium) ReadAt(p []byte, off int64) (int, error) {
	end := int64(len(m.data))
	if c := m.cut.Load(); c > 0 && c < end {
		end = c
	}
	if from, to := m.badFrom.Load(), m.badTo.Load(); to > from && off < to && off+int64(len(p)) > from {
		return 0, errMedium
	}
	if off >= end {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:end])
	if n < len(p) || m.eofWithLast && off+int64(n) == end {
		return n, io.EOF
	}
	return n, nil
}

type testCase struct {
	name string
	run  func(ctx context.Context, t testing.TB, newSource New, opt Options) error
}

var cases = []testCase{
	{"EveryChunkAnyOrder", everyChunk},
	{"Concurrent", concurrent},
	{"FillsTheCallersBuffer", fillsBuffer},
	{"EOFWithTheLastBytes", eofWithLast},
	{"PastTheEnd", pastTheEnd},
	{"TruncatedAfterOpen", truncated},
	{"FailingMedium", failing},
}

// Run runs the suite against the implementation newSource makes.
func Run(t *testing.T, newSource New, opt Options) {
	if opt.IsFailure == nil {
		t.Fatal("sourcetest: Options.IsFailure is required")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(context.Background(), t, newSource, opt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// read reads chunk i of cs from src into a fresh buffer of its length.
func read(ctx context.Context, src install.Source, cs []chunkindex.Chunk, i int) ([]byte, []byte, error) {
	buf := make([]byte, cs[i].Length)
	out, err := src.ReadChunk(ctx, i, cs[i], buf)
	return buf, out, err
}

func want(data []byte, c chunkindex.Chunk) []byte { return data[c.Offset : c.Offset+c.Length] }

// everyChunk reads every chunk, last first, and compares it.
func everyChunk(ctx context.Context, t testing.TB, newSource New, _ Options) error {
	m := &medium{data: image()}
	src := newSource(t, Medium{ReaderAt: m, Size: int64(len(m.data))})
	cs := chunks(int64(len(m.data)))
	for i := len(cs) - 1; i >= 0; i-- {
		_, out, err := read(ctx, src, cs, i)
		if err != nil {
			return fmt.Errorf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(out, want(m.data, cs[i])) {
			return fmt.Errorf("chunk %d: %d bytes that are not the medium's at offset %d", i, len(out), cs[i].Offset)
		}
	}
	return nil
}

// concurrent reads every chunk from several goroutines at once, as
// Install's workers do.
func concurrent(ctx context.Context, t testing.TB, newSource New, _ Options) error {
	m := &medium{data: image()}
	src := newSource(t, Medium{ReaderAt: m, Size: int64(len(m.data))})
	cs := chunks(int64(len(m.data)))
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(cs))
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range cs {
				i := (k + w) % len(cs)
				_, out, err := read(ctx, src, cs, i)
				if err == nil && !bytes.Equal(out, want(m.data, cs[i])) {
					err = errors.New("wrong bytes")
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d, chunk %d: %v", w, i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// fillsBuffer: the chunk comes back in the caller's buffer, so a
// download allocates nothing per chunk.
func fillsBuffer(ctx context.Context, t testing.TB, newSource New, _ Options) error {
	m := &medium{data: image()}
	src := newSource(t, Medium{ReaderAt: m, Size: int64(len(m.data))})
	cs := chunks(int64(len(m.data)))
	for _, i := range []int{0, len(cs) - 1} {
		buf, out, err := read(ctx, src, cs, i)
		if err != nil {
			return fmt.Errorf("chunk %d: %v", i, err)
		}
		if len(out) != len(buf) || &out[0] != &buf[0] || !bytes.Equal(buf, want(m.data, cs[i])) {
			return fmt.Errorf("chunk %d: not returned in the caller's buffer", i)
		}
	}
	return nil
}

// eofWithLast: a medium may report io.EOF together with its last bytes;
// that is the end of a whole read, not a failure.
func eofWithLast(ctx context.Context, t testing.TB, newSource New, _ Options) error {
	m := &medium{data: image(), eofWithLast: true}
	src := newSource(t, Medium{ReaderAt: m, Size: int64(len(m.data))})
	cs := chunks(int64(len(m.data)))
	last := len(cs) - 1
	_, out, err := read(ctx, src, cs, last)
	if err != nil {
		return fmt.Errorf("the last chunk, read with io.EOF: %v", err)
	}
	if !bytes.Equal(out, want(m.data, cs[last])) {
		return errors.New("the last chunk, read with io.EOF, has the wrong bytes")
	}
	return nil
}

// failure checks that err is a failure of the implementation's type and
// that out is nothing.
func failure(what string, out []byte, err error, opt Options) error {
	switch {
	case err == nil:
		return fmt.Errorf("%s: read %d bytes, want an error", what, len(out))
	case !opt.IsFailure(err):
		return fmt.Errorf("%s: error %v (%T) is not the implementation's failure type", what, err, err)
	case out != nil:
		return fmt.Errorf("%s: %d bytes returned with the error", what, len(out))
	}
	return nil
}

// pastTheEnd: a chunk that runs past the medium's end (the index
// describes a longer image than the medium holds) is an error, neither a
// short chunk nor one padded with whatever follows; so is one that
// starts past it. Chunks before it read as usual.
func pastTheEnd(ctx context.Context, t testing.TB, newSource New, opt Options) error {
	full := image()
	cs := chunks(int64(len(full)))
	size := cs[2].Offset + 100 // the medium ends inside chunk 2
	m := &medium{data: full[:size]}
	src := newSource(t, Medium{ReaderAt: m, Size: size})
	if _, out, err := read(ctx, src, cs, 1); err != nil || !bytes.Equal(out, want(full, cs[1])) {
		return fmt.Errorf("chunk 1, inside the medium: %v", err)
	}
	for _, i := range []int{2, 3} {
		_, out, err := read(ctx, src, cs, i)
		if err := failure(fmt.Sprintf("chunk %d, past the medium's end", i), out, err, opt); err != nil {
			return err
		}
	}
	return nil
}

// truncated: the medium loses its tail after the source was made (a file
// truncated under the reader, a server whose file shrank): reads that now
// come up short are errors.
func truncated(ctx context.Context, t testing.TB, newSource New, opt Options) error {
	m := &medium{data: image()}
	src := newSource(t, Medium{ReaderAt: m, Size: int64(len(m.data))})
	cs := chunks(int64(len(m.data)))
	m.cut.Store(cs[1].Offset + 10)
	_, out, err := read(ctx, src, cs, 1)
	if err := failure("chunk 1, cut short", out, err, opt); err != nil {
		return err
	}
	if _, out, err := read(ctx, src, cs, 0); err != nil || !bytes.Equal(out, want(m.data, cs[0])) {
		return fmt.Errorf("chunk 0, before the cut: %v", err)
	}
	return nil
}

// failing: a medium that fails to read one chunk's bytes fails that
// chunk, and only that one.
func failing(ctx context.Context, t testing.TB, newSource New, opt Options) error {
	m := &medium{data: image()}
	src := newSource(t, Medium{ReaderAt: m, Size: int64(len(m.data))})
	cs := chunks(int64(len(m.data)))
	m.badFrom.Store(cs[2].Offset + 5)
	m.badTo.Store(cs[2].Offset + 6)
	_, out, err := read(ctx, src, cs, 2)
	if err := failure("chunk 2, unreadable", out, err, opt); err != nil {
		return err
	}
	for _, i := range []int{1, 3} {
		if _, out, err := read(ctx, src, cs, i); err != nil || !bytes.Equal(out, want(m.data, cs[i])) {
			return fmt.Errorf("chunk %d, beside the unreadable one: %v", i, err)
		}
	}
	return nil
}
