package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeBehindStep is how much is written before write-back of it starts.
const writeBehindStep = 4 << 20

// WriteBehind returns a writer to f that asks the kernel to start writing
// each completed 8 MiB to disk while later data is still being produced, so
// the final fsync waits only for the tail. It does not make anything durable
// by itself: call f.Sync at the end as usual.
func WriteBehind(f *os.File) *WriteBehindWriter { return &WriteBehindWriter{f: f} }

// WriteBehindWriter is the writer WriteBehind returns.
type WriteBehindWriter struct {
	f       *os.File
	off     int64
	flushed int64
}

func (w *WriteBehindWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= writeBehindStep {
		// Advisory: an error here only means the final Sync does the work.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.off-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.off
	}
	return n, err
}
