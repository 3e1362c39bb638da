package fsys_test

import (
	"testing"

	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/fsys/fsystest"
)

func TestOS(t *testing.T) {
	fsystest.Run(t, func(t *testing.T) (fsys.FS, string) {
		return fsys.OS, t.TempDir()
	})
}
