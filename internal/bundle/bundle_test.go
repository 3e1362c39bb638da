package bundle

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func sample() (*Contents, []byte) {
	img := bytes.Repeat([]byte("firmware"), 1000)
	return &Contents{
		Manifest:  Manifest{Target: "acme-gw/2.4.1/fw.img", Role: "acme-gw"},
		Roots:     [][]byte{[]byte(`{"root":1}`), []byte(`{"root":2}`)},
		Timestamp: []byte(`{"ts":1}`),
		Snapshot:  []byte(`{"snap":1}`),
		Targets:   []byte(`{"targets":1}`),
		Delegated: []byte(`{"acme":1}`),
		Index:     []byte("index-bytes"),
		ImageSize: int64(len(img)),
	}, img
}

func encode(t testing.TB, c *Contents, img []byte) []byte {
	var buf bytes.Buffer
	if err := Write(&buf, c, bytes.NewReader(img)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	c, img := sample()
	b := encode(t, c, img)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r.Image())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) || len(r.Roots) != 2 || string(r.Roots[1]) != `{"root":2}` || string(r.Index) != "index-bytes" || r.Target != c.Target {
		t.Fatal("round trip lost data")
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestLogProofMember(t *testing.T) {
	c, img := sample()
	c.LogProof = []byte(`{"statement":"s","proof":{}}`)
	r, err := NewReader(bytes.NewReader(encode(t, c, img)))
	if err != nil {
		t.Fatal(err)
	}
	if r.Format != 2 || string(r.LogProof) != string(c.LogProof) || string(r.Index) != "index-bytes" {
		t.Fatalf("format %d, log proof %q, index %q", r.Format, r.LogProof, r.Index)
	}

	// Without a proof the bundle is format 1 and LogProof stays nil.
	c.LogProof = nil
	if r, err = NewReader(bytes.NewReader(encode(t, c, img))); err != nil || r.Format != 1 || r.LogProof != nil {
		t.Fatalf("format 1: %v, %+v", err, r)
	}

	// A format 2 manifest without the member, and a format 1 manifest
	// with it, are malformed.
	for name, edit := range map[string]func(c *Contents) []byte{
		"format 2 without log-proof.json": func(c *Contents) []byte {
			b := encode(t, c, img) // format 1
			return bytes.Replace(b, []byte(`{"format":1,`), []byte(`{"format":2,`), 1)
		},
		"format 1 with log-proof.json": func(c *Contents) []byte {
			c.LogProof = []byte(`{}`)
			b := encode(t, c, img)
			return bytes.Replace(b, []byte(`{"format":2,`), []byte(`{"format":1,`), 1)
		},
	} {
		c, _ := sample()
		_, err := NewReader(bytes.NewReader(edit(c)))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}

	// An oversized proof is refused before it is read.
	c, _ = sample()
	c.LogProof = bytes.Repeat([]byte("x"), MaxLogProof+1)
	if _, err := NewReader(bytes.NewReader(encode(t, c, img))); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "log-proof.json") {
		t.Errorf("oversized log proof: %v", err)
	}
}

func TestWriteRefusesShortImage(t *testing.T) {
	c, img := sample()
	var buf bytes.Buffer
	if err := Write(&buf, c, bytes.NewReader(img[:10])); err == nil {
		t.Fatal("a short image was written")
	}
}

func TestReaderRefusals(t *testing.T) {
	c, img := sample()
	good := encode(t, c, img)
	cases := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "archive ended before the image"},
		{"not tar", []byte(strings.Repeat("x", 2048)), ErrMalformed, ""},
		{"cut in metadata", good[:1500], ErrTruncated, ""},
		{"wrong role", encode(t, &Contents{Manifest: Manifest{Target: "acme-gw/2.4.1/fw.img", Role: "other"}, Roots: c.Roots, ImageSize: c.ImageSize}, img), ErrMalformed, "names role"},
		{"bad target", encode(t, &Contents{Manifest: Manifest{Target: "../x", Role: "acme-gw"}, Roots: c.Roots, ImageSize: c.ImageSize}, img), ErrMalformed, "PRODUCT/VERSION/FILENAME"},
		{"no roots", encode(t, &Contents{Manifest: c.Manifest, ImageSize: c.ImageSize}, img), ErrMalformed, "expected member metadata/1.root.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.data))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestReaderBoundsMetadata(t *testing.T) {
	c, img := sample()
	c.Targets = bytes.Repeat([]byte{' '}, MaxMetadata+1)
	_, err := NewReader(bytes.NewReader(encode(t, c, img)))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("got %v", err)
	}
}

func TestFinishRefusesTrailingData(t *testing.T) {
	c, img := sample()
	b := append(encode(t, c, img), 'x')
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Image())
	if err := r.Finish(); !errors.Is(err, ErrTrailing) {
		t.Fatalf("got %v", err)
	}
}

// testdata/sparse.rbundle is the sample bundle with its image member
// rewritten by Python's tarfile as a PAX sparse file (GNU sparse 0.1) that
// claims 1 GiB while the archive holds 8000 bytes; see
// testdata/make-sparse.py. tar.Writer refuses to write such records.
func TestReaderRefusesSparse(t *testing.T) {
	b, err := os.ReadFile("testdata/sparse.rbundle")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(b))
	if err == nil {
		t.Fatalf("sparse image accepted, size %d", r.ImageSize)
	}
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("got %v", err)
	}
}

// TestWriteSample writes testdata/sample.rbundle when asked, as the input
// of testdata/make-sparse.py.
func TestWriteSample(t *testing.T) {
	if os.Getenv("BUNDLE_WRITE_SAMPLE") == "" {
		t.Skip("set BUNDLE_WRITE_SAMPLE=1 to regenerate testdata/sample.rbundle")
	}
	c, img := sample()
	if err := os.WriteFile("testdata/sample.rbundle", encode(t, c, img), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzReader feeds arbitrary bytes to the reader: it must never panic, and
// must either refuse with one of its errors or yield a bundle whose parts
// are within the limits.
func FuzzReader(f *testing.F) {
	c, img := sample()
	good := encode(f, c, img)
	f.Add(good)
	withProof, _ := sample()
	withProof.LogProof = []byte(`{"statement":"s","proof":{}}`)
	f.Add(encode(f, withProof, img))
	f.Add(good[:1024])
	f.Add(good[:len(good)-1024])
	f.Add(append(bytes.Clone(good), 1, 2, 3))
	f.Add([]byte{})
	if sparse, err := os.ReadFile("testdata/sparse.rbundle"); err == nil {
		f.Add(sparse)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrEscape) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(r.Roots) == 0 || len(r.Roots) > MaxRoots || len(r.Index) > MaxIndex || len(r.LogProof) > MaxLogProof || (r.Format == 2) != (r.LogProof != nil) {
			t.Fatal("accepted a bundle outside the limits")
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Image(), r.ImageSize+1))
		if n > r.ImageSize {
			t.Fatal("image longer than its header")
		}
		_ = r.Finish()
	})
}
