//go:build !linux

package atomicfile

import "os"

// WriteBehind returns a writer to f; write-back hints exist only on Linux.
func WriteBehind(f *os.File) *WriteBehindWriter { return &WriteBehindWriter{f: f} }

// WriteBehindWriter is the writer WriteBehind returns.
type WriteBehindWriter struct{ f *os.File }

func (w *WriteBehindWriter) Write(p []byte) (int, error) { return w.f.Write(p) }
