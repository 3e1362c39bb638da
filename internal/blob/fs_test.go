package blob_test

import (
	"os"
	"path/filepath"
	"testing"

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
