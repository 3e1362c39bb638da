package agent_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/install/sourcetest"
)

// bundleFile is a bundle file with the suite's medium as its image: tar
// headers before it, and more of the archive after it, which a chunk
// running past the image must never deliver.
type bundleFile struct {
	m    sourcetest.Medium
	base int64
}

func (b bundleFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		o := off + int64(n)
		switch {
		case o < b.base:
			n += copy(p[n:], bytes.Repeat([]byte{'H'}, int(min(b.base-o, int64(len(p)-n)))))
		case o < b.base+b.m.Size:
			k := int(min(b.base+b.m.Size-o, int64(len(p)-n)))
			m, err := b.m.ReadAt(p[n:n+k], o-b.base)
			n += m
			if err != nil && !(errors.Is(err, io.EOF) && m == k) {
				return n, err // the file ends (or fails) where the medium does
			}
		default:
			n += copy(p[n:], bytes.Repeat([]byte{'T'}, len(p)-n))
		}
	}
	return n, nil
}

// TestBundleImageSourceConformance runs the Source suite against the
// reader of the image inside a bundle file (InstallBundle's second pass).
func TestBundleImageSourceConformance(t *testing.T) {
	const base = 1536 // after the manifest, metadata and the image's tar header
	sourcetest.Run(t, func(t testing.TB, m sourcetest.Medium) install.Source {
		return agent.NewBundleImageSource(bundleFile{m: m, base: base}, base, m.Size)
	}, sourcetest.Options{IsFailure: func(err error) bool {
		var re *bundle.ReadError
		return errors.As(err, &re)
	}})
}
