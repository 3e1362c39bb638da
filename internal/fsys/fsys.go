// Package fsys is the set of filesystem operations the device agent
// performs, as a small interface, so that a model of power loss can stand in
// for the operating system in tests (package powercut) while production uses
// the real one (OS).
//
// The interface is deliberately low level: every write, fsync, rename and
// removal is its own call, because each of them is a point at which power can
// be cut and the agent's crash safety is argued per call. WriteFile builds the
// one durable-replace recipe the agent uses on top of it.
package fsys

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// File is an open file or block device.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	// Sync makes every write so far durable (fsync).
	Sync() error
	Close() error
	// Size is the file's length, or a block device's capacity.
	Size() (int64, error)
}

// FS is what the agent does to its state directory, its slots and a
// file-backed bootloader environment.
type FS interface {
	// OpenFile is os.OpenFile. O_CREATE makes a directory entry that is
	// durable only after SyncDir of its directory.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Rename atomically replaces newpath by oldpath; it is durable only
	// after SyncDir of both directories.
	Rename(oldpath, newpath string) error
	// Remove removes a file or an empty directory; durable after SyncDir.
	Remove(name string) error
	// MkdirAll creates a directory and its parents and makes them
	// durable.
	MkdirAll(name string, perm fs.FileMode) error
	// SyncDir makes the directory's entries (creations, renames,
	// removals) durable.
	SyncDir(name string) error
	// ReadDir lists a directory's entry names, sorted.
	ReadDir(name string) ([]string, error)
}

// OS is the real filesystem.
var OS FS = osFS{}

type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	// A block device's Stat reports size 0; its capacity is where a seek
	// to the end lands. Seek back afterwards, or the next Read or Write
	// would happen at the end.
	cur, err := f.File.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	end, err := f.File.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := f.File.Seek(cur, io.SeekStart); err != nil {
		return 0, err
	}
	return end, nil
}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error             { return os.Remove(name) }

func (osFS) MkdirAll(name string, perm fs.FileMode) error {
	// Remember which levels are new: each needs its parent synced, or a
	// fresh state directory could vanish at the first power cut.
	var missing []string
	for d := filepath.Clean(name); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	// Even when nothing is missing: os.MkdirAll reports a file in the way.
	if err := os.MkdirAll(name, perm); err != nil {
		return err
	}
	for _, d := range missing {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func (osFS) SyncDir(name string) error { return syncDir(name) }

func syncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (osFS) ReadDir(name string) ([]string, error) {
	es, err := os.ReadDir(name)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.Name()
	}
	return names, nil
}

// ReadFile reads a whole file, at most limit bytes; a longer file is an
// error rather than an allocation an attacker controls.
func ReadFile(fsys FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

var tmpSeq atomic.Uint64

// WriteFile durably replaces name with data: write a temporary file in the
// same directory, fsync it, rename it over name, fsync the directory. A power
// cut at any point leaves the old content or the new, never a mixture; a
// temporary file may be left behind (RemoveTemps cleans up).
func WriteFile(fsys FS, name string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(name)
	tmp := filepath.Join(dir, "."+filepath.Base(name)+".tmp-"+strconv.FormatUint(tmpSeq.Add(1), 10))
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			fsys.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(dir)
}

// RemoveTemps removes the temporary files WriteFile may leave in dir after
// a power cut. It is called at start, before anything else writes there.
func RemoveTemps(fsys FS, dir string) error {
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	removed := false
	for _, n := range names {
		if strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") {
			if err := fsys.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
		}
	}
	if removed {
		return fsys.SyncDir(dir)
	}
	return nil
}
