package powercut_test

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"testing"

	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/powercut"
)

// tornSeeds is how many Torn outcomes each cut point is restarted into.
const tornSeeds = 32

// restarts returns every outcome checked after a cut: DropUnsynced,
// KeepAll, and Torn with tornSeeds seeds.
func restarts(m *powercut.Model) map[string]*powercut.Model {
	out := map[string]*powercut.Model{
		"DropUnsynced": m.Restart(powercut.DropUnsynced, 0),
		"KeepAll":      m.Restart(powercut.KeepAll, 0),
	}
	for seed := range int64(tornSeeds) {
		out[fmt.Sprint("Torn/", seed)] = m.Restart(powercut.Torn, seed)
	}
	return out
}

// TestWriteFileCrash is the property the agent relies on: power cut at any
// operation of fsys.WriteFile on an existing file leaves exactly the old
// content or the new one at the name, in every Restart mode, and once
// WriteFile has returned nil the new content survives every outcome.
// After RemoveTemps, nothing else is left in the directory.
func TestWriteFileCrash(t *testing.T) {
	const name = "/var/lib/rampart/state.json"
	dir := path.Dir(name)
	old := bytes.Repeat([]byte("old state "), 150) // three sectors
	for _, tc := range []struct {
		name string
		new  []byte
	}{
		{"Shorter", []byte(`{"new":true}`)},
		{"Longer", bytes.Repeat([]byte("NEW STATE "), 400)},
		{"Empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Count the operations of one uninterrupted WriteFile.
			m := powercut.New()
			m.Put(name, old)
			must(t, fsys.WriteFile(m, name, tc.new, 0o600))
			total := m.Ops()
			if total != 5 {
				t.Fatalf("WriteFile took %d operations, want 5 (create, write, fsync, rename, fsync dir)", total)
			}

			outcomes := map[string]int{}
			checked := 0
			for cut := 1; cut <= total+1; cut++ { // total+1: no cut, Restart cuts after
				m := powercut.New()
				m.Put(name, old)
				m.CutAt(cut)
				err := fsys.WriteFile(m, name, tc.new, 0o600)
				completed := cut > total
				switch {
				case completed && err != nil:
					t.Fatalf("cut %d: WriteFile = %v", cut, err)
				case !completed && !errors.Is(err, powercut.ErrPowerCut):
					t.Fatalf("cut %d: WriteFile = %v, want ErrPowerCut", cut, err)
				case !completed && m.Ops() != cut-1:
					t.Fatalf("cut %d: Ops() = %d", cut, m.Ops())
				}
				for mode, r := range restarts(m) {
					got, err := r.Get(name)
					switch {
					case err != nil:
						t.Fatalf("cut %d, %s: %s is gone: %v", cut, mode, name, err)
					case completed && !bytes.Equal(got, tc.new):
						t.Fatalf("cut %d, %s: WriteFile returned nil but %s holds %.40q", cut, mode, name, got)
					case bytes.Equal(got, old):
						outcomes[fmt.Sprintf("cut %d old", cut)]++
					case bytes.Equal(got, tc.new):
						outcomes[fmt.Sprintf("cut %d new", cut)]++
					default:
						t.Fatalf("cut %d, %s: %s holds neither the old nor the new content: %.40q", cut, mode, name, got)
					}
					must(t, fsys.RemoveTemps(r, dir))
					if names := readDir(t, r, dir); !slices.Equal(names, []string{path.Base(name)}) {
						t.Fatalf("cut %d, %s: after RemoveTemps the directory holds %q", cut, mode, names)
					}
					checked++
				}
			}
			// Not vacuous: a cut before the rename keeps the old
			// content; a cut at the directory fsync may go either way.
			for _, want := range []string{"cut 1 old", "cut 4 old", fmt.Sprint("cut ", total, " old"), fmt.Sprint("cut ", total, " new"), fmt.Sprint("cut ", total+1, " new")} {
				if outcomes[want] == 0 {
					t.Errorf("outcome %q never happened: %v", want, outcomes)
				}
			}
			t.Logf("%d cut points (%d operations + no cut) x %d restarts = %d outcomes checked", total+1, total, 2+tornSeeds, checked)
		})
	}
}

// TestWriteFileSequenceCrash cuts the power during a series of WriteFiles:
// the name holds the content of the last one that returned nil, or of the
// one interrupted.
func TestWriteFileSequenceCrash(t *testing.T) {
	const name = "/state"
	versions := [][]byte{
		[]byte("v0"),
		bytes.Repeat([]byte("1"), 1000),
		[]byte("v2"),
		bytes.Repeat([]byte("3"), 3000),
	}
	checked := 0
	for cut := 1; ; cut++ {
		m := powercut.New()
		m.Put(name, versions[0])
		m.CutAt(cut)
		done := 0
		for _, v := range versions[1:] {
			if err := fsys.WriteFile(m, name, v, 0o600); err != nil {
				if !errors.Is(err, powercut.ErrPowerCut) {
					t.Fatalf("cut %d: %v", cut, err)
				}
				break
			}
			done++
		}
		for mode, r := range restarts(m) {
			got, err := r.Get(name)
			if err != nil {
				t.Fatalf("cut %d, %s: %v", cut, mode, err)
			}
			ok := bytes.Equal(got, versions[done])
			if done+1 < len(versions) {
				ok = ok || bytes.Equal(got, versions[done+1])
			}
			if !ok {
				t.Fatalf("cut %d, %s: after %d completed writes the file holds %.20q", cut, mode, done, got)
			}
			checked++
		}
		if done == len(versions)-1 {
			t.Logf("%d cut points, %d outcomes checked", cut, checked)
			break
		}
	}
}
