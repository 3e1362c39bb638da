package chunkindex

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// seedIndexes returns valid encodings used as fuzz seeds.
func seedIndexes(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, c := range []struct{ size, cs int64 }{
		{0, 1}, {0, 4096}, {1, 1}, {3, 1}, {5, 2}, {16, 16}, {17, 16},
		{4096, 4096}, {3*4096 + 100, 4096}, {100, MaxChunkSize},
	} {
		seeds[fmt.Sprintf("valid-%d-%d", c.size, c.cs)] = mustMarshal(t, mustBuild(t, randBytes(int(c.size), uint64(c.size)), c.cs))
	}
	return seeds
}

// corpusEntries adds truncations and a trailing byte to the valid seeds.
func corpusEntries(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for name, b := range seedIndexes(t) {
		out[name] = b
		if name == "valid-17-16" || name == "valid-12388-4096" {
			for _, cut := range []int{0, 7, 8, HeaderSize - 1, HeaderSize, HeaderSize + EntrySize - 1, len(b) - 1} {
				if cut < len(b) {
					out[fmt.Sprintf("%s-trunc-%d", name, cut)] = b[:cut]
				}
			}
			out[name+"-trailing"] = append(bytes.Clone(b), 0)
		}
	}
	return out
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzParse when
// CHUNKINDEX_WRITE_CORPUS=1 is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CHUNKINDEX_WRITE_CORPUS") != "1" {
		t.Skip("set CHUNKINDEX_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range corpusEntries(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzParse checks that Parse never panics, that its errors wrap
// ErrMalformed, and that whatever it accepts re-encodes to exactly the
// input bytes (the encoding is not malleable).
func FuzzParse(f *testing.F) {
	for _, b := range seedIndexes(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := Parse(data)
		if err != nil {
			if ix != nil {
				t.Fatal("Parse returned an index and an error")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := ix.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a parsed index: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("MarshalBinary(Parse(b)) != b\n in: %x\nout: %x", data, out)
		}
		if len(ix.Chunks) > 0 {
			// VerifyChunk must not panic on a parsed index.
			_ = ix.VerifyChunk(len(ix.Chunks)-1, nil)
		}
	})
}
