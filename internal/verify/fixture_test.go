package verify_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/verify"
)

// fixture is a published repository with one release, built by the real
// repository code, plus the keys an attacker might or might not hold.
type fixture struct {
	t                                 *testing.T
	dir                               string
	root1                             []byte
	md                                verify.Metadata
	image                             []byte
	index                             []byte
	target                            string
	rootA, rootB, targets, online     keys.Signer
	relA, relB, relC                  keys.Signer
	snapshotVersion, timestampVersion int64
}

func mustKey(t *testing.T, typ keys.Type) keys.Signer {
	t.Helper()
	s, err := keys.Generate(typ)
	if err != nil {
		t.Fatal(err)
	}
	return keys.InMemory(s)
}

func newFixture(t *testing.T, expiry map[string]offlinerepo.Duration) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: filepath.Join(t.TempDir(), "repo"), target: "acme-gw/2.4.1/fw.img"}
	f.rootA, f.rootB = mustKey(t, keys.Ed25519), mustKey(t, keys.ECDSAP256)
	f.targets, f.online = mustKey(t, keys.Ed25519), mustKey(t, keys.Ed25519)
	f.relA, f.relB, f.relC = mustKey(t, keys.Ed25519), mustKey(t, keys.ECDSAP256), mustKey(t, keys.Ed25519)
	r, err := offlinerepo.Init(f.dir, offlinerepo.InitOptions{
		RootKeys: pubs(f.rootA, f.rootB), RootThreshold: 2,
		TargetsKeys: pubs(f.targets), TargetsThreshold: 1,
		SnapshotKeys: pubs(f.online), TimestampKeys: pubs(f.online),
		Expiry: expiry,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	must(t, sign(r, "root", f.rootA, f.rootB))
	must(t, r.Delegate("acme-gw", pubs(f.relA, f.relB, f.relC), 2))
	must(t, sign(r, "targets", f.targets))
	f.image = make([]byte, 2<<20+12345) // three chunks at 1 MiB, the last one short
	rand.Read(f.image)
	img := filepath.Join(t.TempDir(), "fw.img")
	must(t, os.WriteFile(img, f.image, 0o644))
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "2.4.1", SecurityVersion: 7, Hardware: []string{"acme-gw-rev2"}, ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	must(t, sign(r, "acme-gw", f.relA, f.relC))
	if _, err := r.Publish([]keys.Signer{f.online}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	f.load()
	return f
}

func (f *fixture) load() {
	pub := filepath.Join(f.dir, "public")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(pub, name))
		if err != nil {
			f.t.Fatal(err)
		}
		return b
	}
	f.root1 = read("1.root.json")
	f.md = verify.Metadata{Timestamp: read("timestamp.json"), Delegated: map[string][]byte{}}
	ts, err := metadata.Timestamp().FromBytes(f.md.Timestamp)
	must(f.t, err)
	f.timestampVersion = ts.Signed.Version
	f.snapshotVersion = ts.Signed.Meta["snapshot.json"].Version
	f.md.Snapshot = read(fmt.Sprintf("%d.snapshot.json", f.snapshotVersion))
	snap, err := metadata.Snapshot().FromBytes(f.md.Snapshot)
	must(f.t, err)
	f.md.Targets = read(fmt.Sprintf("%d.targets.json", snap.Signed.Meta["targets.json"].Version))
	f.md.Delegated["acme-gw"] = read(fmt.Sprintf("%d.acme-gw.json", snap.Signed.Meta["acme-gw.json"].Version))
	for v := 2; ; v++ {
		b, err := os.ReadFile(filepath.Join(pub, fmt.Sprintf("%d.root.json", v)))
		if err != nil {
			break
		}
		f.md.Roots = append(f.md.Roots, b)
	}
	p := f.published()
	idx, err := os.ReadFile(p.IndexPath)
	must(f.t, err)
	f.index = idx
}

func (f *fixture) published() *offlinerepo.Published {
	r, err := offlinerepo.Open(f.dir)
	must(f.t, err)
	defer r.Close()
	p, err := r.FindPublished("acme-gw/2.4.1")
	must(f.t, err)
	return p
}

func pubs(ss ...keys.Signer) (out []crypto.PublicKey) {
	for _, s := range ss {
		out = append(out, s.Public())
	}
	return out
}

func sign(r *offlinerepo.Repo, role string, ss ...keys.Signer) error {
	for _, s := range ss {
		if _, err := r.Sign(role, s); err != nil {
			return err
		}
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// resignTargets edits a targets-type document and signs it with signers,
// as someone holding those keys could.
func resignTargets(t *testing.T, raw []byte, edit func(*metadata.Metadata[metadata.TargetsType]), signers ...keys.Signer) []byte {
	t.Helper()
	m, err := metadata.Targets().FromBytes(raw)
	must(t, err)
	edit(m)
	m.ClearSignatures()
	for _, s := range signers {
		_, err := m.Sign(keys.ForTUF(s))
		must(t, err)
	}
	b, err := m.ToBytes(true)
	must(t, err)
	return b
}

// republish re-signs snapshot and timestamp over the current md with the
// online key: what a compromised server (holding only online keys) can do.
func (f *fixture) republish() {
	t := f.t
	snap, err := metadata.Snapshot().FromBytes(f.md.Snapshot)
	must(t, err)
	set := func(name string, b []byte) {
		var v int64
		if name == "targets.json" {
			m, err := metadata.Targets().FromBytes(b)
			must(t, err)
			v = m.Signed.Version
		} else {
			m, err := metadata.Targets().FromBytes(b)
			if err != nil {
				v = snap.Signed.Meta[name].Version
			} else {
				v = m.Signed.Version
			}
		}
		mf := metadata.MetaFile(v)
		mf.Length = int64(len(b))
		mf.Hashes = metadata.Hashes{"sha256": sum(b)}
		snap.Signed.Meta[name] = mf
	}
	set("targets.json", f.md.Targets)
	set("acme-gw.json", f.md.Delegated["acme-gw"])
	snap.Signed.Version++
	snap.ClearSignatures()
	_, err = snap.Sign(keys.ForTUF(f.online))
	must(t, err)
	f.md.Snapshot, err = snap.ToBytes(true)
	must(t, err)
	ts, err := metadata.Timestamp().FromBytes(f.md.Timestamp)
	must(t, err)
	mf := metadata.MetaFile(snap.Signed.Version)
	mf.Length = int64(len(f.md.Snapshot))
	mf.Hashes = metadata.Hashes{"sha256": sum(f.md.Snapshot)}
	ts.Signed.Meta["snapshot.json"] = mf
	ts.Signed.Version++
	ts.ClearSignatures()
	_, err = ts.Sign(keys.ForTUF(f.online))
	must(t, err)
	f.md.Timestamp, err = ts.ToBytes(true)
	must(t, err)
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	if i < 0 {
		i += len(c)
	}
	c[i] ^= 0x01
	return c
}

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
