package offlinerepo

import (
	"crypto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
)

// fuzzState is a published repository with one release: its genuine
// files seed the fuzzer, and its state is what a hostile answer is judged
// against.
func fuzzState(f *testing.F) (*state, *PushSet, *published) {
	f.Helper()
	keys.SetTestOnlyWorkFactor(10)
	k := func() keys.Signer {
		s, err := keys.Generate(keys.Ed25519)
		if err != nil {
			f.Fatal(err)
		}
		return keys.InMemory(s)
	}
	root, targets, online, rel := k(), k(), k(), k()
	pub := func(s keys.Signer) []crypto.PublicKey { return []crypto.PublicKey{s.Public()} }
	dir := filepath.Join(f.TempDir(), "repo")
	r, err := Init(dir, InitOptions{RootKeys: pub(root), RootThreshold: 1, TargetsKeys: pub(targets), TargetsThreshold: 1, SnapshotKeys: pub(online), TimestampKeys: pub(online)})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	must := func(_ string, err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	must(r.Sign("root", root))
	if err := r.Delegate("acme-gw", pub(rel), 1); err != nil {
		f.Fatal(err)
	}
	must(r.Sign("targets", targets))
	img := filepath.Join(f.TempDir(), "fw.img")
	os.WriteFile(img, make([]byte, 5000), 0o644)
	add := func(v string) {
		if _, err := r.AddRelease(ReleaseOptions{Image: img, Product: "acme-gw", Version: v, SecurityVersion: 1, Hardware: []string{"hw"}}); err != nil {
			f.Fatal(err)
		}
		must(r.Sign("acme-gw", rel))
	}
	add("1.0.0")
	if _, err := r.Publish([]keys.Signer{online}); err != nil {
		f.Fatal(err)
	}
	first, err := r.readPublished()
	if err != nil {
		f.Fatal(err)
	}
	add("2.0.0")
	s, err := r.load()
	if err != nil {
		f.Fatal(err)
	}
	ps, err := r.pushSet(s, s.pubVersion)
	if err != nil {
		f.Fatal(err)
	}
	return s, ps, first
}

// FuzzAdoptable feeds hostile server answers (timestamp, snapshot and the
// pushed role as served) to the decision that adopts a push's answer, and
// published files to the check of public/: neither may panic, and an
// adopted answer must carry exactly the role that was pushed.
func FuzzAdoptable(f *testing.F) {
	s, ps, first := fuzzState(f)
	f.Add(first.timestamp, first.snapshot, first.roles["acme-gw"])
	f.Add(first.timestamp, first.snapshot, ps.Roles["acme-gw"])
	f.Add([]byte(`{"signed":{"_type":"timestamp","meta":{"snapshot.json":{"version":1}}},"signatures":[]}`), []byte(`{"signed":{"_type":"snapshot","meta":{"a":{"version":1}}},"signatures":[]}`), []byte("{}"))
	now := time.Now()
	f.Fuzz(func(t *testing.T, ts, snap, role []byte) {
		ans := &Answer{Timestamp: ts, Snapshot: snap, Roots: map[int64][]byte{}, Roles: map[string][]byte{"acme-gw": role}}
		if next, err := adoptable(s, ps, ans, now); err == nil {
			if string(next.roles["acme-gw"]) != string(ps.Roles["acme-gw"]) {
				t.Fatal("adopted a role other than the one pushed")
			}
		}
		p := &published{roots: first.roots, timestamp: ts, snapshot: snap, roles: map[string][]byte{metadata.TARGETS: first.roles[metadata.TARGETS], "acme-gw": role}}
		if tr, err := checkPublished(p); err == nil && tr.Targets["acme-gw"] == nil {
			t.Fatal("verified without the delegated role")
		}
		pinnedRole(string(snap))
	})
}
