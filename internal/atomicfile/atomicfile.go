// Package atomicfile writes files so that a crash or a failed command leaves
// either the old content or the new content at a path, never a mixture.
//
// Every write goes to a temporary file in the same directory, is fsynced,
// renamed over the destination, and then the directory itself is fsynced so
// the rename survives power loss.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces name with data, created with perm.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	return Write(name, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// CreateNew writes data to name only if name does not exist yet. It never
// replaces an existing file, so a key file cannot be overwritten silently.
func CreateNew(name string, data []byte, perm fs.FileMode) error {
	return write(name, perm, true, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write atomically replaces name with whatever fill writes.
func Write(name string, perm fs.FileMode, fill func(w io.Writer) error) error {
	return write(name, perm, false, fill)
}

func write(name string, perm fs.FileMode, exclusive bool, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(name)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if err = fill(tmp); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if exclusive {
		// link(2) fails if the destination exists, unlike rename(2).
		if err = os.Link(tmp.Name(), name); err != nil {
			if errors.Is(err, fs.ErrExist) {
				err = fmt.Errorf("%s already exists: %w", name, fs.ErrExist)
			}
			return err
		}
		os.Remove(tmp.Name())
	} else if err = os.Rename(tmp.Name(), name); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Rename renames old to new and makes both directories durable.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(newpath)); err != nil {
		return err
	}
	if filepath.Dir(oldpath) != filepath.Dir(newpath) {
		return SyncDir(filepath.Dir(oldpath))
	}
	return nil
}
