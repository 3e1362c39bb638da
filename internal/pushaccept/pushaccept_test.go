package pushaccept_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pushaccept"
	"github.com/rampartfw/rampart/internal/release"
)

type fx struct {
	t                             *testing.T
	rootA, rootB, targets, online keys.Signer
	relA, relB, relC              keys.Signer
	first                         pushaccept.Push
	state                         pushaccept.State
}

func key(t *testing.T) keys.Signer {
	s, err := keys.Generate(keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	return keys.InMemory(s)
}

func pubs(ss ...keys.Signer) (out []crypto.PublicKey) {
	for _, s := range ss {
		out = append(out, s.Public())
	}
	return out
}

// newFx builds an offline repository with one release (acme-gw 1.0.0,
// security version 7, signed by rel-a and rel-c of a 2-of-3 role) and
// pushes it to an empty server state.
func newFx(t *testing.T) *fx {
	f := &fx{t: t, rootA: key(t), rootB: key(t), targets: key(t), online: key(t), relA: key(t), relB: key(t), relC: key(t)}
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: pubs(f.rootA, f.rootB), RootThreshold: 2, TargetsKeys: pubs(f.targets), TargetsThreshold: 1, SnapshotKeys: pubs(f.online), TimestampKeys: pubs(f.online)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sign := func(role string, ss ...keys.Signer) {
		for _, s := range ss {
			if _, err := r.Sign(role, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	sign("root", f.rootA, f.rootB)
	if err := r.Delegate("acme-gw", pubs(f.relA, f.relB, f.relC), 2); err != nil {
		t.Fatal(err)
	}
	sign("targets", f.targets)
	img := filepath.Join(t.TempDir(), "fw.img")
	b := make([]byte, 100000)
	rand.Read(b)
	os.WriteFile(img, b, 0o644)
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "1.0.0", SecurityVersion: 7, Hardware: []string{"hw"}}); err != nil {
		t.Fatal(err)
	}
	sign("acme-gw", f.relA, f.relC)
	if _, err := r.Publish([]keys.Signer{f.online}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "public", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f.first = pushaccept.Push{Roots: [][]byte{read("1.root.json")}, Targets: read("1.targets.json"), Roles: map[string][]byte{"acme-gw": read("1.acme-gw.json")}}
	acc, err := pushaccept.Accept(pushaccept.State{}, f.first, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(acc.NewReleases) != 1 || acc.NewReleases[0].Target != "acme-gw/1.0.0/fw.img" || acc.NewReleases[0].Image.Length != 100000 {
		t.Fatalf("%+v", acc.NewReleases)
	}
	f.state = acc.State
	return f
}

// edit re-signs a targets-type document after edit, bumping its version.
func edit(t *testing.T, raw []byte, change func(m *metadata.Metadata[metadata.TargetsType]), signers ...keys.Signer) []byte {
	m, err := metadata.Targets().FromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	m.Signed.Version++
	change(m)
	m.ClearSignatures()
	for _, s := range signers {
		if _, err := m.Sign(keys.ForTUF(s)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := m.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addRelease adds a release copied from 1.0.0 with another version and
// security version.
func addRelease(t *testing.T, version string, sv uint64, reason string) func(m *metadata.Metadata[metadata.TargetsType]) {
	return func(m *metadata.Metadata[metadata.TargetsType]) {
		src := m.Signed.Targets["acme-gw/1.0.0/fw.img"]
		meta, err := release.FromTarget("acme-gw/1.0.0/fw.img", src)
		if err != nil {
			t.Fatal(err)
		}
		meta.Version, meta.SecurityVersion, meta.LowerSecurityVersionReason = version, sv, reason
		c, _ := meta.Custom()
		tf := *src
		tf.Custom = c
		path := "acme-gw/" + version + "/fw.img"
		tf.Path = path
		m.Signed.Targets[path] = &tf
	}
}

func (f *fx) refused(p pushaccept.Push, code pushaccept.Code, role, msg string) {
	f.t.Helper()
	_, err := pushaccept.Accept(f.state, p, time.Now())
	var e *pushaccept.Error
	if !errors.As(err, &e) || e.Code != code || e.Role != role || !contains(e.Msg, msg) {
		f.t.Fatalf("got %v, want %s on %s containing %q", err, code, role, msg)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestAcceptsNewRelease(t *testing.T) {
	f := newFx(t)
	role := edit(t, f.state.Roles["acme-gw"], addRelease(t, "1.1.0", 8, ""), f.relA, f.relB)
	acc, err := pushaccept.Accept(f.state, pushaccept.Push{Roles: map[string][]byte{"acme-gw": role}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(acc.NewReleases) != 1 || acc.NewReleases[0].Target != "acme-gw/1.1.0/fw.img" || acc.Versions["acme-gw"] != 2 || len(acc.Changed) != 1 {
		t.Fatalf("%+v", acc)
	}
}

func TestRefusals(t *testing.T) {
	f := newFx(t)
	role := f.state.Roles["acme-gw"]
	f.refused(pushaccept.Push{}, pushaccept.NothingPushed, "", "no metadata")
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": role}}, pushaccept.VersionNotNext, "acme-gw", "version 1 pushed; the next version must be 2")
	skip := edit(t, role, func(m *metadata.Metadata[metadata.TargetsType]) { m.Signed.Version++ }, f.relA, f.relB)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": skip}}, pushaccept.VersionNotNext, "acme-gw", "version 3 pushed")
	one := edit(t, role, addRelease(t, "1.1.0", 8, ""), f.relA)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": one}}, pushaccept.BadSignature, "acme-gw", "got 1, want 2")
	stranger := edit(t, role, addRelease(t, "1.1.0", 8, ""), f.relA, f.targets)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": stranger}}, pushaccept.BadSignature, "acme-gw", "got 1, want 2")
	changed := edit(t, role, func(m *metadata.Metadata[metadata.TargetsType]) { m.Signed.Targets["acme-gw/1.0.0/fw.img"].Length++ }, f.relA, f.relB)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": changed}}, pushaccept.ReleaseImmutable, "acme-gw", "was changed")
	removed := edit(t, role, func(m *metadata.Metadata[metadata.TargetsType]) { delete(m.Signed.Targets, "acme-gw/1.0.0/fw.img") }, f.relA, f.relB)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": removed}}, pushaccept.ReleaseImmutable, "acme-gw", "was removed")
	lower := edit(t, role, addRelease(t, "1.1.0", 6, ""), f.relA, f.relB)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": lower}}, pushaccept.SecurityLowered, "acme-gw", "security version 6, below acme-gw's highest 7")
	lowerOK := edit(t, role, addRelease(t, "1.1.0", 6, "backport for old bootloaders"), f.relA, f.relB)
	if _, err := pushaccept.Accept(f.state, pushaccept.Push{Roles: map[string][]byte{"acme-gw": lowerOK}}, time.Now()); err != nil {
		t.Fatalf("a lowered security version with a reason was refused: %v", err)
	}
	outside := edit(t, role, func(m *metadata.Metadata[metadata.TargetsType]) {
		addRelease(t, "1.1.0", 8, "")(m)
		tf := m.Signed.Targets["acme-gw/1.1.0/fw.img"]
		delete(m.Signed.Targets, "acme-gw/1.1.0/fw.img")
		m.Signed.Targets["acme-gw/1.1.0/extra/fw.img"] = tf
	}, f.relA, f.relB)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": outside}}, pushaccept.OutsideDelegation, "acme-gw", "outside the paths")
	f.refused(pushaccept.Push{Roles: map[string][]byte{"other": role}}, pushaccept.UnknownRole, "other", "not delegated")
	expired := edit(t, role, func(m *metadata.Metadata[metadata.TargetsType]) {
		m.Signed.Expires = time.Now().Add(-time.Hour).Truncate(time.Second)
	}, f.relA, f.relB)
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": expired}}, pushaccept.Expired, "acme-gw", "expired at")
	f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": []byte("{")}}, pushaccept.Malformed, "acme-gw", "metadata")
}

func TestRevokedKeyNeedsResignedRole(t *testing.T) {
	f := newFx(t)
	relA, _ := keys.ID(f.relA.Public())
	targets := edit(t, f.state.Targets, func(m *metadata.Metadata[metadata.TargetsType]) {
		if err := m.Signed.RevokeKey(relA, "acme-gw"); err != nil {
			t.Fatal(err)
		}
	}, f.targets)
	// acme-gw version 1 was signed by rel-a and rel-c: with rel-a revoked
	// it no longer meets its threshold.
	f.refused(pushaccept.Push{Targets: targets}, pushaccept.BadSignature, "acme-gw", "push a new version of acme-gw signed by its current keys")
	resigned := edit(t, f.state.Roles["acme-gw"], func(*metadata.Metadata[metadata.TargetsType]) {}, f.relA, f.relC)
	f.refused(pushaccept.Push{Targets: targets, Roles: map[string][]byte{"acme-gw": resigned}}, pushaccept.BadSignature, "acme-gw", "got 1, want 2")
	resigned = edit(t, f.state.Roles["acme-gw"], func(*metadata.Metadata[metadata.TargetsType]) {}, f.relB, f.relC)
	if _, err := pushaccept.Accept(f.state, pushaccept.Push{Targets: targets, Roles: map[string][]byte{"acme-gw": resigned}}, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestRootRotation(t *testing.T) {
	f := newFx(t)
	newA, newB := key(t), key(t)
	rotate := func(signers ...keys.Signer) []byte {
		r, err := metadata.Root().FromBytes(f.state.Roots[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, old := range []keys.Signer{f.rootA, f.rootB} {
			id, _ := keys.ID(old.Public())
			r.Signed.RevokeKey(id, "root")
		}
		for _, n := range []keys.Signer{newA, newB} {
			k, _ := keys.TUFKey(n.Public())
			r.Signed.AddKey(k, "root")
		}
		r.Signed.Version = 2
		r.ClearSignatures()
		for _, s := range signers {
			r.Sign(keys.ForTUF(s))
		}
		b, _ := r.ToBytes(true)
		return b
	}
	f.refused(pushaccept.Push{Roots: [][]byte{rotate(newA, newB)}}, pushaccept.BadSignature, "root", "version 1 root keys")
	f.refused(pushaccept.Push{Roots: [][]byte{rotate(f.rootA, f.rootB)}}, pushaccept.BadSignature, "root", "its own keys")
	acc, err := pushaccept.Accept(f.state, pushaccept.Push{Roots: [][]byte{rotate(f.rootA, f.rootB, newA, newB)}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if acc.Root.Signed.Version != 2 || len(acc.State.Roots) != 2 {
		t.Fatal("rotation not applied")
	}
	// Replaying version 1 as the next root is refused.
	f.state = acc.State
	f.refused(pushaccept.Push{Roots: [][]byte{f.first.Roots[0]}}, pushaccept.VersionNotNext, "root", "the next must be 3")
}

func TestFirstPushMustStartAtRootOne(t *testing.T) {
	f := newFx(t)
	_, err := pushaccept.Accept(pushaccept.State{}, pushaccept.Push{Targets: f.first.Targets}, time.Now())
	var e *pushaccept.Error
	if !errors.As(err, &e) || e.Code != pushaccept.Malformed {
		t.Fatalf("got %v", err)
	}
}

// Release immutability is about signed content: a re-signed role that
// carries the published release unchanged but serialised compactly or
// with other indentation is accepted; any change of what is signed about
// the release is refused, whatever the formatting.
func TestImmutabilityComparesSignedContent(t *testing.T) {
	f := newFx(t)
	role := f.state.Roles["acme-gw"]
	published, err := metadata.Targets().FromBytes(role)
	if err != nil {
		t.Fatal(err)
	}
	compact := func(b []byte) []byte {
		var out bytes.Buffer
		if err := json.Compact(&out, b); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	spaces := func(b []byte) []byte {
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "   "); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	for name, format := range map[string]func([]byte) []byte{"compact": compact, "spaces": spaces} {
		next := format(edit(t, role, addRelease(t, "1.1.0", 8, ""), f.relA, f.relB))
		m, err := metadata.Targets().FromBytes(next)
		if err != nil {
			t.Fatal(err)
		}
		if got := *m.Signed.Targets["acme-gw/1.0.0/fw.img"].Custom; bytes.Equal(got, *published.Signed.Targets["acme-gw/1.0.0/fw.img"].Custom) {
			t.Fatalf("%s: the published release's custom metadata is not reformatted: %s", name, got)
		}
		acc, err := pushaccept.Accept(f.state, pushaccept.Push{Roles: map[string][]byte{"acme-gw": next}}, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(acc.NewReleases) != 1 || acc.NewReleases[0].Target != "acme-gw/1.1.0/fw.img" {
			t.Fatalf("%s: %+v", name, acc.NewReleases)
		}
		// The published role reformatted the other way is accepted next.
		f2 := *f
		f2.state = acc.State
		again := compact(edit(t, next, addRelease(t, "1.2.0", 8, ""), f.relB, f.relC))
		if _, err := pushaccept.Accept(f2.state, pushaccept.Push{Roles: map[string][]byte{"acme-gw": again}}, time.Now()); err != nil {
			t.Fatalf("%s, then compact: %v", name, err)
		}
	}
	for what, change := range map[string]func(tf *metadata.TargetFiles){
		"hardware": func(tf *metadata.TargetFiles) {
			meta, err := release.FromTarget("acme-gw/1.0.0/fw.img", tf)
			if err != nil {
				t.Fatal(err)
			}
			meta.HardwareIDs = append(meta.HardwareIDs, "other-hw")
			tf.Custom, _ = meta.Custom()
		},
		"added hash": func(tf *metadata.TargetFiles) { tf.Hashes["sha512"] = make([]byte, 64) },
		"extra field": func(tf *metadata.TargetFiles) {
			tf.UnrecognizedFields = map[string]any{"x-note": "changed"}
		},
	} {
		for name, format := range map[string]func([]byte) []byte{"compact": compact, "spaces": spaces} {
			changed := format(edit(t, role, func(m *metadata.Metadata[metadata.TargetsType]) { change(m.Signed.Targets["acme-gw/1.0.0/fw.img"]) }, f.relA, f.relB))
			t.Run(what+"/"+name, func(t *testing.T) {
				f.t = t
				f.refused(pushaccept.Push{Roles: map[string][]byte{"acme-gw": changed}}, pushaccept.ReleaseImmutable, "acme-gw", "was changed")
			})
		}
	}
}
