package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "two" || fi.Mode().Perm() != 0o644 {
		t.Fatalf("%q %v", b, fi.Mode())
	}
}

func TestCreateNewNeverReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := CreateNew(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CreateNew(p, []byte("other"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("got %v", err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "secret" {
		t.Fatal("replaced")
	}
	assertNoTemp(t, filepath.Dir(p))
}

func TestFailedWriteLeavesOldContent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	WriteFile(p, []byte("old"), 0o644)
	err := Write(p, 0o644, func(w io.Writer) error {
		w.Write([]byte("half"))
		return errors.New("interrupted")
	})
	if err == nil {
		t.Fatal("error lost")
	}
	b, _ := os.ReadFile(p)
	if string(b) != "old" {
		t.Fatalf("got %q", b)
	}
	assertNoTemp(t, filepath.Dir(p))
}

func TestWriteBehind(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := WriteBehind(f)
	buf := make([]byte, 1<<20)
	for i := 0; i < 20; i++ {
		buf[0] = byte(i)
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	fi, _ := os.Stat(p)
	if fi.Size() != 20<<20 {
		t.Fatal(fi.Size())
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if len(e.Name()) > 0 && e.Name()[0] == '.' {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}
