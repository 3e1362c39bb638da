// Package powercut is an in-memory model of a filesystem that loses power,
// for testing the device agent's crash safety. A Model implements fsys.FS;
// a test runs the agent on it, cuts the power at a chosen operation
// (CutAt), and then looks at what a reboot would find (Restart).
//
// # Durability model
//
// The model keeps two views of every file and directory: the live one that
// reads see (the page cache) and the durable one that survives a power cut
// (the disk). It follows what POSIX and Linux ext4 in its default
// data=ordered mode guarantee, and nothing more:
//
//   - File data belongs to the inode, not to a name, and becomes durable
//     only when that file is fsynced (File.Sync). Until then, any subset of
//     the 512-byte sectors written since the last fsync may have reached
//     the disk, and the file's length may be the old or the new one.
//   - Directory entries (a create, a rename, a removal) become durable only
//     when the directory holding them is fsynced (SyncDir). Fsyncing a file
//     does not make its name durable: a file created, written and fsynced
//     whose directory was never synced is gone after the cut.
//   - Rename within a directory is atomic: it survives a cut whole or not
//     at all, so the new name refers to the renamed file or to the one it
//     replaced, never to neither; until the directory is synced it may
//     revert to the replaced file.
//   - A directory's metadata operations are journaled in the order they
//     were made, so after a cut a prefix of its unsynced operations
//     survives: if a later one survived, every earlier one did too.
//
// Restart realizes one outcome the rules allow: DropUnsynced keeps only
// what was made durable, KeepAll keeps everything (as if the kernel had
// written back just before the cut) and Torn picks, deterministically from
// a seed, a surviving prefix of each directory's unsynced operations and a
// surviving subset of each file's unsynced sectors.
//
// Why this is faithful: these are the only guarantees the agent may rely
// on, and real systems really do produce each outcome. Lost unsynced data
// and lost unsynced directory entries are the classic ext4 delayed
// allocation failures; torn multi-sector writes happen because the disk
// commits sectors independently and writeback has no order; the journal
// replays a prefix of committed transactions. Real ext4 is often kinder
// (an fsync of a new file commits its directory entry with the journal,
// and auto_da_alloc flushes data replaced by rename), but the agent must
// not depend on that, so the model does not grant it; for the same reason
// Torn may keep stale or zero sectors where ext4 would not. A program that
// survives every outcome here is correct under the POSIX contract, which
// is stronger than being correct on one kernel.
//
// A rename between two directories touches both: each directory's part
// becomes durable when that directory is synced (so syncing only one may
// lose the file or keep it at both names after a cut, which POSIX allows),
// and Torn keeps or drops the two parts together, as one journal
// transaction does.
//
// MkdirAll follows fsys.OS: it fsyncs the parent of every directory it
// creates, which makes the parent's other pending entries durable as well.
//
// # Block devices
//
// A block device is a file that already exists when the test starts: Put
// it (or PutDevice, which also fixes its capacity) and the agent then opens
// it without O_CREATE and writes it with WriteAt and Sync. No directory
// operation is involved, so only the file-data rules apply: written sectors
// are durable after Sync, and before it any subset of them survives.
//
// # Operations and power cuts
//
// Each call that changes something counts as one operation and is one
// point at which power can be cut: File.Write, File.WriteAt, File.Sync,
// Rename, Remove, SyncDir, MkdirAll, and OpenFile when it creates or
// truncates a file. Calls that fail validation (a missing file, a bad
// flag) change nothing and are not counted. Counting is deterministic for
// a deterministic caller; concurrent callers get a deterministic count but
// not a deterministic order.
//
// Paths are absolute and slash-separated; they are cleaned, and a relative
// path is an error. Permission bits are ignored. Directories cannot be
// renamed (the agent never does; the model refuses rather than guess).
//
// A Model and its Files are safe for concurrent use.
package powercut

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/rampartfw/rampart/internal/fsys"
)

// ErrPowerCut is returned by the operation at which the power was cut and
// by every call after it, on the Model and on its open Files.
var ErrPowerCut = errors.New("power cut")

// SectorSize is the unit in which unsynced file data survives a cut.
const SectorSize = 512

// maxSize bounds a file, so that a wild offset fails instead of trying to
// allocate the model's memory.
const maxSize = 1 << 32

var (
	errNotAbs      = fmt.Errorf("path is not absolute: %w", fs.ErrInvalid)
	errDirRename   = errors.New("the model does not rename directories")
	errAppendAt    = errors.New("invalid use of WriteAt on file opened with O_APPEND")
	errTooLarge    = fmt.Errorf("file larger than the model allows (%d bytes): %w", maxSize, syscall.EFBIG)
	errNegativeOff = fmt.Errorf("negative offset: %w", syscall.EINVAL)
)

// Model is a filesystem that can lose power. The zero value is not usable;
// call New. It is safe for concurrent use.
type Model struct {
	mu   sync.Mutex
	root *inode
	// dirs is every directory ever created, in creation order, so that
	// Restart draws its random choices in a deterministic order.
	dirs   []*inode
	nextOp uint64 // identifies directory operations (dirOp.id)
	ops    int
	cutAt  int
	cut    bool
}

var _ fsys.FS = (*Model)(nil)

// New returns an empty filesystem holding only the root directory "/",
// which is durable.
func New() *Model {
	m := &Model{}
	m.root = m.newDir()
	return m
}

// Ops returns how many operations were performed: the operation at which
// power was cut is not counted.
func (m *Model) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// CutAt arranges for power to be cut at the n-th operation (1-based,
// counted since New or Restart, as Ops counts): that operation does not
// happen and returns ErrPowerCut, and so does every call after it. n <= 0
// disables cutting; an n not above Ops never triggers.
func (m *Model) CutAt(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cutAt = n
}

// Cut reports whether the power has been cut.
func (m *Model) Cut() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cut
}

// mutate is called, with m.mu held, by a mutating call that has been
// validated and is about to take effect. It counts the operation, or
// reports false if this is the one at which power is cut.
func (m *Model) mutate() bool {
	if m.cutAt > 0 && m.ops+1 == m.cutAt {
		m.cut = true
		return false
	}
	m.ops++
	return true
}

// Put creates or replaces the file name with data and makes it durable at
// once, creating missing parent directories the same way. It is for
// setting up a test and is not an operation. Put on a name with unsynced
// directory operations pending makes Put's file win in every Restart mode.
// Put panics on a relative path, a directory in the way, or a cut Model.
func (m *Model) Put(name string, data []byte) {
	m.put(name, slices.Clone(data), false, false)
}

// PutShared is Put without the copy: the Model never writes into data (the
// file's first write copies it), so one image can be put into many Models.
// The caller must not change data afterwards.
func (m *Model) PutShared(name string, data []byte) {
	m.put(name, data, false, true)
}

// PutDevice is Put of size zero bytes for a block device: its capacity is
// fixed, so a write past the end fails with ENOSPC (after writing what
// fits), and O_TRUNC leaves it alone, as Linux does for block devices.
func (m *Model) PutDevice(name string, size int64) {
	if size < 0 || size > maxSize {
		panic(fmt.Sprintf("powercut: PutDevice(%s, %d): bad size", name, size))
	}
	m.put(name, make([]byte, size), true, false)
}

func (m *Model) put(name string, data []byte, device, borrowed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cut {
		panic(fmt.Sprintf("powercut: Put(%s) after the power was cut", name))
	}
	parts, err := split(name)
	if err != nil || len(parts) == 0 {
		panic(fmt.Sprintf("powercut: Put(%s): not a file path", name))
	}
	d := m.root
	for _, p := range parts[:len(parts)-1] {
		n := d.entries[p]
		if n == nil {
			n = m.newDir()
			d.setDurable(p, n)
		}
		if !n.dir {
			panic(fmt.Sprintf("powercut: Put(%s): %s is a file", name, p))
		}
		d = n
	}
	base := parts[len(parts)-1]
	n := d.entries[base]
	switch {
	case n == nil:
		n = &inode{}
		d.setDurable(base, n)
	case n.dir:
		panic(fmt.Sprintf("powercut: Put(%s): is a directory", name))
	}
	n.setContent(data)
	n.device, n.borrowed = device, borrowed
}

// Get returns a copy of the live content of the file name: what a read
// would return, durable or not. It is for inspection and is not an
// operation; it works after the power was cut, showing the state at the
// cut.
func (m *Model) Get(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err == nil && n.dir {
		err = syscall.EISDIR
	}
	if err != nil {
		return nil, &fs.PathError{Op: "get", Path: name, Err: err}
	}
	return slices.Clone(n.data), nil
}

// Inspect calls fn with the live content of the file name, like Get but
// without a copy, for a test that looks at a large file often. fn must not
// change or keep the slice, nor call m.
func (m *Model) Inspect(name string, fn func(data []byte)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err == nil && n.dir {
		err = syscall.EISDIR
	}
	if err != nil {
		return &fs.PathError{Op: "inspect", Path: name, Err: err}
	}
	fn(n.data)
	return nil
}

// split cleans an absolute path into its elements; the root has none.
func split(name string) ([]string, error) {
	if !strings.HasPrefix(name, "/") {
		return nil, errNotAbs
	}
	p := path.Clean(name)
	if p == "/" {
		return nil, nil
	}
	return strings.Split(p[1:], "/"), nil
}

// parent resolves every element of parts but the last, which must not be
// empty, and returns the directory that holds the last.
func (m *Model) parent(parts []string) (*inode, error) {
	d := m.root
	for _, p := range parts[:len(parts)-1] {
		n := d.entries[p]
		if n == nil {
			return nil, syscall.ENOENT
		}
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		d = n
	}
	return d, nil
}

// lookup resolves name in the live view.
func (m *Model) lookup(name string) (*inode, error) {
	parts, err := split(name)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return m.root, nil
	}
	d, err := m.parent(parts)
	if err != nil {
		return nil, err
	}
	n := d.entries[parts[len(parts)-1]]
	if n == nil {
		return nil, syscall.ENOENT
	}
	return n, nil
}

const (
	accessMode = os.O_RDONLY | os.O_WRONLY | os.O_RDWR
	knownFlags = accessMode | os.O_CREATE | os.O_EXCL | os.O_TRUNC | os.O_APPEND
)

// OpenFile opens or creates a file. Only the access modes and O_CREATE,
// O_EXCL, O_TRUNC and O_APPEND are supported; other flags (O_SYNC, ...)
// are refused rather than ignored, as is O_TRUNC without write access.
// Directories cannot be opened.
func (m *Model) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.openFile(name, flag)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}

func (m *Model) openFile(name string, flag int) (*file, error) {
	if m.cut {
		return nil, ErrPowerCut
	}
	acc := flag & accessMode
	if flag&^knownFlags != 0 || acc == accessMode {
		return nil, fmt.Errorf("unsupported open flags %#x: %w", flag, syscall.EINVAL)
	}
	write := acc != os.O_RDONLY
	if flag&os.O_TRUNC != 0 && !write {
		return nil, fmt.Errorf("O_TRUNC without write access: %w", syscall.EINVAL)
	}
	parts, err := split(name)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, syscall.EISDIR
	}
	d, err := m.parent(parts)
	if err != nil {
		return nil, err
	}
	base := parts[len(parts)-1]
	n := d.entries[base]
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, syscall.ENOENT
	case n == nil:
		if !m.mutate() {
			return nil, ErrPowerCut
		}
		n = &inode{}
		m.change(d, base, n)
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, syscall.EEXIST
	case n.dir:
		return nil, syscall.EISDIR
	case flag&os.O_TRUNC != 0 && !n.device:
		if !m.mutate() {
			return nil, ErrPowerCut
		}
		n.truncate(0)
	}
	return &file{
		m:      m,
		n:      n,
		name:   name,
		read:   acc != os.O_WRONLY,
		write:  write,
		append: flag&os.O_APPEND != 0,
	}, nil
}

// Rename renames a file, replacing a file at newpath. It is durable when
// both directories have been synced.
func (m *Model) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.rename(oldpath, newpath); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

func (m *Model) rename(oldpath, newpath string) error {
	if m.cut {
		return ErrPowerCut
	}
	op, err := split(oldpath)
	if err != nil {
		return err
	}
	np, err := split(newpath)
	if err != nil {
		return err
	}
	if len(op) == 0 || len(np) == 0 {
		return syscall.EBUSY // the root
	}
	od, err := m.parent(op)
	if err != nil {
		return err
	}
	nd, err := m.parent(np)
	if err != nil {
		return err
	}
	oname, nname := op[len(op)-1], np[len(np)-1]
	n := od.entries[oname]
	if n == nil {
		return syscall.ENOENT
	}
	if n.dir {
		return errDirRename
	}
	if old := nd.entries[nname]; old != nil && old.dir {
		return syscall.EISDIR
	}
	if !m.mutate() {
		return ErrPowerCut
	}
	if nd.entries[nname] == n {
		// The same file (or a name it already has): POSIX says rename
		// does nothing.
		return nil
	}
	m.nextOp++
	if od == nd {
		m.rec(od, nil, m.nextOp, change{oname, nil}, change{nname, n})
		return nil
	}
	// Between two directories, the operation is logged in both, under
	// one id, so that Torn keeps or drops it as a whole.
	m.rec(od, nd, m.nextOp, change{oname, nil})
	m.rec(nd, od, m.nextOp, change{nname, n})
	return nil
}

// Remove removes a file or an empty directory; durable after SyncDir of
// its directory.
func (m *Model) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.remove(name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

func (m *Model) remove(name string) error {
	if m.cut {
		return ErrPowerCut
	}
	parts, err := split(name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return syscall.EBUSY
	}
	d, err := m.parent(parts)
	if err != nil {
		return err
	}
	base := parts[len(parts)-1]
	n := d.entries[base]
	if n == nil {
		return syscall.ENOENT
	}
	if n.dir && len(n.entries) > 0 {
		return syscall.ENOTEMPTY
	}
	if !m.mutate() {
		return ErrPowerCut
	}
	m.change(d, base, nil)
	return nil
}

// MkdirAll creates a directory and its missing parents and makes them
// durable, by syncing the parent of each one it creates, as fsys.OS does.
// It is one operation, even when everything exists.
func (m *Model) MkdirAll(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mkdirAll(name); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

func (m *Model) mkdirAll(name string) error {
	if m.cut {
		return ErrPowerCut
	}
	parts, err := split(name)
	if err != nil {
		return err
	}
	// Validate first, so a failing call changes nothing.
	d := m.root
	for _, p := range parts {
		n := d.entries[p]
		if n == nil {
			break
		}
		if !n.dir {
			return syscall.ENOTDIR
		}
		d = n
	}
	if !m.mutate() {
		return ErrPowerCut
	}
	d = m.root
	for _, p := range parts {
		n := d.entries[p]
		if n == nil {
			n = m.newDir()
			m.change(d, p, n)
			d.syncEntries()
		}
		d = n
	}
	return nil
}

// SyncDir makes the directory's entries durable: every creation, rename
// and removal in it so far.
func (m *Model) SyncDir(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.syncDir(name); err != nil {
		return &fs.PathError{Op: "sync", Path: name, Err: err}
	}
	return nil
}

func (m *Model) syncDir(name string) error {
	if m.cut {
		return ErrPowerCut
	}
	d, err := m.lookup(name)
	if err != nil {
		return err
	}
	if !d.dir {
		return syscall.ENOTDIR
	}
	if !m.mutate() {
		return ErrPowerCut
	}
	d.syncEntries()
	return nil
}

// ReadDir lists the live entries of a directory, sorted.
func (m *Model) ReadDir(name string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names, err := m.readDir(name)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return names, nil
}

func (m *Model) readDir(name string) ([]string, error) {
	if m.cut {
		return nil, ErrPowerCut
	}
	d, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	if !d.dir {
		return nil, syscall.ENOTDIR
	}
	return sortedNames(d.entries), nil
}
