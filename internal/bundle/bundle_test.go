package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/bundle/bundletest"
	"github.com/rampartfw/rampart/internal/verify"
)

func sample() (*Contents, []byte) {
	img := bytes.Repeat([]byte("firmware"), 100)
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

// walked is what walk read from a bundle.
type walked struct {
	*Reader
	roots     [][]byte
	md        [][]byte
	logProof  []byte
	index     []byte
	image     []byte
	imageSize int64
}

// walk reads a bundle through the Reader with no trust decisions: every
// root kept, any index size, no hashes. It is the structure alone.
func walk(src io.Reader) (*walked, error) {
	br, err := NewReader(src)
	if err != nil {
		return nil, err
	}
	w := &walked{Reader: br}
	for {
		_, raw, ok, err := br.NextRoot(func(int64) bool { return true })
		if err != nil {
			return w, err
		}
		if !ok {
			break
		}
		w.roots = append(w.roots, raw)
	}
	for _, name := range []string{"metadata/timestamp.json", "metadata/snapshot.json", "metadata/targets.json", "metadata/" + br.Role + ".json"} {
		b, err := br.Metadata(name)
		if err != nil {
			return w, err
		}
		w.md = append(w.md, b)
	}
	if w.logProof, err = br.LogProof(); err != nil {
		return w, err
	}
	if w.index, err = br.index(-1, nil); err != nil {
		return w, err
	}
	if w.imageSize, _, err = br.Image(); err != nil {
		return w, err
	}
	if w.image, err = io.ReadAll(io.LimitReader(br.ImageReader(), 64<<20)); err != nil {
		return w, err
	}
	return w, br.Finish()
}

func TestRoundTrip(t *testing.T) {
	c, img := sample()
	w, err := walk(bytes.NewReader(encode(t, c, img)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.image, img) || len(w.roots) != 2 || string(w.roots[1]) != `{"root":2}` || string(w.index) != "index-bytes" || w.Target != c.Target || string(w.md[3]) != `{"acme":1}` {
		t.Fatal("round trip lost data")
	}
}

// A root the verifier already trusts is skipped unread: its bytes are
// never handed over, so they cost neither memory nor parsing.
func TestSkippedRootsAreNotRead(t *testing.T) {
	c, img := sample()
	br, err := NewReader(bytes.NewReader(encode(t, c, img)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		v, raw, ok, err := br.NextRoot(func(v int64) bool { return v > 1 })
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, string(raw))
		if v == 1 && raw != nil {
			t.Fatal("root 1 was read")
		}
	}
	if len(got) != 2 || got[0] != "" || got[1] != `{"root":2}` {
		t.Fatalf("roots %q", got)
	}
	if _, err := br.Metadata("metadata/timestamp.json"); err != nil {
		t.Fatal(err)
	}
}

func TestLogProofMember(t *testing.T) {
	c, img := sample()
	c.LogProof = []byte(`{"statement":"s","proof":{}}`)
	w, err := walk(bytes.NewReader(encode(t, c, img)))
	if err != nil {
		t.Fatal(err)
	}
	if w.Format != 2 || string(w.logProof) != string(c.LogProof) || string(w.index) != "index-bytes" {
		t.Fatalf("format %d, log proof %q, index %q", w.Format, w.logProof, w.index)
	}

	// Without a proof the bundle is format 1 and LogProof stays nil.
	c.LogProof = nil
	if w, err = walk(bytes.NewReader(encode(t, c, img))); err != nil || w.Format != 1 || w.logProof != nil {
		t.Fatalf("format 1: %v, %+v", err, w)
	}

	// A format 2 manifest without the member, and a format 1 manifest
	// with it, are malformed.
	for name, edit := range map[string]func(c *Contents) []byte{
		"format 2 without log-proof.json": func(c *Contents) []byte {
			b := encode(t, c, img) // format 1
			return fixManifest(bytes.Replace(b, []byte(`{"format":1,`), []byte(`{"format":2,`), 1))
		},
		"format 1 with log-proof.json": func(c *Contents) []byte {
			c.LogProof = []byte(`{}`)
			b := encode(t, c, img)
			return fixManifest(bytes.Replace(b, []byte(`{"format":2,`), []byte(`{"format":1,`), 1))
		},
	} {
		c, _ := sample()
		_, err := walk(bytes.NewReader(edit(c)))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}

	// An oversized proof is refused before it is read.
	c, _ = sample()
	c.LogProof = bytes.Repeat([]byte("x"), MaxLogProof+1)
	if _, err := walk(bytes.NewReader(encode(t, c, img))); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "log-proof.json") {
		t.Errorf("oversized log proof: %v", err)
	}
}

// fixManifest recomputes the first header's checksum after an edit of the
// manifest body (same length).
func fixManifest(b []byte) []byte {
	h := (*[512]byte)(b[:512])
	bundletest.Checksum(h)
	return b
}

func TestWriteRefusesShortImage(t *testing.T) {
	c, img := sample()
	var buf bytes.Buffer
	if err := Write(&buf, c, bytes.NewReader(img[:10])); err == nil {
		t.Fatal("a short image was written")
	}
}

// members returns the sample bundle's members, for hostile rewrites.
func members(t testing.TB) bundletest.Members {
	c, img := sample()
	ms, err := bundletest.Split(encode(t, c, img))
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// hostile builds a bundle with the writer.
func hostile(f func(w *bundletest.Writer)) []byte {
	var buf bytes.Buffer
	w := &bundletest.Writer{W: &buf}
	f(w)
	return buf.Bytes()
}

// hostileCase is one hostile bundle; data builds it (lazily: some are
// large), big marks those too large for fuzz seeds.
type hostileCase struct {
	name string
	data func() []byte
	want error
	msg  string
	big  bool
}

// hostileCases are the shapes an attacker with the stick tries on the
// structure. They are also the fuzz seeds.
func hostileCases(t testing.TB) []hostileCase {
	c, img := sample()
	good := encode(t, c, img)
	ms := members(t)
	end := len(good) - 1024 // the end-of-archive blocks
	second := bytes.Repeat([]byte{'x'}, 70<<10)
	return []hostileCase{
		{"empty", func() []byte { return nil }, ErrTruncated, "without its end-of-archive blocks", false},
		{"not tar", func() []byte { return []byte(strings.Repeat("x", 2048)) }, ErrMalformed, "not a tar header", false},
		{"cut in metadata", func() []byte { return good[:1500] }, ErrTruncated, "", false},
		{"wrong role", func() []byte {
			return encode(t, &Contents{Manifest: Manifest{Target: "acme-gw/2.4.1/fw.img", Role: "other"}, Roots: c.Roots, ImageSize: c.ImageSize}, img)
		}, ErrMalformed, "names role", false},
		{"bad target", func() []byte {
			return encode(t, &Contents{Manifest: Manifest{Target: "../x", Role: "acme-gw"}, Roots: c.Roots, ImageSize: c.ImageSize}, img)
		}, ErrMalformed, "PRODUCT/VERSION/FILENAME", false},
		{"no roots", func() []byte { return encode(t, &Contents{Manifest: c.Manifest, ImageSize: c.ImageSize}, img) }, ErrMalformed, "expected member metadata/1.root.json", false},
		{"manifest case variant keys", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.File("rampart-bundle.json", []byte(`{"FORMAT":1,"TARGET":"acme-gw/2.4.1/fw.img","role":"acme-gw"}`))
				ms[1:].From(w, ms[1].Name)
				w.End()
			})
		}, ErrMalformed, "rampart-bundle.json", false},
		{"manifest trailing data", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.File("rampart-bundle.json", []byte(`{"format":1,"target":"acme-gw/2.4.1/fw.img","role":"acme-gw"}{"format":1} garbage`))
				ms[1:].From(w, ms[1].Name)
				w.End()
			})
		}, ErrMalformed, "rampart-bundle.json", false},
		{"1 MiB GNU long name before the index", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "index")
				w.GNULongName(strings.Repeat("\x1b[2J", 256<<10))
				ms.From(w, "index")
				w.End()
			})
		}, ErrMalformed, "a member name of 1048577 bytes", true},
		{"GNU long name under the bound", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "index")
				w.GNULongName("metadata/" + strings.Repeat("a", 200))
				ms.From(w, "index")
				w.End()
			})
		}, ErrMalformed, `expected member index, found "metadata/aaaa`, false},
		{"1 MiB PAX header", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.PAX("path=" + strings.Repeat("a", 1<<20))
				ms.From(w, "rampart-bundle.json")
				w.End()
			})
		}, ErrMalformed, "a PAX header of 1048", true},
		{"PAX path over the bound", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.PAX("path=" + strings.Repeat("a", 300))
				ms.From(w, "rampart-bundle.json")
				w.End()
			})
		}, ErrMalformed, "a member name of 300 bytes", false},
		{"two PAX headers", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.PAX("mtime=1")
				w.PAX("mtime=2")
				ms.From(w, "rampart-bundle.json")
				w.End()
			})
		}, ErrMalformed, "more than one PAX header", false},
		{"a thousand PAX headers", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				for range 1000 {
					w.PAX("mtime=1")
				}
				ms.From(w, "rampart-bundle.json")
				w.End()
			})
		}, ErrMalformed, "more than one PAX header", false},
		{"PAX records over the bound", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.PAX(strings.Split(strings.Repeat("mtime=1,", 17), ",")[:17]...)
				ms.From(w, "rampart-bundle.json")
				w.End()
			})
		}, ErrMalformed, "more than 16 records", false},
		{"PAX sparse image", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "image")
				w.PAX("GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.realsize=1073741824")
				ms.From(w, "image")
				w.End()
			})
		}, ErrMalformed, "sparse", false},
		{"global PAX header", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				w.Header("g", 'g', 0)
				ms.From(w, "rampart-bundle.json")
				w.End()
			})
		}, ErrMalformed, "not a regular file", false},
		{"PAX header without a member", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "image")
				w.PAX("mtime=1")
				w.End()
			})
		}, ErrMalformed, "belongs to no member", false},
		{"symlink", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "index")
				w.Header("index", '2', 0)
				w.End()
			})
		}, ErrMalformed, `member "index" is not a regular file`, false},
		{"negative size", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "index")
				w.Header("index", '0', -1)
				w.End()
			})
		}, ErrMalformed, "size", false},
		{"huge metadata size", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "metadata/targets.json")
				w.Header("metadata/targets.json", '0', 1<<40)
				w.End()
			})
		}, ErrMalformed, "the limit is", false},
		{"escaping name", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.Before(w, "index")
				w.File("../../etc/index", nil)
				w.End()
			})
		}, ErrEscape, `"../../etc/index"`, false},
		{"bad checksum", func() []byte {
			return func() []byte {
				b := bytes.Clone(good)
				b[3] ^= 1
				return b
			}()
		}, ErrMalformed, "bad checksum", false},
		{"byte after the end", func() []byte { return append(bytes.Clone(good), 'x') }, ErrTrailing, "non-zero bytes after", false},
		{"70 KiB of zeros after the end", func() []byte { return append(bytes.Clone(good), make([]byte, 70<<10)...) }, ErrTrailing, "more than 65536 bytes", true},
		{"70 KiB of data after the end", func() []byte { return append(bytes.Clone(good), second...) }, ErrTrailing, "non-zero bytes", true},
		{"garbage in the end-of-archive blocks", func() []byte {
			return func() []byte {
				b := bytes.Clone(good)
				b[end+700] = 1
				return b
			}()
		}, ErrTrailing, "in the end-of-archive blocks", false},
		{"no end-of-archive blocks", func() []byte { return good[:end] }, ErrTruncated, "end-of-archive blocks are missing or cut (0 of 1024", false},
		{"half the end-of-archive blocks", func() []byte { return good[:end+512] }, ErrTruncated, "(512 of 1024", false},
		{"cut inside the end-of-archive blocks", func() []byte { return good[:end+700] }, ErrTruncated, "(700 of 1024", false},
		{"member after the image", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.From(w, "rampart-bundle.json")
				w.File("payload.sh", []byte("#!/bin/sh\n"))
				w.End()
			})
		}, ErrTrailing, `unexpected member "payload.sh" after the image`, false},
		{"second image", func() []byte {
			return hostile(func(w *bundletest.Writer) {
				ms.From(w, "rampart-bundle.json")
				w.File("image", ms[len(ms)-1].Body)
				w.End()
			})
		}, ErrTrailing, `unexpected member "image" after the image`, false},
		{"cut inside the image", func() []byte { return good[:len(good)-1024-400] }, ErrTruncated, "ends inside a member", false},
		{"metadata over the budget", nil, ErrMalformed, "the metadata of a bundle may take at most", true},
	}
}

// overBudget streams three root members of MaxMetadata bytes each: the
// third passes the metadata budget. Streamed, because building 24 MiB is
// slow under the race detector.
func overBudget(t testing.TB) io.Reader {
	ms := members(t)
	var rs []io.Reader
	head := func(f func(w *bundletest.Writer)) {
		rs = append(rs, bytes.NewReader(hostile(f)))
	}
	head(func(w *bundletest.Writer) { w.File("rampart-bundle.json", ms[0].Body) })
	for i := 1; i <= 3; i++ {
		head(func(w *bundletest.Writer) { w.Header(fmt.Sprintf("metadata/%d.root.json", i), '0', MaxMetadata) })
		rs = append(rs, io.LimitReader(zeros{}, MaxMetadata))
	}
	head(func(w *bundletest.Writer) { w.End() })
	return io.MultiReader(rs...)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestReaderRefusals(t *testing.T) {
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			var src io.Reader
			if tc.data == nil {
				src = overBudget(t)
			} else {
				src = bytes.NewReader(tc.data())
			}
			_, err := walk(src)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
			// Every message is bounded, whatever the bundle carries.
			if len(err.Error()) > 1024 || strings.ContainsRune(err.Error(), 0x1b) {
				t.Fatalf("unbounded message (%d bytes)", len(err.Error()))
			}
		})
	}
}

func TestReaderBoundsMetadata(t *testing.T) {
	c, img := sample()
	c.Targets = bytes.Repeat([]byte{' '}, MaxMetadata+1)
	_, err := walk(bytes.NewReader(encode(t, c, img)))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("got %v", err)
	}
}

// A medium that fails is an environment error, never a refusal.
func TestReadErrorIsNotMalformed(t *testing.T) {
	c, img := sample()
	good := encode(t, c, img)
	for _, at := range []int{100, 3000, len(good) - 1500, len(good) - 10} {
		_, err := walk(io.MultiReader(bytes.NewReader(good[:at]), failing{}))
		var re *ReadError
		if !errors.As(err, &re) || !errors.Is(err, errEIO) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) {
			t.Fatalf("failing at %d: %v", at, err)
		}
		var ve *verify.Error
		if errors.As((&Options{}).refusal(err), &ve) {
			t.Fatalf("failing at %d: a read error became a refusal", at)
		}
	}
}

var errEIO = errors.New("input/output error")

type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, errEIO }

// testdata/sparse.rbundle is the sample bundle with its image member
// rewritten by Python's tarfile as a PAX sparse file (GNU sparse 0.1) that
// claims 1 GiB while the archive holds 8000 bytes; see
// testdata/make-sparse.py.
func TestReaderRefusesSparse(t *testing.T) {
	b, err := os.ReadFile("testdata/sparse.rbundle")
	if err != nil {
		t.Fatal(err)
	}
	w, err := walk(bytes.NewReader(b))
	if err == nil {
		t.Fatalf("sparse image accepted, size %d", w.imageSize)
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

// maxSeed bounds a fuzz seed: the 1 MiB shapes are refused by their
// headers alone, and smaller seeds mutate faster.
const maxSeed = 16 << 10

// TestWriteFuzzSeeds writes the hostile shapes into FuzzReader's seed
// corpus when asked.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUNDLE_WRITE_SEEDS") == "" {
		t.Skip("set BUNDLE_WRITE_SEEDS=1 to regenerate testdata/fuzz/FuzzReader/hostile-*")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range hostileCases(t) {
		if tc.big {
			continue
		}
		data := tc.data()
		if len(data) > maxSeed {
			continue
		}
		name := "hostile-" + strings.NewReplacer(" ", "-", "/", "-").Replace(tc.name)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
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
	// The hostile shapes (testdata/fuzz/FuzzReader holds them too, from
	// TestWriteFuzzSeeds) that are small enough to mutate quickly.
	for _, tc := range hostileCases(f) {
		if data := []byte(nil); !tc.big {
			if data = tc.data(); len(data) <= maxSeed {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := walk(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrEscape) && !errors.Is(err, ErrTrailing) {
				t.Fatalf("unclassified error %v", err)
			}
			if len(err.Error()) > 2048 {
				t.Fatalf("a message of %d bytes", len(err.Error()))
			}
			return
		}
		if len(w.roots) == 0 || len(w.roots) > MaxRoots || len(w.index) > MaxIndex || len(w.logProof) > MaxLogProof || (w.Format == 2) != (w.logProof != nil) {
			t.Fatal("accepted a bundle outside the limits")
		}
		if int64(len(w.image)) != w.imageSize || w.Offset() > int64(len(data)) {
			t.Fatal("image and header disagree")
		}
	})
}

// An image of 8 GiB or more is written with a PAX size record (Write);
// the reader takes its size from it.
func TestLargeImagePAXSize(t *testing.T) {
	var buf bytes.Buffer
	w := &bundletest.Writer{W: &buf}
	members(t).Before(w, "image")
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "image", Mode: 0o644, Size: 9 << 30, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	br, err := NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, _, ok, err := br.NextRoot(func(int64) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
	}
	for _, name := range []string{"metadata/timestamp.json", "metadata/snapshot.json", "metadata/targets.json", "metadata/acme-gw.json"} {
		if _, err := br.Metadata(name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := br.index(-1, nil); err != nil {
		t.Fatal(err)
	}
	size, offset, err := br.Image()
	if err != nil || size != 9<<30 || offset != int64(buf.Len()) {
		t.Fatalf("image size %d at %d (of %d), %v", size, offset, buf.Len(), err)
	}
}
