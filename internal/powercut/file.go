package powercut

import (
	"io"
	"io/fs"
	"syscall"

	"github.com/rampartfw/rampart/internal/fsys"
)

// file is an open file of a Model. Like an open file descriptor it refers
// to the inode, not the name: renaming or removing the name does not
// affect it. Its fields are guarded by Model.mu.
var _ fsys.File = (*file)(nil)

type file struct {
	m      *Model
	n      *inode
	name   string
	off    int64
	read   bool
	write  bool
	append bool
	closed bool
}

func (f *file) err(op string, err error) error {
	return &fs.PathError{Op: op, Path: f.name, Err: err}
}

// check returns the error a call must fail with before doing anything, or
// nil: power cut first (everything fails after a cut), then a closed file,
// then a missing access right.
func (f *file) check(op string, allowed bool) error {
	switch {
	case f.m.cut:
		return f.err(op, ErrPowerCut)
	case f.closed:
		return f.err(op, fs.ErrClosed)
	case !allowed:
		return f.err(op, syscall.EBADF)
	}
	return nil
}

func (f *file) Read(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", f.read); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[f.off:])
	f.off += int64(n)
	return n, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", f.read); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, f.err("readat", errNegativeOff)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) Write(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("write", f.write); err != nil {
		return 0, err
	}
	off := f.off
	if f.append {
		off = int64(len(f.n.data))
	}
	n, err := f.writeAt(p, off)
	f.off = off + int64(n)
	return n, err
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("write", f.write); err != nil {
		return 0, err
	}
	if f.append {
		// As os.File: Linux would ignore the offset.
		return 0, f.err("writeat", errAppendAt)
	}
	if off < 0 {
		return 0, f.err("writeat", errNegativeOff)
	}
	return f.writeAt(p, off)
}

// writeAt validates and counts a write, then does it. A device takes only
// what fits in its capacity.
func (f *file) writeAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	var short error
	switch {
	case f.n.device && len(p) > 0 && off >= int64(len(f.n.data)):
		return 0, f.err("write", syscall.ENOSPC)
	case f.n.device && end > int64(len(f.n.data)):
		p, short = p[:int64(len(f.n.data))-off], f.err("write", syscall.ENOSPC)
	case off > maxSize || int64(len(p)) > maxSize-off:
		return 0, f.err("write", errTooLarge)
	}
	if !f.m.mutate() {
		return 0, f.err("write", ErrPowerCut)
	}
	f.n.writeAt(p, off)
	return len(p), short
}

// Sync makes the file's data durable; it is allowed on a read-only file,
// as fsync is.
func (f *file) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("sync", true); err != nil {
		return err
	}
	if !f.m.mutate() {
		return f.err("sync", ErrPowerCut)
	}
	f.n.syncData()
	return nil
}

// Close closes the file; it does not make anything durable and is not an
// operation.
func (f *file) Close() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("close", true); err != nil {
		return err
	}
	f.closed = true
	return nil
}

// Size is the live length: a device's capacity.
func (f *file) Size() (int64, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("size", true); err != nil {
		return 0, err
	}
	return int64(len(f.n.data)), nil
}
