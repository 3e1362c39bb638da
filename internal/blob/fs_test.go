package blob_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/blob/blobtest"
)

// TestFSConformance runs the shared suite; after each case, failed Puts
// must have left no temporary file behind.
func TestFSConformance(t *testing.T) {
	var dirs []string
	blobtest.Run(t, func(t *testing.T) blob.Store {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		s, err := blob.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			left, _ := os.ReadDir(filepath.Join(dir, "tmp"))
			if len(left) != 0 {
				t.Errorf("%d temporary files left in %s", len(left), dir)
			}
		})
		return s
	})
	if len(dirs) == 0 {
		t.Fatal("the suite created no store")
	}
}

// CleanTemp removes upload leftovers by age (all of them with 0), and
// nothing else.
func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	old := time.Now().Add(-25 * time.Hour)
	for _, n := range []string{"put-old", "put-fresh", "other"} {
		os.WriteFile(filepath.Join(tmp, n), nil, 0o644)
	}
	os.Chtimes(filepath.Join(tmp, "put-old"), old, old)
	os.Chtimes(filepath.Join(tmp, "other"), old, old)
	left := func() []string {
		es, _ := os.ReadDir(tmp)
		var n []string
		for _, e := range es {
			n = append(n, e.Name())
		}
		return n
	}
	if n, err := s.CleanTemp(24 * time.Hour); n != 1 || err != nil || !slices.Equal(left(), []string{"other", "put-fresh"}) {
		t.Fatalf("a day: removed %d (%v), left %v", n, err, left())
	}
	if n, err := s.CleanTemp(0); n != 1 || err != nil || !slices.Equal(left(), []string{"other"}) {
		t.Fatalf("all: removed %d (%v), left %v", n, err, left())
	}
}
