package powercut_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/fsys/fsystest"
	"github.com/rampartfw/rampart/internal/powercut"
)

func TestConformance(t *testing.T) {
	t.Run("Root", func(t *testing.T) {
		fsystest.Run(t, func(t *testing.T) (fsys.FS, string) {
			return powercut.New(), "/"
		})
	})
	t.Run("Nested", func(t *testing.T) {
		fsystest.Run(t, func(t *testing.T) (fsys.FS, string) {
			m := powercut.New()
			must(t, m.MkdirAll("/var/lib/rampart", 0o700))
			return m, "/var/lib/rampart"
		})
	})
	// A restarted Model is a full filesystem too.
	t.Run("Restarted", func(t *testing.T) {
		fsystest.Run(t, func(t *testing.T) (fsys.FS, string) {
			m := powercut.New()
			must(t, m.MkdirAll("/data", 0o700))
			return m.Restart(powercut.Torn, 1), "/data"
		})
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, m fsys.FS, name string, flag int) fsys.File {
	t.Helper()
	f, err := m.OpenFile(name, flag, 0o644)
	if err != nil {
		t.Fatalf("OpenFile(%s): %v", name, err)
	}
	return f
}

func write(t *testing.T, f fsys.File, s string) {
	t.Helper()
	if _, err := f.Write([]byte(s)); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func TestRelativePathsRefused(t *testing.T) {
	m := powercut.New()
	m.Put("/b", []byte("b"))
	errs := map[string]error{
		"OpenFile":    second(m.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)),
		"Rename from": m.Rename("b", "/c"),
		"Rename to":   m.Rename("/b", "c"),
		"Remove":      m.Remove("b"),
		"MkdirAll":    m.MkdirAll("d", 0o755),
		"SyncDir":     m.SyncDir("."),
		"ReadDir":     second(m.ReadDir("")),
		"Get":         second(m.Get("b")),
	}
	for what, err := range errs {
		if !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("%s with a relative path = %v, want an error satisfying errors.Is(err, fs.ErrInvalid)", what, err)
		}
	}
	if n := m.Ops(); n != 0 {
		t.Errorf("refused calls counted %d operations", n)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Put with a relative path did not panic")
			}
		}()
		m.Put("rel", nil)
	}()
}

func second[T any](_ T, err error) error { return err }

func TestPathsAreCleaned(t *testing.T) {
	m := powercut.New()
	must(t, m.MkdirAll("/a//b/", 0o755))
	f := open(t, m, "/a/x/../b/./f", os.O_WRONLY|os.O_CREATE)
	write(t, f, "clean")
	must(t, f.Close())
	if got, err := m.Get("/a/b/f"); err != nil || string(got) != "clean" {
		t.Fatalf("Get(/a/b/f) = %q, %v", got, err)
	}
	if names, err := m.ReadDir("/a/b/.."); err != nil || !slices.Equal(names, []string{"b"}) {
		t.Fatalf("ReadDir(/a/b/..) = %q, %v", names, err)
	}
}

func TestUnsupportedFlagsRefused(t *testing.T) {
	m := powercut.New()
	m.Put("/f", []byte("keep"))
	for _, flag := range []int{os.O_RDWR | os.O_SYNC, os.O_RDONLY | os.O_TRUNC} {
		if _, err := m.OpenFile("/f", flag, 0); err == nil {
			t.Errorf("OpenFile(%#x) succeeded", flag)
		}
	}
	if got, _ := m.Get("/f"); string(got) != "keep" || m.Ops() != 0 {
		t.Fatalf("refused opens changed the file to %q or counted %d operations", got, m.Ops())
	}
}

func TestDirectoryRenameRefused(t *testing.T) {
	m := powercut.New()
	must(t, m.MkdirAll("/d", 0o755))
	if err := m.Rename("/d", "/e"); err == nil {
		t.Fatal("renaming a directory succeeded")
	}
	if names, _ := m.ReadDir("/"); !slices.Equal(names, []string{"d"}) {
		t.Fatalf("root holds %q", names)
	}
}

// TestOpsCounting checks which calls are operations (crash points).
func TestOpsCounting(t *testing.T) {
	m := powercut.New()
	var f fsys.File
	openf := func(flag int) func() error {
		return func() (err error) {
			f, err = m.OpenFile("/d/f", flag, 0o644)
			return err
		}
	}
	steps := []struct {
		what string
		do   func() error
		ops  int // operations the step adds
		fail bool
	}{
		{"MkdirAll (new)", func() error { return m.MkdirAll("/d", 0o755) }, 1, false},
		{"MkdirAll (existing)", func() error { return m.MkdirAll("/d", 0o755) }, 1, false},
		{"OpenFile create", openf(os.O_RDWR | os.O_CREATE), 1, false},
		{"OpenFile O_CREATE existing", openf(os.O_RDWR | os.O_CREATE), 0, false},
		{"OpenFile O_RDONLY", openf(os.O_RDONLY), 0, false},
		{"OpenFile O_EXCL existing", openf(os.O_RDWR | os.O_CREATE | os.O_EXCL), 0, true},
		{"OpenFile O_TRUNC", openf(os.O_RDWR | os.O_TRUNC), 1, false},
		{"Write", func() error { return second(f.Write([]byte("abc"))) }, 1, false},
		{"WriteAt", func() error { return second(f.WriteAt([]byte("abc"), 1000)) }, 1, false},
		{"Read", func() error { return second(f.Read(make([]byte, 2))) }, 0, false},
		{"ReadAt", func() error { return second(f.ReadAt(make([]byte, 2), 0)) }, 0, false},
		{"Size", func() error { return second(f.Size()) }, 0, false},
		{"Sync", func() error { return f.Sync() }, 1, false},
		{"Close", func() error { return f.Close() }, 0, false},
		{"Rename", func() error { return m.Rename("/d/f", "/d/g") }, 1, false},
		{"Rename (missing)", func() error { return m.Rename("/d/f", "/d/h") }, 0, true},
		{"SyncDir", func() error { return m.SyncDir("/d") }, 1, false},
		{"ReadDir", func() error { return second(m.ReadDir("/d")) }, 0, false},
		{"Remove", func() error { return m.Remove("/d/g") }, 1, false},
		{"Remove (missing)", func() error { return m.Remove("/d/g") }, 0, true},
		{"OpenFile (missing)", openf(os.O_RDONLY), 0, true},
		{"Put", func() error { m.Put("/d/p", []byte("p")); return nil }, 0, false},
		{"Get", func() error { return second(m.Get("/d/p")) }, 0, false},
		{"fsys.WriteFile", func() error { return fsys.WriteFile(m, "/d/p", []byte("q"), 0o644) }, 5, false},
	}
	for _, s := range steps {
		before := m.Ops()
		err := s.do()
		if (err != nil) != s.fail {
			t.Fatalf("%s: err = %v, want failure %v", s.what, err, s.fail)
		}
		if got := m.Ops() - before; got != s.ops {
			t.Errorf("%s counted %d operations, want %d", s.what, got, s.ops)
		}
	}
}

// TestCutAt cuts at the third operation: it does not happen, and everything
// fails from then on.
func TestCutAt(t *testing.T) {
	m := powercut.New()
	m.Put("/f", []byte("0123456789"))
	m.CutAt(3)
	f := open(t, m, "/f", os.O_RDWR) // not an operation
	r := open(t, m, "/f", os.O_RDONLY)
	closed := open(t, m, "/f", os.O_RDONLY)
	must(t, closed.Close())
	write(t, f, "a")                                     // 1
	if _, err := f.WriteAt([]byte("b"), 5); err != nil { // 2
		t.Fatal(err)
	}
	if m.Cut() {
		t.Fatal("Cut before the cut")
	}
	if _, err := f.WriteAt([]byte("c"), 8); !errors.Is(err, powercut.ErrPowerCut) { // 3: cut
		t.Fatalf("operation 3 = %v, want ErrPowerCut", err)
	}
	if !m.Cut() || m.Ops() != 2 {
		t.Fatalf("after the cut: Cut() = %v, Ops() = %d; want true, 2", m.Cut(), m.Ops())
	}
	// The cut operation did not happen; Get still shows the state.
	if got, err := m.Get("/f"); err != nil || string(got) != "a1234b6789" {
		t.Fatalf("Get = %q, %v; want \"a1234b6789\"", got, err)
	}
	calls := map[string]error{
		"File.Read":            second(f.Read(make([]byte, 1))),
		"File.ReadAt":          second(f.ReadAt(make([]byte, 1), 0)),
		"File.Write":           second(f.Write([]byte("x"))),
		"File.WriteAt":         second(f.WriteAt([]byte("x"), 0)),
		"File.Sync":            f.Sync(),
		"File.Size":            second(f.Size()),
		"File.Close":           f.Close(),
		"read-only Read":       second(r.Read(make([]byte, 1))),
		"read-only Close":      r.Close(),
		"closed File.Read":     second(closed.Read(make([]byte, 1))),
		"OpenFile":             second(m.OpenFile("/f", os.O_RDONLY, 0)),
		"OpenFile create":      second(m.OpenFile("/g", os.O_RDWR|os.O_CREATE, 0o644)),
		"Rename":               m.Rename("/f", "/g"),
		"Remove":               m.Remove("/f"),
		"MkdirAll":             m.MkdirAll("/d", 0o755),
		"SyncDir":              m.SyncDir("/"),
		"ReadDir":              second(m.ReadDir("/")),
		"fsys.WriteFile":       fsys.WriteFile(m, "/f", []byte("x"), 0o644),
		"fsys.ReadFile":        second(fsys.ReadFile(m, "/f", 100)),
		"Read at EOF (io.EOF)": second(f.ReadAt(make([]byte, 1), 100)),
	}
	for what, err := range calls {
		if !errors.Is(err, powercut.ErrPowerCut) {
			t.Errorf("%s after the cut = %v, want ErrPowerCut", what, err)
		}
	}
	if m.Ops() != 2 {
		t.Errorf("calls after the cut were counted: Ops() = %d", m.Ops())
	}
}

func TestCutAtDisabled(t *testing.T) {
	for _, n := range []int{0, -1} {
		m := powercut.New()
		m.CutAt(n)
		for range 10 {
			must(t, fsys.WriteFile(m, "/f", []byte("x"), 0o644))
		}
		if m.Cut() || m.Ops() != 50 {
			t.Errorf("CutAt(%d): Cut() = %v, Ops() = %d; want false, 50", n, m.Cut(), m.Ops())
		}
	}
}

// TestRestartKillsOldModel restarts a Model whose power was never cut: it
// is cut now, and its open files are dead.
func TestRestartKillsOldModel(t *testing.T) {
	m := powercut.New()
	f := open(t, m, "/f", os.O_RDWR|os.O_CREATE)
	write(t, f, "live")
	n := m.Restart(powercut.KeepAll, 0)
	if !m.Cut() {
		t.Error("Restart did not cut the old Model")
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, powercut.ErrPowerCut) {
		t.Errorf("Write on the old Model's file = %v, want ErrPowerCut", err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, powercut.ErrPowerCut) {
		t.Errorf("Read on the old Model's file = %v, want ErrPowerCut", err)
	}
	if _, err := m.ReadDir("/"); !errors.Is(err, powercut.ErrPowerCut) {
		t.Errorf("ReadDir on the old Model = %v, want ErrPowerCut", err)
	}
	if n.Cut() || n.Ops() != 0 {
		t.Errorf("new Model: Cut() = %v, Ops() = %d", n.Cut(), n.Ops())
	}
	got, err := n.Get("/f")
	if err != nil || string(got) != "live" {
		t.Fatalf("new Model: Get = %q, %v", got, err)
	}
	// The new Model's file is a different one: writing it does not
	// reach the old Model.
	g := open(t, n, "/f", os.O_RDWR)
	write(t, g, "next")
	if old, _ := m.Get("/f"); string(old) != "live" {
		t.Errorf("writing the new Model changed the old one: %q", old)
	}
	b, err := io.ReadAll(open(t, n, "/f", os.O_RDONLY))
	if err != nil || !bytes.Equal(b, []byte("next")) {
		t.Errorf("new Model reads %q, %v", b, err)
	}
}

// TestHugeOffsetRefused: a wild offset fails instead of allocating.
func TestHugeOffsetRefused(t *testing.T) {
	m := powercut.New()
	f := open(t, m, "/f", os.O_RDWR|os.O_CREATE)
	before := m.Ops()
	for _, off := range []int64{1 << 40, 1<<63 - 1} {
		if _, err := f.WriteAt([]byte("x"), off); err == nil {
			t.Errorf("WriteAt(%d) succeeded", off)
		}
	}
	if size, _ := f.Size(); size != 0 || m.Ops() != before {
		t.Errorf("refused writes left size %d and counted %d operations", size, m.Ops()-before)
	}
}

// A file fresh from Put or Restart keeps one array for its live and
// durable content (see inode.shared): a write must change the live
// content only, and Models restarted from one cut Model must not share
// what they write.
func TestSharedContentCopiedOnWrite(t *testing.T) {
	m := powercut.New()
	m.Put("/f", []byte("abcd"))
	f := open(t, m, "/f", os.O_WRONLY)
	write(t, f, "X")
	if got := must1(m.Get("/f")); string(got) != "Xbcd" {
		t.Fatalf("live content %q after a write, want Xbcd", got)
	}
	r1 := m.Restart(powercut.DropUnsynced, 0)
	r2 := m.Restart(powercut.KeepAll, 0)
	if got := must1(r1.Get("/f")); string(got) != "abcd" {
		t.Fatalf("an unsynced write survived DropUnsynced: %q", got)
	}
	f1 := open(t, r1, "/f", os.O_WRONLY)
	write(t, f1, "YY")
	must(t, f1.Sync())
	if got := must1(r2.Get("/f")); string(got) != "Xbcd" {
		t.Fatalf("a write to one restarted Model reached another: %q", got)
	}
	if got := must1(r1.Restart(powercut.DropUnsynced, 0).Get("/f")); string(got) != "YYcd" {
		t.Fatalf("a synced write after Restart did not last: %q", got)
	}
	var seen string
	if err := r2.Inspect("/f", func(b []byte) { seen = string(b) }); err != nil || seen != "Xbcd" {
		t.Fatalf("Inspect = %q, %v", seen, err)
	}
	if err := r2.Inspect("/", func([]byte) {}); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("Inspect of a directory: %v", err)
	}
	if err := r2.Inspect("/nope", func([]byte) {}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Inspect of a missing file: %v", err)
	}

	// PutShared's image is the caller's: writes and syncs must leave it.
	img := []byte("shared")
	s := powercut.New()
	s.PutShared("/g", img)
	g := open(t, s, "/g", os.O_WRONLY)
	write(t, g, "SH")
	must(t, g.Sync())
	if string(img) != "shared" {
		t.Fatalf("a write to a PutShared file changed the caller's image to %q", img)
	}
	if got := must1(s.Restart(powercut.DropUnsynced, 0).Get("/g")); string(got) != "SHared" {
		t.Fatalf("PutShared file after a synced write and a restart: %q", got)
	}
}
