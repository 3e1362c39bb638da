// Package fsystest is the conformance suite every fsys.FS must pass. It
// checks the behaviour the device agent relies on (open flags, offsets,
// holes, rename and remove, directory listing, fsys.WriteFile), so that
// running it on fsys.OS and on the power-loss model (package powercut)
// shows that the two agree while the power stays on. Durability after a
// power cut is not observable through fsys.FS and is tested by powercut
// itself.
//
// Paths are built with filepath.Join from the root the caller provides, as
// fsys.WriteFile does; the suite is meant for Linux, where that is also a
// slash-separated path.
package fsystest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/rampartfw/rampart/internal/fsys"
)

// Run runs the suite. newFS is called once per subtest and returns a fresh
// filesystem and an existing, empty directory in it that the subtest may
// use.
func Run(t *testing.T, newFS func(t *testing.T) (fs fsys.FS, root string)) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fsy, root := newFS(t)
			c.run(t, &env{t: t, fs: fsy, root: root})
		})
	}
}

var cases = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"OpenMissing", openMissing},
	{"CreateExcl", createExcl},
	{"CreateKeepsContent", createKeepsContent},
	{"Trunc", trunc},
	{"ReadOnlyRefusesWrites", readOnlyRefusesWrites},
	{"WriteOnlyRefusesReads", writeOnlyRefusesReads},
	{"Append", appendMode},
	{"SequentialReadWrite", sequentialReadWrite},
	{"WriteAtKeepsOffset", writeAtKeepsOffset},
	{"HolesAndWritesPastEnd", holes},
	{"ReadAtPastEnd", readAtPastEnd},
	{"NegativeOffsets", negativeOffsets},
	{"SizeKeepsOffset", sizeKeepsOffset},
	{"Closed", closed},
	{"RenameOverExisting", renameOverExisting},
	{"RenameMissing", renameMissing},
	{"RenameAcrossDirectories", renameAcrossDirectories},
	{"RenameFileOverDirectory", renameFileOverDirectory},
	{"OpenFileFollowsInode", openFileFollowsInode},
	{"Remove", remove},
	{"MkdirAll", mkdirAll},
	{"ReadDirSorted", readDirSorted},
	{"SyncDir", syncDir},
	{"WriteFile", writeFile},
	{"ReadFileLimit", readFileLimit},
	{"RemoveTemps", removeTemps},
	{"ConcurrentWriteAt", concurrentWriteAt},
}

// env carries one subtest's filesystem and the helpers every case uses.
type env struct {
	t    *testing.T
	fs   fsys.FS
	root string
}

func (e *env) path(elem ...string) string {
	return filepath.Join(append([]string{e.root}, elem...)...)
}

func (e *env) open(name string, flag int) fsys.File {
	e.t.Helper()
	f, err := e.fs.OpenFile(name, flag, 0o644)
	if err != nil {
		e.t.Fatalf("OpenFile(%s, %#x): %v", name, flag, err)
	}
	return f
}

// put creates or replaces name with data through the FS under test.
func (e *env) put(name string, data []byte) {
	e.t.Helper()
	f := e.open(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if n, err := f.Write(data); err != nil || n != len(data) {
		e.t.Fatalf("Write(%s) = %d, %v; want %d, nil", name, n, err, len(data))
	}
	if err := f.Close(); err != nil {
		e.t.Fatalf("Close(%s): %v", name, err)
	}
}

// get reads name whole through the FS under test.
func (e *env) get(name string) []byte {
	e.t.Helper()
	b, err := fsys.ReadFile(e.fs, name, 1<<20)
	if err != nil {
		e.t.Fatalf("ReadFile(%s): %v", name, err)
	}
	return b
}

func (e *env) wantContent(name string, want []byte) {
	e.t.Helper()
	if got := e.get(name); !bytes.Equal(got, want) {
		e.t.Fatalf("%s holds %q, want %q", name, got, want)
	}
}

func (e *env) wantMissing(name string) {
	e.t.Helper()
	f, err := e.fs.OpenFile(name, os.O_RDONLY, 0)
	if err == nil {
		f.Close()
		e.t.Fatalf("%s exists, want it missing", name)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		e.t.Fatalf("OpenFile(%s) = %v, want an error satisfying errors.Is(err, fs.ErrNotExist)", name, err)
	}
}

func (e *env) wantSize(f fsys.File, want int64) {
	e.t.Helper()
	if got, err := f.Size(); err != nil || got != want {
		e.t.Fatalf("Size() = %d, %v; want %d, nil", got, err, want)
	}
}

func (e *env) wantDir(dir string, want ...string) {
	e.t.Helper()
	got, err := e.fs.ReadDir(dir)
	if err != nil {
		e.t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	if want == nil {
		want = []string{}
	}
	if got == nil {
		got = []string{}
	}
	if !slices.Equal(got, want) {
		e.t.Fatalf("ReadDir(%s) = %q, want %q", dir, got, want)
	}
}

func wantNotExist(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s = %v, want an error satisfying errors.Is(err, fs.ErrNotExist)", what, err)
	}
}

func openMissing(t *testing.T, e *env) {
	for _, flag := range []int{os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_RDWR | os.O_TRUNC} {
		_, err := e.fs.OpenFile(e.path("missing"), flag, 0o644)
		wantNotExist(t, fmt.Sprintf("OpenFile(missing, %#x)", flag), err)
	}
	// O_CREATE makes the file, not its directory.
	_, err := e.fs.OpenFile(e.path("nodir", "f"), os.O_WRONLY|os.O_CREATE, 0o644)
	wantNotExist(t, "OpenFile(nodir/f, O_CREATE)", err)
	e.wantDir(e.root)
}

func createExcl(t *testing.T, e *env) {
	name := e.path("f")
	f := e.open(name, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	e.wantSize(f, 0)
	if _, err := f.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err := e.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second O_CREATE|O_EXCL = %v, want an error satisfying errors.Is(err, fs.ErrExist)", err)
	}
	e.wantContent(name, []byte("first"))
}

func createKeepsContent(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("hello"))
	f := e.open(name, os.O_RDWR|os.O_CREATE)
	e.wantSize(f, 5)
	// The offset starts at 0, so this overwrites.
	if _, err := f.Write([]byte("J")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.wantContent(name, []byte("Jello"))
}

func trunc(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, bytes.Repeat([]byte("x"), 2000))
	f := e.open(name, os.O_RDWR|os.O_TRUNC)
	e.wantSize(f, 0)
	if _, err := f.Write([]byte("short")); err != nil {
		t.Fatal(err)
	}
	e.wantSize(f, 5)
	f.Close()
	e.wantContent(name, []byte("short"))
}

func readOnlyRefusesWrites(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("keep"))
	f := e.open(name, os.O_RDONLY)
	defer f.Close()
	if n, err := f.Write([]byte("no")); err == nil || n != 0 {
		t.Fatalf("Write on O_RDONLY = %d, %v; want 0 and an error", n, err)
	}
	if n, err := f.WriteAt([]byte("no"), 1); err == nil || n != 0 {
		t.Fatalf("WriteAt on O_RDONLY = %d, %v; want 0 and an error", n, err)
	}
	e.wantContent(name, []byte("keep"))
	// Reading still works.
	b := make([]byte, 4)
	if n, err := f.ReadAt(b, 0); err != nil || n != 4 || string(b) != "keep" {
		t.Fatalf("ReadAt on O_RDONLY = %d, %v, %q", n, err, b)
	}
}

func writeOnlyRefusesReads(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("data"))
	f := e.open(name, os.O_WRONLY)
	defer f.Close()
	b := make([]byte, 4)
	if n, err := f.Read(b); err == nil || n != 0 {
		t.Fatalf("Read on O_WRONLY = %d, %v; want 0 and an error", n, err)
	}
	if n, err := f.ReadAt(b, 0); err == nil || n != 0 {
		t.Fatalf("ReadAt on O_WRONLY = %d, %v; want 0 and an error", n, err)
	}
}

func appendMode(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("abc"))
	a := e.open(name, os.O_WRONLY|os.O_APPEND)
	defer a.Close()
	if _, err := a.Write([]byte("de")); err != nil {
		t.Fatal(err)
	}
	// Another handle grows the file; the next append still goes to the end.
	w := e.open(name, os.O_WRONLY)
	if _, err := w.WriteAt([]byte("XYZ"), 5); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := a.Write([]byte("f")); err != nil {
		t.Fatal(err)
	}
	// os refuses WriteAt on an O_APPEND file, because Linux would ignore
	// the offset; a model must refuse it too.
	if _, err := a.WriteAt([]byte("!"), 0); err == nil {
		t.Fatal("WriteAt on an O_APPEND file succeeded")
	}
	e.wantContent(name, []byte("abcdeXYZf"))
}

func sequentialReadWrite(t *testing.T, e *env) {
	name := e.path("f")
	f := e.open(name, os.O_RDWR|os.O_CREATE)
	defer f.Close()
	for _, s := range []string{"one ", "two ", "three"} {
		if n, err := f.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	e.wantSize(f, 13)
	r := e.open(name, os.O_RDONLY)
	defer r.Close()
	var got []byte
	b := make([]byte, 5)
	for {
		n, err := r.Read(b)
		got = append(got, b[:n]...)
		if err == io.EOF {
			if n != 0 {
				t.Fatalf("Read returned %d bytes with io.EOF", n)
			}
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if n == 0 {
			t.Fatal("Read returned 0, nil")
		}
	}
	if string(got) != "one two three" {
		t.Fatalf("read %q", got)
	}
	// At the end, Read keeps returning io.EOF; an empty buffer is not an
	// error.
	if n, err := r.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("Read at end = %d, %v; want 0, io.EOF", n, err)
	}
}

func writeAtKeepsOffset(t *testing.T, e *env) {
	name := e.path("f")
	f := e.open(name, os.O_RDWR|os.O_CREATE)
	defer f.Close()
	if _, err := f.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("Z"), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("cd")); err != nil {
		t.Fatal(err)
	}
	e.wantContent(name, []byte("abcd\x00Z"))
	// ReadAt does not move the offset either.
	r := e.open(name, os.O_RDONLY)
	defer r.Close()
	b := make([]byte, 2)
	if _, err := r.ReadAt(b, 2); err != nil || string(b) != "cd" {
		t.Fatalf("ReadAt(2) = %q, %v", b, err)
	}
	if _, err := r.Read(b); err != nil || string(b) != "ab" {
		t.Fatalf("Read after ReadAt = %q, %v; want \"ab\"", b, err)
	}
}

func holes(t *testing.T, e *env) {
	name := e.path("f")
	f := e.open(name, os.O_RDWR|os.O_CREATE)
	defer f.Close()
	if n, err := f.WriteAt([]byte("tail"), 1000); err != nil || n != 4 {
		t.Fatalf("WriteAt(1000) = %d, %v", n, err)
	}
	e.wantSize(f, 1004)
	b := make([]byte, 1004)
	if n, err := f.ReadAt(b, 0); err != nil || n != 1004 {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(b, append(make([]byte, 1000), "tail"...)) {
		t.Fatal("the hole does not read as zeros")
	}

	// A Write at an offset past the end (another handle truncated the
	// file) leaves a hole of zeros too.
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	e.open(name, os.O_WRONLY|os.O_TRUNC).Close()
	e.wantSize(f, 0)
	if _, err := f.Write([]byte("de")); err != nil {
		t.Fatal(err)
	}
	e.wantContent(name, []byte("\x00\x00\x00de"))

	// Overwriting inside the file keeps its size.
	if _, err := f.WriteAt([]byte("Q"), 1); err != nil {
		t.Fatal(err)
	}
	e.wantSize(f, 5)
	e.wantContent(name, []byte("\x00Q\x00de"))
}

func readAtPastEnd(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("0123456789"))
	f := e.open(name, os.O_RDONLY)
	defer f.Close()
	b := make([]byte, 4)
	if n, err := f.ReadAt(b, 8); n != 2 || err != io.EOF || string(b[:2]) != "89" {
		t.Fatalf("ReadAt across the end = %d, %v, %q; want 2, io.EOF, \"89\"", n, err, b[:n])
	}
	if n, err := f.ReadAt(b, 10); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := f.ReadAt(b, 100); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past the end = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := f.ReadAt(b, 6); n != 4 || err != nil || string(b) != "6789" {
		t.Fatalf("ReadAt ending at the end = %d, %v, %q; want 4, nil", n, err, b)
	}
}

func negativeOffsets(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("data"))
	f := e.open(name, os.O_RDWR)
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("ReadAt(-1) succeeded")
	}
	if _, err := f.WriteAt([]byte("x"), -1); err == nil {
		t.Fatal("WriteAt(-1) succeeded")
	}
	e.wantContent(name, []byte("data"))
}

func sizeKeepsOffset(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("hello"))
	f := e.open(name, os.O_RDWR)
	defer f.Close()
	b := make([]byte, 2)
	if _, err := io.ReadFull(f, b); err != nil || string(b) != "he" {
		t.Fatalf("Read = %q, %v", b, err)
	}
	e.wantSize(f, 5)
	// Size must not move the offset: the next Read continues after "he".
	b = make([]byte, 3)
	if n, err := io.ReadFull(f, b); err != nil || string(b) != "llo" {
		t.Fatalf("Read after Size = %q, %v (%d bytes); want \"llo\"", b[:n], err, n)
	}
	e.wantSize(f, 5)
	if _, err := f.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	e.wantContent(name, []byte("hello!"))
}

func closed(t *testing.T, e *env) {
	name := e.path("f")
	f := e.open(name, os.O_RDWR|os.O_CREATE)
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for what, err := range map[string]error{
		"Close": f.Close(),
		"Read":  second(f.Read(make([]byte, 1))),
		"Write": second(f.Write([]byte("x"))),
		"Sync":  f.Sync(),
	} {
		if !errors.Is(err, fs.ErrClosed) {
			t.Errorf("%s after Close = %v, want an error satisfying errors.Is(err, fs.ErrClosed)", what, err)
		}
	}
	e.wantContent(name, nil)
}

func second[T any](_ T, err error) error { return err }

func renameOverExisting(t *testing.T, e *env) {
	a, b := e.path("a"), e.path("b")
	e.put(a, []byte("new"))
	e.put(b, []byte("old and longer"))
	if err := e.fs.Rename(a, b); err != nil {
		t.Fatalf("Rename: %v", err)
	}
	e.wantContent(b, []byte("new"))
	e.wantMissing(a)
	e.wantDir(e.root, "b")
	// Renaming a file onto itself changes nothing.
	if err := e.fs.Rename(b, b); err != nil {
		t.Fatalf("Rename onto itself: %v", err)
	}
	e.wantContent(b, []byte("new"))
}

func renameMissing(t *testing.T, e *env) {
	wantNotExist(t, "Rename(missing, x)", e.fs.Rename(e.path("missing"), e.path("x")))
	e.put(e.path("a"), []byte("a"))
	wantNotExist(t, "Rename(a, nodir/a)", e.fs.Rename(e.path("a"), e.path("nodir", "a")))
	e.wantContent(e.path("a"), []byte("a"))
	e.wantDir(e.root, "a")
}

func renameAcrossDirectories(t *testing.T, e *env) {
	if err := e.fs.MkdirAll(e.path("d1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.fs.MkdirAll(e.path("d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.put(e.path("d1", "f"), []byte("moved"))
	if err := e.fs.Rename(e.path("d1", "f"), e.path("d2", "g")); err != nil {
		t.Fatalf("Rename: %v", err)
	}
	e.wantDir(e.path("d1"))
	e.wantDir(e.path("d2"), "g")
	e.wantContent(e.path("d2", "g"), []byte("moved"))
}

func renameFileOverDirectory(t *testing.T, e *env) {
	if err := e.fs.MkdirAll(e.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.put(e.path("f"), []byte("f"))
	if err := e.fs.Rename(e.path("f"), e.path("d")); err == nil {
		t.Fatal("renaming a file over a directory succeeded")
	}
	e.wantDir(e.root, "d", "f")
}

// openFileFollowsInode checks that an open file is the file, not its name:
// writes through it after a rename land at the new name, and it stays
// readable after its name is removed.
func openFileFollowsInode(t *testing.T, e *env) {
	a, b := e.path("a"), e.path("b")
	f := e.open(a, os.O_RDWR|os.O_CREATE)
	defer f.Close()
	if _, err := f.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := e.fs.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	e.wantContent(b, []byte("onetwo"))
	if err := e.fs.Remove(b); err != nil {
		t.Fatal(err)
	}
	e.wantMissing(b)
	buf := make([]byte, 6)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "onetwo" {
		t.Fatalf("ReadAt after Remove = %q, %v", buf, err)
	}
	// A new file at the old name is a different file.
	e.put(b, []byte("other"))
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "onetwo" {
		t.Fatalf("ReadAt after re-creating the name = %q, %v", buf, err)
	}
}

func remove(t *testing.T, e *env) {
	f := e.path("f")
	e.put(f, []byte("x"))
	if err := e.fs.Remove(f); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	e.wantMissing(f)
	wantNotExist(t, "Remove(missing)", e.fs.Remove(f))

	d := e.path("d")
	if err := e.fs.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	e.put(e.path("d", "x"), []byte("x"))
	if err := e.fs.Remove(d); err == nil {
		t.Fatal("Remove of a non-empty directory succeeded")
	}
	e.wantContent(e.path("d", "x"), []byte("x"))
	if err := e.fs.Remove(e.path("d", "x")); err != nil {
		t.Fatal(err)
	}
	if err := e.fs.Remove(d); err != nil {
		t.Fatalf("Remove of an empty directory: %v", err)
	}
	e.wantDir(e.root)
}

func mkdirAll(t *testing.T, e *env) {
	deep := e.path("a", "b", "c")
	for i := range 2 { // the second call finds everything there
		if err := e.fs.MkdirAll(deep, 0o755); err != nil {
			t.Fatalf("MkdirAll #%d: %v", i+1, err)
		}
	}
	e.wantDir(e.root, "a")
	e.wantDir(e.path("a"), "b")
	e.wantDir(deep)
	e.put(e.path("a", "b", "c", "f"), []byte("x"))
	if err := e.fs.MkdirAll(e.path("a"), 0o755); err != nil {
		t.Fatalf("MkdirAll of an existing parent: %v", err)
	}
	e.wantContent(e.path("a", "b", "c", "f"), []byte("x"))
	// A file in the way is an error, and nothing is created under it.
	e.put(e.path("file"), []byte("x"))
	if err := e.fs.MkdirAll(e.path("file", "sub"), 0o755); err == nil {
		t.Fatal("MkdirAll through a file succeeded")
	}
	if err := e.fs.MkdirAll(e.path("file"), 0o755); err == nil {
		t.Fatal("MkdirAll of an existing file succeeded")
	}
	e.wantContent(e.path("file"), []byte("x"))
}

func readDirSorted(t *testing.T, e *env) {
	for _, n := range []string{"c", "a", ".hidden", "B", "b"} {
		e.put(e.path(n), nil)
	}
	if err := e.fs.MkdirAll(e.path("aa"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.wantDir(e.root, ".hidden", "B", "a", "aa", "b", "c")
	_, err := e.fs.ReadDir(e.path("missing"))
	wantNotExist(t, "ReadDir(missing)", err)
	if _, err := e.fs.ReadDir(e.path("a")); err == nil {
		t.Fatal("ReadDir of a file succeeded")
	}
}

func syncDir(t *testing.T, e *env) {
	if err := e.fs.SyncDir(e.root); err != nil {
		t.Fatalf("SyncDir: %v", err)
	}
	wantNotExist(t, "SyncDir(missing)", e.fs.SyncDir(e.path("missing")))
	f := e.open(e.path("f"), os.O_RDWR|os.O_CREATE)
	defer f.Close()
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := e.fs.SyncDir(e.root); err != nil {
		t.Fatalf("SyncDir: %v", err)
	}
}

func writeFile(t *testing.T, e *env) {
	name := e.path("state")
	if err := fsys.WriteFile(e.fs, name, []byte("first version, long"), 0o600); err != nil {
		t.Fatalf("WriteFile (create): %v", err)
	}
	e.wantContent(name, []byte("first version, long"))
	if err := fsys.WriteFile(e.fs, name, []byte("second"), 0o600); err != nil {
		t.Fatalf("WriteFile (replace): %v", err)
	}
	e.wantContent(name, []byte("second"))
	if err := fsys.WriteFile(e.fs, name, nil, 0o600); err != nil {
		t.Fatalf("WriteFile (empty): %v", err)
	}
	e.wantContent(name, nil)
	// No temporary file is left behind.
	e.wantDir(e.root, "state")
	err := fsys.WriteFile(e.fs, e.path("nodir", "state"), []byte("x"), 0o600)
	wantNotExist(t, "WriteFile(nodir/state)", err)
	e.wantDir(e.root, "state")
}

func readFileLimit(t *testing.T, e *env) {
	name := e.path("f")
	e.put(name, []byte("12345"))
	if b, err := fsys.ReadFile(e.fs, name, 5); err != nil || string(b) != "12345" {
		t.Fatalf("ReadFile(limit 5) = %q, %v", b, err)
	}
	if _, err := fsys.ReadFile(e.fs, name, 4); err == nil {
		t.Fatal("ReadFile of a file over the limit succeeded")
	}
	_, err := fsys.ReadFile(e.fs, e.path("missing"), 5)
	wantNotExist(t, "ReadFile(missing)", err)
}

func removeTemps(t *testing.T, e *env) {
	e.put(e.path("state"), []byte("s"))
	e.put(e.path(".state.tmp-7"), []byte("t"))
	e.put(e.path(".other.tmp-12"), []byte("t"))
	e.put(e.path("keep.tmp-1"), []byte("k")) // not hidden: not ours
	if err := fsys.RemoveTemps(e.fs, e.root); err != nil {
		t.Fatalf("RemoveTemps: %v", err)
	}
	e.wantDir(e.root, "keep.tmp-1", "state")
	if err := fsys.RemoveTemps(e.fs, e.path("missing")); err != nil {
		t.Fatalf("RemoveTemps(missing) = %v, want nil", err)
	}
}

// concurrentWriteAt writes disjoint ranges of one File from several
// goroutines, as the installer does; run with -race.
func concurrentWriteAt(t *testing.T, e *env) {
	const workers, chunks, chunk = 8, 16, 700 // chunks straddle sectors
	name := e.path("slot")
	f := e.open(name, os.O_RDWR|os.O_CREATE)
	defer f.Close()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for c := w; c < workers*chunks; c += workers {
				p := bytes.Repeat([]byte{byte(c)}, chunk)
				if n, err := f.WriteAt(p, int64(c*chunk)); err != nil || n != chunk {
					errs <- fmt.Errorf("WriteAt chunk %d = %d, %v", c, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	e.wantSize(f, workers*chunks*chunk)
	got := e.get(name)
	for c := range workers * chunks {
		if !bytes.Equal(got[c*chunk:(c+1)*chunk], bytes.Repeat([]byte{byte(c)}, chunk)) {
			t.Fatalf("chunk %d is wrong", c)
		}
	}
}
