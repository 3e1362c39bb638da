package powercut

import (
	"maps"
	"slices"
)

// inode is a file or a directory. Its fields are guarded by Model.mu.
type inode struct {
	dir bool

	// A file's live content, what reads see, and its durable content,
	// what the disk holds. dirty holds the sectors that may differ
	// between the two: every sector written or truncated away since the
	// last Sync. Outside dirty sectors the two agree, reading bytes
	// beyond either's end as zeros.
	data, durable []byte
	dirty         map[int64]struct{}
	device        bool // fixed capacity (PutDevice)
	// shared: data and durable are one array, as a Put or a Restart
	// leaves a file, until the first write copies data (unshare). Images
	// of many megabytes are put and restarted thousands of times by the
	// power-loss tests; a second copy of each was half their allocation.
	shared bool
	// borrowed: durable is the caller's array (PutShared), copied before
	// a sync writes into it.
	borrowed bool

	// A directory's live and durable entries, and the operations on it
	// since its last sync, oldest first: durable entries with every
	// operation in log applied are the live entries.
	entries, synced map[string]*inode
	log             []*dirOp
}

// dirOp is one metadata operation on a directory, which survives a cut
// whole or not at all.
type dirOp struct {
	id      uint64
	changes []change
	// other is the second directory of a rename between two
	// directories; its log holds the other half under the same id.
	other *inode
}

// change sets or, with a nil node, removes one directory entry.
type change struct {
	name string
	node *inode
}

func (m *Model) newDir() *inode {
	d := &inode{dir: true, entries: map[string]*inode{}, synced: map[string]*inode{}}
	m.dirs = append(m.dirs, d)
	return d
}

// change makes or removes one entry of d, as one unsynced operation.
func (m *Model) change(d *inode, name string, n *inode) {
	m.nextOp++
	m.rec(d, nil, m.nextOp, change{name, n})
}

// rec applies cs to d's live entries and logs them, unsynced, as operation
// id.
func (m *Model) rec(d, other *inode, id uint64, cs ...change) {
	apply(d.entries, cs)
	d.log = append(d.log, &dirOp{id: id, changes: cs, other: other})
}

func apply(entries map[string]*inode, cs []change) {
	for _, c := range cs {
		if c.node == nil {
			delete(entries, c.name)
		} else {
			entries[c.name] = c.node
		}
	}
}

// setDurable makes name refer to n in both views at once (Put). Pending
// operations on name are dropped, so that they cannot undo it at a
// Restart.
func (d *inode) setDurable(name string, n *inode) {
	d.entries[name] = n
	d.synced[name] = n
	for _, op := range d.log {
		op.changes = slices.DeleteFunc(op.changes, func(c change) bool { return c.name == name })
	}
}

// syncEntries makes a directory's entries durable (fsync of the
// directory).
func (d *inode) syncEntries() {
	for _, op := range d.log {
		apply(d.synced, op.changes)
	}
	d.log = nil
}

// sortedNames returns the names of entries, sorted; never nil, as os.ReadDir.
func sortedNames(entries map[string]*inode) []string {
	names := slices.AppendSeq(make([]string, 0, len(entries)), maps.Keys(entries))
	slices.Sort(names)
	return names
}

// writeAt writes p at off in the live content, extending the file with
// zeros if off is past its end. off+len(p) must be within maxSize.
func (n *inode) writeAt(p []byte, off int64) {
	n.unshare()
	end := off + int64(len(p))
	if end > int64(len(n.data)) {
		// The hole between the old end and off is zeros in both views
		// (see inode.dirty), so only the written bytes are dirty.
		n.data = resize(n.data, end)
	}
	copy(n.data[off:], p)
	n.markDirty(off, end)
}

// truncate sets the live length to size.
func (n *inode) truncate(size int64) {
	n.unshare()
	if old := int64(len(n.data)); size < old {
		n.markDirty(size, old)
	}
	n.data = resize(n.data, size)
}

// setContent makes data both the live and the durable content of n,
// which owns it from now on.
func (n *inode) setContent(data []byte) {
	n.data, n.durable, n.shared, n.borrowed, n.dirty = data, data, true, false, nil
}

// unshare gives the live content its own array before it is changed.
func (n *inode) unshare() {
	if n.shared {
		n.data, n.shared = slices.Clone(n.data), false
	}
}

func (n *inode) markDirty(lo, hi int64) {
	if lo >= hi {
		return
	}
	if n.dirty == nil {
		n.dirty = map[int64]struct{}{}
	}
	for s := lo / SectorSize; s*SectorSize < hi; s++ {
		n.dirty[s] = struct{}{}
	}
}

// syncData makes a file's live content durable (fsync). Only dirty
// sectors are copied, so that syncing a large device after a few writes is
// cheap.
func (n *inode) syncData() {
	if n.shared {
		return // nothing was written since both were set
	}
	if n.borrowed {
		n.durable, n.borrowed = slices.Clone(n.durable), false
	}
	n.durable = resize(n.durable, int64(len(n.data)))
	for s := range n.dirty {
		lo, hi := sector(s, int64(len(n.data)))
		if lo < hi {
			copy(n.durable[lo:hi], n.data[lo:hi])
		}
	}
	n.dirty = nil
}

// sortedDirty returns the dirty sectors in order, for deterministic random
// draws.
func (n *inode) sortedDirty() []int64 {
	return slices.Sorted(maps.Keys(n.dirty))
}

// sector returns the byte range of sector s, clipped to size.
func sector(s, size int64) (lo, hi int64) {
	lo, hi = min(s*SectorSize, size), min((s+1)*SectorSize, size)
	return lo, hi
}

// resize returns b with length n; bytes it adds are zeros, even where b's
// capacity holds old bytes.
func resize(b []byte, n int64) []byte {
	old := int64(len(b))
	if n <= old {
		return b[:n]
	}
	b = slices.Grow(b, int(n-old))[:n]
	clear(b[old:])
	return b
}
