package powercut_test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/rampartfw/rampart/internal/powercut"
)

// sectorOrZeros returns sector s of b, reading past its end as zeros.
func sectorOrZeros(b []byte, s int) []byte {
	out := make([]byte, sector)
	if lo := s * sector; lo < len(b) {
		copy(out, b[lo:min(lo+sector, len(b))])
	}
	return out
}

// checkTorn checks that got is a torn mixture of old (durable) and new
// (live): its length is one of theirs, and each of its sectors is whole
// from one of them. It returns, per sector, whether it came from new
// ('n'), from old ('o'), or is the same in both ('=').
func checkTorn(t *testing.T, old, new, got []byte) string {
	t.Helper()
	if len(got) != len(old) && len(got) != len(new) {
		t.Fatalf("torn length %d, want %d or %d", len(got), len(old), len(new))
	}
	var from []byte
	for s := 0; s*sector < len(got); s++ {
		g := sectorOrZeros(got, s)
		if end := len(got) - s*sector; end < sector {
			// The last sector is cut at the length: compare what is
			// there.
			g = g[:end]
		}
		o, n := sectorOrZeros(old, s)[:len(g)], sectorOrZeros(new, s)[:len(g)]
		switch {
		case bytes.Equal(o, n) && bytes.Equal(g, o):
			from = append(from, '=')
		case bytes.Equal(g, n):
			from = append(from, 'n')
		case bytes.Equal(g, o):
			from = append(from, 'o')
		default:
			t.Fatalf("sector %d is neither old nor new: %q", s, g)
		}
	}
	return string(from)
}

// TestTornSectors overwrites 64 sectors without Sync: each survives or not
// on its own, deterministically per seed.
func TestTornSectors(t *testing.T) {
	const sectors = 64
	old := bytes.Repeat([]byte("o"), sectors*sector)
	new := bytes.Repeat([]byte("n"), sectors*sector)
	m := powercut.New()
	m.Put("/img", old)
	f := open(t, m, "/img", os.O_RDWR)
	if _, err := f.WriteAt(new, 0); err != nil {
		t.Fatal(err)
	}
	patterns := map[string]bool{}
	survived := make([]int, sectors)
	for seed := range int64(32) {
		got, err := m.Restart(powercut.Torn, seed).Get("/img")
		if err != nil {
			t.Fatal(err)
		}
		p := checkTorn(t, old, new, got)
		again, _ := m.Restart(powercut.Torn, seed).Get("/img")
		if !bytes.Equal(got, again) {
			t.Fatalf("seed %d gave two different results", seed)
		}
		patterns[p] = true
		for s, c := range p {
			if c == 'n' {
				survived[s]++
			}
		}
		if seed == 1 {
			t.Logf("seed 1: %s", p)
		}
	}
	p1 := checkTorn(t, old, new, must1(m.Restart(powercut.Torn, 1).Get("/img")))
	p2 := checkTorn(t, old, new, must1(m.Restart(powercut.Torn, 2).Get("/img")))
	if p1 == p2 {
		t.Errorf("seeds 1 and 2 kept the same sectors: %s", p1)
	}
	if len(patterns) < 32 {
		t.Errorf("32 seeds gave only %d different sector subsets", len(patterns))
	}
	for s, n := range survived {
		if n == 0 || n == 32 {
			t.Errorf("sector %d survived in %d of 32 seeds, want some but not all", s, n)
		}
	}
	// Synced sectors are not torn.
	m = powercut.New()
	m.Put("/img", old)
	f = open(t, m, "/img", os.O_RDWR)
	if _, err := f.WriteAt(new, 0); err != nil {
		t.Fatal(err)
	}
	must(t, f.Sync())
	for seed := range int64(8) {
		if got := must1(m.Restart(powercut.Torn, seed).Get("/img")); !bytes.Equal(got, new) {
			t.Fatalf("seed %d: a synced file was torn", seed)
		}
	}
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTornSmallWrite: a write inside one sector survives whole or not at
// all, and other sectors are untouched.
func TestTornSmallWrite(t *testing.T) {
	old := bytes.Repeat([]byte("o"), 3*sector)
	m := powercut.New()
	m.Put("/f", old)
	f := open(t, m, "/f", os.O_RDWR)
	if _, err := f.WriteAt([]byte("NEW"), sector+100); err != nil {
		t.Fatal(err)
	}
	new := must1(m.Get("/f"))
	seen := map[string]bool{}
	for seed := range int64(16) {
		seen[checkTorn(t, old, new, must1(m.Restart(powercut.Torn, seed).Get("/f")))] = true
	}
	if want := map[string]bool{"=o=": true, "=n=": true}; !maps.Equal(seen, want) {
		t.Errorf("outcomes %v, want %v", seen, want)
	}
}

// TestTornLength truncates and rewrites a file without Sync: the length
// is the old or the new, and sectors the truncation cut off may come back
// as old data or zeros.
func TestTornLength(t *testing.T) {
	old := bytes.Repeat([]byte("o"), 3*sector)
	m := powercut.New()
	m.Put("/f", old)
	f := open(t, m, "/f", os.O_WRONLY|os.O_TRUNC)
	write(t, f, string(bytes.Repeat([]byte("n"), 100)))
	if _, err := f.WriteAt([]byte("tail"), 2*sector+10); err != nil { // leaves a hole
		t.Fatal(err)
	}
	new := must1(m.Get("/f"))
	lengths := map[int]bool{}
	patterns := map[string]bool{}
	for seed := range int64(64) {
		got := must1(m.Restart(powercut.Torn, seed).Get("/f"))
		patterns[checkTorn(t, old, new, got)] = true
		lengths[len(got)] = true
	}
	if !lengths[len(old)] || !lengths[len(new)] {
		t.Errorf("lengths seen %v, want both %d and %d", slices.Sorted(maps.Keys(lengths)), len(old), len(new))
	}
	if len(patterns) < 6 {
		t.Errorf("only %d outcomes in 64 seeds: %v", len(patterns), patterns)
	}
}

// TestTornDirectoryPrefix runs several operations in one directory without
// SyncDir: whatever survives is the state after some prefix of them, and
// every prefix shows up for some seed. Operations before a SyncDir always
// survive.
func TestTornDirectoryPrefix(t *testing.T) {
	m := powercut.New()
	must(t, m.MkdirAll("/d", 0o755))
	m.Put("/d/old", []byte("old"))
	steps := []func() error{
		func() error { create(t, m, "/d/a"); return nil },
		func() error { create(t, m, "/d/b"); return nil },
		func() error { return m.Rename("/d/a", "/d/c") },
		func() error { return m.Remove("/d/b") },
		func() error { create(t, m, "/d/e"); return nil },
		func() error { return m.Rename("/d/e", "/d/old") }, // over an existing file
		func() error { create(t, m, "/d/f"); return nil },
		func() error { return m.SyncDir("/d") },
		func() error { create(t, m, "/d/g"); return nil },
		func() error { return m.Remove("/d/c") },
		func() error { create(t, m, "/d/h"); return nil },
	}
	const synced = 8 // states[8] is the state at the SyncDir
	states := []map[string]string{dump(t, m)}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		states = append(states, dump(t, m))
	}
	seen := map[int]int{}
	for seed := range int64(300) {
		got := dump(t, m.Restart(powercut.Torn, seed))
		// The SyncDir step repeats the state before it: take the last
		// match.
		k := -1
		for i, s := range states {
			if maps.Equal(s, got) {
				k = i
			}
		}
		if k < 0 {
			t.Fatalf("seed %d: %v is not the state after a prefix of the operations", seed, got)
		}
		seen[k]++
	}
	for k := range states {
		switch {
		case k < synced && seen[k] > 0:
			t.Errorf("state %d, before the SyncDir, seen after a cut", k)
		case k >= synced && seen[k] == 0:
			t.Errorf("state %d never seen in 300 seeds (seen: %v)", k, seen)
		}
	}
	wantTree(t, "DropUnsynced", m.Restart(powercut.DropUnsynced, 0), states[synced])
	wantTree(t, "KeepAll", m.Restart(powercut.KeepAll, 0), states[len(states)-1])
}

// TestTornKeepsSynced: a fully synced tree comes back exactly, whatever
// the seed, next to unsynced changes elsewhere.
func TestTornKeepsSynced(t *testing.T) {
	m := powercut.New()
	must(t, m.MkdirAll("/state", 0o700))
	for i := range 5 {
		name := fmt.Sprintf("/state/f%d", i)
		f := open(t, m, name, os.O_WRONLY|os.O_CREATE)
		write(t, f, string(bytes.Repeat([]byte{byte('a' + i)}, 700*i)))
		must(t, f.Sync())
		must(t, f.Close())
	}
	must(t, m.SyncDir("/state"))
	want := dump(t, m)
	// Unsynced noise in another directory.
	must(t, m.MkdirAll("/other", 0o700))
	f := open(t, m, "/other/x", os.O_WRONLY|os.O_CREATE)
	write(t, f, "noise")
	for seed := range int64(20) {
		got := dump(t, m.Restart(powercut.Torn, seed))
		delete(got, "/other/")
		delete(got, "/other/x")
		if !maps.Equal(got, want) {
			t.Fatalf("seed %d: synced tree %v, want %v", seed, got, want)
		}
	}
}

// TestKeepAllIsLiveView: KeepAll restores exactly what reads saw at the
// cut, and DropUnsynced what was made durable.
func TestKeepAllIsLiveView(t *testing.T) {
	m := powercut.New()
	m.Put("/a/keep", []byte("durable"))
	m.Put("/a/gone", []byte("removed later"))
	m.PutDevice("/dev/slot", 4*sector)
	durable := dump(t, m)
	must(t, m.MkdirAll("/a/b", 0o755))
	durable["/a/b/"] = ""
	create(t, m, "/a/b/new")
	must(t, m.Remove("/a/gone"))
	f := open(t, m, "/a/keep", os.O_RDWR|os.O_APPEND)
	write(t, f, " and appended")
	d := open(t, m, "/dev/slot", os.O_RDWR)
	if _, err := d.WriteAt([]byte("boot"), sector); err != nil {
		t.Fatal(err)
	}
	must(t, m.Rename("/a/keep", "/a/b/moved"))
	live := dump(t, m)
	if live["/a/b/moved"] != "durable and appended" || len(live) != 6 {
		t.Fatalf("live view %v", live)
	}
	m.CutAt(m.Ops() + 1)
	if err := m.SyncDir("/a"); err == nil {
		t.Fatal("no cut")
	}
	wantTree(t, "KeepAll", m.Restart(powercut.KeepAll, 7), live)
	wantTree(t, "DropUnsynced", m.Restart(powercut.DropUnsynced, 0), durable)
}
