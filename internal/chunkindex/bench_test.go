package chunkindex

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// benchImageSize is the size of the generated image the benchmarks read.
const benchImageSize = 256 << 20

var (
	benchOnce sync.Once
	benchDir  string
	benchPath string
	benchErr  error
)

// benchImage returns the path of a 256 MiB random file in a temporary
// directory, created once per test binary and removed by TestMain.
func benchImage(b *testing.B) string {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "chunkindex-bench-")
		if benchErr != nil {
			return
		}
		benchPath = filepath.Join(benchDir, "image")
		f, err := os.Create(benchPath)
		if err != nil {
			benchErr = err
			return
		}
		block := randBytes(16<<20, 42)
		for off := 0; off < benchImageSize; off += len(block) {
			block[0]++ // make the 16 MiB blocks differ
			if _, err := f.Write(block); err != nil {
				benchErr = err
			}
		}
		if err := f.Close(); err != nil && benchErr == nil {
			benchErr = err
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

var benchChunkSizes = []struct {
	name string
	size int64
}{
	{"64KiB", 64 << 10},
	{"256KiB", 256 << 10},
	{"1MiB", 1 << 20},
	{"4MiB", 4 << 20},
}

// reportIndexOverhead adds the index size and its share of the image.
func reportIndexOverhead(b *testing.B, cs int64) {
	chunks := (benchImageSize + cs - 1) / cs
	idx := HeaderSize + EntrySize*chunks
	b.ReportMetric(float64(idx), "index-bytes")
	b.ReportMetric(100*float64(idx)/benchImageSize, "index-%")
}

// BenchmarkVerifyStream reads the file sequentially and verifies it with
// the default worker count (GOMAXPROCS), discarding the output.
func BenchmarkVerifyStream(b *testing.B) {
	path := benchImage(b)
	for _, c := range benchChunkSizes {
		b.Run("chunk="+c.name, func(b *testing.B) {
			ix, err := BuildFile(path, c.size)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchImageSize)
			b.ResetTimer()
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				err = ix.VerifyStream(f, nil, 0)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			reportIndexOverhead(b, c.size)
		})
	}
}

// BenchmarkVerifyStreamWrite is VerifyStream with a writer that copies the
// verified bytes (as a device writing to flash would), to show the cost
// of in-order delivery.
func BenchmarkVerifyStreamWrite(b *testing.B) {
	path := benchImage(b)
	for _, c := range benchChunkSizes {
		b.Run("chunk="+c.name, func(b *testing.B) {
			ix, err := BuildFile(path, c.size)
			if err != nil {
				b.Fatal(err)
			}
			sink := make([]byte, c.size)
			w := writerFunc(func(p []byte) (int, error) { return copy(sink, p), nil })
			b.SetBytes(benchImageSize)
			b.ResetTimer()
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				err = ix.VerifyStream(f, w, 0)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func BenchmarkBuildFile(b *testing.B) {
	path := benchImage(b)
	for _, c := range benchChunkSizes {
		b.Run("chunk="+c.name, func(b *testing.B) {
			b.SetBytes(benchImageSize)
			for b.Loop() {
				if _, err := BuildFile(path, c.size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	path := benchImage(b)
	for _, c := range benchChunkSizes {
		b.Run("chunk="+c.name, func(b *testing.B) {
			b.SetBytes(benchImageSize)
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				_, err = Build(f, c.size)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSHA256File is the baseline: one sequential crypto/sha256 pass
// over the same file (compare with `openssl dgst -sha256`).
func BenchmarkSHA256File(b *testing.B) {
	path := benchImage(b)
	buf := make([]byte, 1<<20)
	b.SetBytes(benchImageSize)
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		_, err = io.CopyBuffer(h, f, buf)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse measures decoding the index of a 256 MiB image.
func BenchmarkParse(b *testing.B) {
	for _, c := range benchChunkSizes {
		b.Run("chunk="+c.name, func(b *testing.B) {
			n := benchImageSize / c.size
			ix := &Index{ChunkSize: c.size, ImageLength: benchImageSize, Chunks: make([]Chunk, n)}
			for i := range ix.Chunks {
				ix.Chunks[i] = Chunk{Offset: int64(i) * c.size, Length: c.size}
			}
			enc, err := ix.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := Parse(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
