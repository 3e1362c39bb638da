package powercut_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rampartfw/rampart/internal/powercut"
)

const sector = powercut.SectorSize

// dump returns the whole tree of a Model's live view: file path to
// content, directory path (with a trailing slash) to "".
func dump(t *testing.T, m *powercut.Model) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		names, err := m.ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir(%s): %v", dir, err)
		}
		for _, n := range names {
			p := path.Join(dir, n)
			if b, err := m.Get(p); err == nil {
				out[p] = string(b)
			} else if errors.Is(err, syscall.EISDIR) {
				out[p+"/"] = ""
				walk(p)
			} else {
				t.Fatalf("Get(%s): %v", p, err)
			}
		}
	}
	walk("/")
	return out
}

// tree builds the expected dump from "path=content" and "dir/" strings.
func tree(items ...string) map[string]string {
	out := map[string]string{}
	for _, it := range items {
		p, content, _ := strings.Cut(it, "=")
		out[p] = content
	}
	return out
}

func wantTree(t *testing.T, what string, m *powercut.Model, want map[string]string) {
	t.Helper()
	if got := dump(t, m); !maps.Equal(got, want) {
		t.Errorf("%s: tree is\n\t%v\nwant\n\t%v", what, got, want)
	}
}

// wantAfter restarts m in DropUnsynced and KeepAll modes and checks both
// trees.
func wantAfter(t *testing.T, m *powercut.Model, drop, keep map[string]string) {
	t.Helper()
	wantTree(t, "DropUnsynced", m.Restart(powercut.DropUnsynced, 0), drop)
	wantTree(t, "KeepAll", m.Restart(powercut.KeepAll, 0), keep)
}

func TestFileDataNeedsSync(t *testing.T) {
	t.Run("Unsynced", func(t *testing.T) {
		m := powercut.New()
		f := open(t, m, "/f", os.O_RDWR|os.O_CREATE)
		must(t, m.SyncDir("/")) // the name is durable, the data is not
		write(t, f, "hello")
		wantAfter(t, m, tree("/f="), tree("/f=hello"))
	})
	t.Run("Synced", func(t *testing.T) {
		m := powercut.New()
		f := open(t, m, "/f", os.O_RDWR|os.O_CREATE)
		must(t, m.SyncDir("/"))
		write(t, f, "hello")
		must(t, f.Sync())
		write(t, f, " world") // after the Sync: not durable
		wantAfter(t, m, tree("/f=hello"), tree("/f=hello world"))
	})
}

// TestSyncedFileWithoutDirSyncVanishes: fsync of a new file does not make
// its name durable.
func TestSyncedFileWithoutDirSyncVanishes(t *testing.T) {
	m := powercut.New()
	must(t, m.MkdirAll("/d", 0o755))
	f := open(t, m, "/d/f", os.O_RDWR|os.O_CREATE)
	write(t, f, "data")
	must(t, f.Sync())
	must(t, f.Close())
	wantAfter(t, m, tree("/d/"), tree("/d/", "/d/f=data"))
	for seed := range int64(20) {
		got := dump(t, m.Restart(powercut.Torn, seed))
		// Either the name survived, with its synced data, or not.
		if !maps.Equal(got, tree("/d/")) && !maps.Equal(got, tree("/d/", "/d/f=data")) {
			t.Fatalf("Torn seed %d: %v", seed, got)
		}
	}
}

// TestRenameNeedsSyncDir: a rename over an existing name is durable only
// after SyncDir; before it the old file is still there.
func TestRenameNeedsSyncDir(t *testing.T) {
	setup := func(t *testing.T, syncTmp bool) *powercut.Model {
		m := powercut.New()
		m.Put("/state", []byte("old"))
		f := open(t, m, "/tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		write(t, f, "new")
		must(t, f.Sync())
		must(t, f.Close())
		if syncTmp {
			must(t, m.SyncDir("/"))
		}
		must(t, m.Rename("/tmp", "/state"))
		return m
	}
	t.Run("TempSynced", func(t *testing.T) {
		m := setup(t, true)
		wantAfter(t, m, tree("/state=old", "/tmp=new"), tree("/state=new"))
	})
	t.Run("TempNotSynced", func(t *testing.T) {
		m := setup(t, false)
		wantAfter(t, m, tree("/state=old"), tree("/state=new"))
	})
	t.Run("RenameSynced", func(t *testing.T) {
		m := setup(t, false)
		must(t, m.SyncDir("/"))
		wantAfter(t, m, tree("/state=new"), tree("/state=new"))
	})
}

// TestDataBelongsToInode: data fsynced under one name is kept under
// another, and a write through a file opened before a rename lands at the
// new name.
func TestDataBelongsToInode(t *testing.T) {
	t.Run("SyncThenRename", func(t *testing.T) {
		m := powercut.New()
		m.Put("/a", []byte("v1"))
		f := open(t, m, "/a", os.O_RDWR)
		if _, err := f.WriteAt([]byte("v2"), 0); err != nil {
			t.Fatal(err)
		}
		must(t, f.Sync())
		must(t, m.Rename("/a", "/b"))
		must(t, m.SyncDir("/"))
		wantAfter(t, m, tree("/b=v2"), tree("/b=v2"))
	})
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprint("RenameThenWrite/Sync=", sync), func(t *testing.T) {
			m := powercut.New()
			m.Put("/a", []byte("v1"))
			f := open(t, m, "/a", os.O_RDWR)
			must(t, m.Rename("/a", "/b"))
			must(t, m.SyncDir("/"))
			if _, err := f.WriteAt([]byte("v2"), 0); err != nil {
				t.Fatal(err)
			}
			if !sync {
				wantAfter(t, m, tree("/b=v1"), tree("/b=v2"))
				return
			}
			must(t, f.Sync())
			wantAfter(t, m, tree("/b=v2"), tree("/b=v2"))
		})
	}
	t.Run("RemovedOpenFile", func(t *testing.T) {
		m := powercut.New()
		m.Put("/a", []byte("v1"))
		f := open(t, m, "/a", os.O_RDWR)
		must(t, m.Remove("/a"))
		must(t, m.SyncDir("/"))
		write(t, f, "v2")
		must(t, f.Sync())
		wantAfter(t, m, tree(), tree())
	})
}

func TestRemoveNeedsSyncDir(t *testing.T) {
	for _, sync := range []bool{false, true} {
		m := powercut.New()
		m.Put("/f", []byte("f"))
		must(t, m.MkdirAll("/d", 0o755))
		must(t, m.Remove("/f"))
		must(t, m.Remove("/d"))
		if !sync {
			wantAfter(t, m, tree("/f=f", "/d/"), tree())
			continue
		}
		must(t, m.SyncDir("/"))
		wantAfter(t, m, tree(), tree())
	}
}

func TestTruncateNeedsSync(t *testing.T) {
	for _, sync := range []bool{false, true} {
		m := powercut.New()
		m.Put("/f", []byte("old content"))
		f := open(t, m, "/f", os.O_WRONLY|os.O_TRUNC)
		write(t, f, "new")
		if !sync {
			wantAfter(t, m, tree("/f=old content"), tree("/f=new"))
			continue
		}
		must(t, f.Sync())
		wantAfter(t, m, tree("/f=new"), tree("/f=new"))
	}
}

// TestMkdirAllDurable: MkdirAll makes what it creates durable by syncing
// each new directory's parent, which also makes the parent's other
// pending entries durable; when nothing is created nothing is synced.
func TestMkdirAllDurable(t *testing.T) {
	m := powercut.New()
	must(t, m.MkdirAll("/a/b/c", 0o755))
	wantTree(t, "DropUnsynced", m.Restart(powercut.DropUnsynced, 0), tree("/a/", "/a/b/", "/a/b/c/"))

	m = powercut.New()
	must(t, m.MkdirAll("/a/b/c", 0o755))
	open(t, m, "/a/x", os.O_RDWR|os.O_CREATE).Close()
	must(t, m.MkdirAll("/a/b", 0o755)) // exists: syncs nothing
	open(t, m, "/a/b/y", os.O_RDWR|os.O_CREATE).Close()
	must(t, m.MkdirAll("/a/new", 0o755)) // syncs /a, not /a/b
	wantAfter(t, m,
		tree("/a/", "/a/b/", "/a/b/c/", "/a/new/", "/a/x="),
		tree("/a/", "/a/b/", "/a/b/c/", "/a/new/", "/a/x=", "/a/b/y="))
}

// TestPutIsDurable: Put, also over a name with pending operations, wins in
// every mode.
func TestPutIsDurable(t *testing.T) {
	m := powercut.New()
	m.Put("/d/f", []byte("put"))
	must(t, m.Remove("/d/f"))
	m.Put("/d/f", []byte("again"))
	want := tree("/d/", "/d/f=again")
	wantAfter(t, m, want, want)
	for seed := range int64(10) {
		wantTree(t, fmt.Sprint("Torn seed ", seed), m.Restart(powercut.Torn, seed), want)
	}
}

// TestBlockDevice: a device is written with WriteAt and Sync and involves
// no directory operation.
func TestBlockDevice(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprint("PutDevice=", fixed), func(t *testing.T) {
			const size = 8 * sector
			put := func(m *powercut.Model) {
				if fixed {
					m.PutDevice("/dev/slot", size)
				} else {
					m.Put("/dev/slot", make([]byte, size))
				}
			}
			m := powercut.New()
			put(m)
			f := open(t, m, "/dev/slot", os.O_RDWR)
			img := bytes.Repeat([]byte("I"), 3*sector)
			if _, err := f.WriteAt(img, 2*sector); err != nil {
				t.Fatal(err)
			}
			zeros := string(make([]byte, size))
			written := string(make([]byte, 2*sector)) + string(img) + string(make([]byte, 3*sector))
			// Before the Sync: cut at it.
			m.CutAt(m.Ops() + 1)
			if err := f.Sync(); !errors.Is(err, powercut.ErrPowerCut) {
				t.Fatalf("Sync = %v, want ErrPowerCut", err)
			}
			wantAfter(t, m, tree("/dev/", "/dev/slot="+zeros), tree("/dev/", "/dev/slot="+written))
			for seed := range int64(8) {
				got := must1(m.Restart(powercut.Torn, seed).Get("/dev/slot"))
				checkTorn(t, []byte(zeros), []byte(written), got)
			}
			// Durable after the Sync.
			m = powercut.New()
			put(m)
			f = open(t, m, "/dev/slot", os.O_RDWR)
			if _, err := f.WriteAt(img, 2*sector); err != nil {
				t.Fatal(err)
			}
			must(t, f.Sync())
			if m.Ops() != 2 {
				t.Errorf("Ops() = %d, want 2 (WriteAt, Sync)", m.Ops())
			}
			wantAfter(t, m, tree("/dev/", "/dev/slot="+written), tree("/dev/", "/dev/slot="+written))
		})
	}
}

// TestDeviceCapacity: a PutDevice device cannot grow or be truncated.
func TestDeviceCapacity(t *testing.T) {
	m := powercut.New()
	m.PutDevice("/dev/slot", 1000)
	f := open(t, m, "/dev/slot", os.O_RDWR|os.O_TRUNC) // ignored, like Linux
	if m.Ops() != 0 {
		t.Errorf("O_TRUNC on a device counted as an operation")
	}
	if n, err := f.WriteAt([]byte("abcdef"), 996); n != 4 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("WriteAt across the end = %d, %v; want 4, ENOSPC", n, err)
	}
	if n, err := f.WriteAt([]byte("x"), 1000); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("WriteAt at the end = %d, %v; want 0, ENOSPC", n, err)
	}
	if size, err := f.Size(); size != 1000 || err != nil {
		t.Errorf("Size = %d, %v; want 1000", size, err)
	}
	got, _ := m.Get("/dev/slot")
	if want := append(make([]byte, 996), "abcd"...); !bytes.Equal(got, want) {
		t.Errorf("device holds ...%q", got[990:])
	}
}

// TestCrossDirectoryRename: each directory's half of the rename is durable
// after that directory's SyncDir.
func TestCrossDirectoryRename(t *testing.T) {
	setup := func(t *testing.T) *powercut.Model {
		m := powercut.New()
		m.Put("/a/f", []byte("x"))
		must(t, m.MkdirAll("/b", 0o755))
		must(t, m.Rename("/a/f", "/b/f"))
		return m
	}
	moved := tree("/a/", "/b/", "/b/f=x")
	t.Run("NoSync", func(t *testing.T) {
		wantAfter(t, setup(t), tree("/a/", "/a/f=x", "/b/"), moved)
	})
	t.Run("BothSynced", func(t *testing.T) {
		m := setup(t)
		must(t, m.SyncDir("/a"))
		must(t, m.SyncDir("/b"))
		wantAfter(t, m, moved, moved)
	})
	t.Run("SourceSynced", func(t *testing.T) {
		m := setup(t)
		must(t, m.SyncDir("/a"))
		wantAfter(t, m, tree("/a/", "/b/"), moved)
	})
	t.Run("TargetSynced", func(t *testing.T) {
		m := setup(t)
		must(t, m.SyncDir("/b"))
		r := m.Restart(powercut.DropUnsynced, 0)
		wantTree(t, "DropUnsynced", r, tree("/a/", "/a/f=x", "/b/", "/b/f=x"))
		// The two names are one file, as after a crash between the
		// link and the unlink.
		f := open(t, r, "/a/f", os.O_WRONLY)
		write(t, f, "y")
		if got, _ := r.Get("/b/f"); string(got) != "y" {
			t.Errorf("/b/f = %q after writing /a/f, want the same file", got)
		}
	})
	// Torn keeps the rename whole, and each directory's operations a
	// prefix.
	t.Run("Torn", func(t *testing.T) {
		m := powercut.New()
		m.Put("/a/f", []byte("x"))
		must(t, m.MkdirAll("/b", 0o755))
		create(t, m, "/a/a1")
		create(t, m, "/b/b1")
		must(t, m.Rename("/a/f", "/b/f"))
		create(t, m, "/a/a2")
		create(t, m, "/b/b2")
		aStates := [][]string{{"f"}, {"a1", "f"}, {"a1"}, {"a1", "a2"}}
		bStates := [][]string{{}, {"b1"}, {"b1", "f"}, {"b1", "b2", "f"}}
		moved := map[bool]int{}
		for seed := range int64(200) {
			r := m.Restart(powercut.Torn, seed)
			a, b := readDir(t, r, "/a"), readDir(t, r, "/b")
			ia := slices.IndexFunc(aStates, func(s []string) bool { return slices.Equal(s, a) })
			ib := slices.IndexFunc(bStates, func(s []string) bool { return slices.Equal(s, b) })
			if ia < 0 || ib < 0 {
				t.Fatalf("seed %d: /a %q, /b %q: not a prefix of each directory's operations", seed, a, b)
			}
			inA, inB := slices.Contains(a, "f"), slices.Contains(b, "f")
			if inA == inB {
				t.Fatalf("seed %d: /a %q, /b %q: the rename is not atomic", seed, a, b)
			}
			moved[inB]++
		}
		if moved[true] == 0 || moved[false] == 0 {
			t.Errorf("200 seeds always gave the same outcome: %v", moved)
		}
	})
}

func create(t *testing.T, m *powercut.Model, name string) {
	t.Helper()
	must(t, open(t, m, name, os.O_WRONLY|os.O_CREATE|os.O_EXCL).Close())
}

func readDir(t *testing.T, m *powercut.Model, dir string) []string {
	t.Helper()
	names, err := m.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	if names == nil {
		names = []string{}
	}
	return names
}
