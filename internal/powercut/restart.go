package powercut

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
)

// Mode chooses which of the outcomes a power cut allows Restart produces.
type Mode int

const (
	// DropUnsynced keeps only what was made durable: file data as of
	// each file's last Sync, directory entries as of each directory's
	// last SyncDir (or MkdirAll, or Put).
	DropUnsynced Mode = iota
	// KeepAll keeps everything done before the cut, as if the kernel had
	// written everything back just before it.
	KeepAll
	// Torn keeps, deterministically from the seed, a random prefix of
	// each directory's unsynced operations and a random subset of each
	// file's unsynced sectors, with either its durable or its live
	// length.
	Torn
)

func (m Mode) String() string {
	switch m {
	case DropUnsynced:
		return "DropUnsynced"
	case KeepAll:
		return "KeepAll"
	case Torn:
		return "Torn"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Restart returns a new Model holding what survived the power cut, as the
// next boot would find it, with everything durable and no operations
// counted. If the power was not cut, Restart cuts it now. Either way the
// old Model and its open Files stay dead: every call on them returns
// ErrPowerCut. The seed only matters for Torn; the same Model state, mode
// and seed give the same result.
func (m *Model) Restart(mode Mode, seed int64) *Model {
	if mode != DropUnsynced && mode != KeepAll && mode != Torn {
		panic(fmt.Sprintf("powercut: Restart with %v", mode))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cut = true
	r := rand.New(rand.NewPCG(uint64(seed), 0x706f776572637574))

	// How many of each directory's unsynced operations survive.
	keep := make(map[*inode]int, len(m.dirs))
	for _, d := range m.dirs {
		switch mode {
		case KeepAll:
			keep[d] = len(d.log)
		case Torn:
			keep[d] = r.IntN(len(d.log) + 1)
		}
	}
	// A rename between two directories survives in both or in neither:
	// shorten a prefix that holds one half until the other half is in
	// its directory's prefix too (or was synced already). Prefixes only
	// shrink, so this ends.
	for again := true; again; {
		again = false
		for _, d := range m.dirs {
			for i, op := range d.log[:keep[d]] {
				if op.other == nil {
					continue
				}
				j := slices.IndexFunc(op.other.log, func(o *dirOp) bool { return o.id == op.id })
				if j >= keep[op.other] {
					keep[d] = i
					again = true
					break
				}
			}
		}
	}

	n := New()
	b := &builder{m: n, mode: mode, r: r, keep: keep, made: map[*inode]*inode{m.root: n.root}}
	b.dir(m.root, n.root)
	return n
}

// builder copies what survives into a new Model.
type builder struct {
	m    *Model
	mode Mode
	r    *rand.Rand
	keep map[*inode]int
	made map[*inode]*inode // old inode to new, so a file at two names stays one
}

func (b *builder) dir(old, nd *inode) {
	entries := maps.Clone(old.synced)
	for _, op := range old.log[:b.keep[old]] {
		apply(entries, op.changes)
	}
	// Sorted, so that inodes are visited and random draws are made in a
	// deterministic order.
	for _, name := range sortedNames(entries) {
		o := entries[name]
		n := b.made[o]
		if n == nil {
			if o.dir {
				n = b.m.newDir()
				b.made[o] = n
				b.dir(o, n)
			} else {
				n = &inode{device: o.device}
				n.setContent(b.data(o))
				b.made[o] = n
			}
		}
		nd.entries[name] = n
		nd.synced[name] = n
	}
}

// data returns what survives of a file's content.
func (b *builder) data(n *inode) []byte {
	switch b.mode {
	case DropUnsynced:
		return slices.Clone(n.durable)
	case KeepAll:
		return slices.Clone(n.data)
	}
	size := int64(len(n.durable))
	if live := int64(len(n.data)); live != size && b.r.IntN(2) == 1 {
		size = live
	}
	out := resize(slices.Clone(n.durable), size)
	for _, s := range n.sortedDirty() {
		if b.r.IntN(2) == 0 {
			continue // the sector did not reach the disk
		}
		lo, hi := sector(s, size)
		if lo >= hi {
			continue
		}
		clear(out[lo:hi])
		if lo < int64(len(n.data)) {
			copy(out[lo:hi], n.data[lo:min(hi, int64(len(n.data)))])
		}
	}
	return out
}
