package sourcetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/install"
)

// refError is the reference sources' failure type.
type refError struct{ err error }

func (e *refError) Error() string { return e.err.Error() }

// refSource reads chunks with ReadAt; its faults are switched on to prove
// that the suite finds them.
type refSource struct {
	m Medium
	// pads returns a chunk cut short by the medium's end padded with
	// zeros, as if it were whole.
	pads bool
	// allocates returns each chunk in a new slice.
	allocates bool
	// untyped returns the medium's error as it is.
	untyped bool
	// strictEOF takes io.EOF with the last bytes for a failure.
	strictEOF bool
}

func (s *refSource) ReadChunk(_ context.Context, i int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	n, err := s.m.ReadAt(buf, c.Offset)
	if c.Offset+c.Length > s.m.Size && err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && (s.strictEOF || n < len(buf) || !errors.Is(err, io.EOF)) {
		if s.pads && errors.Is(err, io.EOF) {
			clear(buf[n:])
		} else if s.untyped {
			return nil, err
		} else {
			return nil, &refError{fmt.Errorf("chunk %d: %w", i, err)}
		}
	}
	if s.allocates {
		return append([]byte(nil), buf...), nil
	}
	return buf, nil
}

var refOptions = Options{IsFailure: func(err error) bool { var re *refError; return errors.As(err, &re) }}

// TestSuiteFails proves the suite can fail: a correct source passes every
// case, and each broken one fails the cases that look for its fault.
func TestSuiteFails(t *testing.T) {
	for _, c := range []struct {
		name  string
		mk    func(Medium) *refSource
		fails []string
	}{
		{"correct", func(m Medium) *refSource { return &refSource{m: m} }, nil},
		{"pads short chunks", func(m Medium) *refSource { return &refSource{m: m, pads: true} }, []string{"PastTheEnd", "TruncatedAfterOpen"}},
		{"allocates", func(m Medium) *refSource { return &refSource{m: m, allocates: true} }, []string{"FillsTheCallersBuffer"}},
		{"untyped errors", func(m Medium) *refSource { return &refSource{m: m, untyped: true} }, []string{"PastTheEnd", "TruncatedAfterOpen", "FailingMedium"}},
		{"refuses io.EOF with the last bytes", func(m Medium) *refSource { return &refSource{m: m, strictEOF: true} }, []string{"EOFWithTheLastBytes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			newSource := func(_ testing.TB, m Medium) install.Source { return c.mk(m) }
			want := map[string]bool{}
			for _, f := range c.fails {
				want[f] = true
			}
			for _, tc := range cases {
				err := tc.run(context.Background(), t, newSource, refOptions)
				if (err != nil) != want[tc.name] {
					t.Errorf("%s: %v, want failure %v", tc.name, err, want[tc.name])
				}
			}
		})
	}
}
