package bootenv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestGRUBSaveInPlace: an existing grubenv is rewritten in place (same
// inode, same size), because GRUB reads the file system without replaying
// its journal and would not see a renamed file until the journal is
// checkpointed; a missing one is created.
func TestGRUBSaveInPlace(t *testing.T) {
	g := &GRUB{Path: filepath.Join(t.TempDir(), "grubenv")}
	if err := g.Save(Env{"ORDER": "A B"}); err != nil {
		t.Fatal(err)
	}
	inode := func() uint64 {
		fi, err := os.Stat(g.Path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != GRUBSize {
			t.Fatalf("size %d", fi.Size())
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	before := inode()
	if err := g.Save(Env{"ORDER": "B A", "B_OK": "1"}); err != nil {
		t.Fatal(err)
	}
	if after := inode(); after != before {
		t.Fatalf("Save replaced the file (inode %d, was %d): GRUB would read the old one until the journal is checkpointed", after, before)
	}
	env, err := g.Load()
	if err != nil || env["ORDER"] != "B A" || env["B_OK"] != "1" {
		t.Fatalf("Load: %v %v", env, err)
	}
}
