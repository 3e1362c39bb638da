package offlinerepo_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// treeHash digests every file under dir (path, mode, content) but the lock,
// to show that a refused command changed nothing.
func treeHash(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ".lock" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// injectTarget adds an attacker's target to a targets-type document and
// keeps its signatures, as a server or front end rewriting it would.
func injectTarget(t testing.TB, doc []byte, path string, secVer uint64) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	signed := m["signed"].(map[string]any)
	targets, _ := signed["targets"].(map[string]any)
	if targets == nil {
		targets = map[string]any{}
		signed["targets"] = targets
	}
	product, rest, _ := strings.Cut(path, "/")
	version, _, _ := strings.Cut(rest, "/")
	targets[path] = map[string]any{
		"length": 666,
		"hashes": map[string]any{"sha256": strings.Repeat("66", 32)},
		"custom": map[string]any{"rampart": map[string]any{
			"product": product, "version": version, "security_version": secVer, "hardware_ids": []string{"acme-gw-rev2"},
			"created": "2026-01-01T00:00:00Z",
			"index":   map[string]any{"sha256": strings.Repeat("77", 32), "length": 100, "chunk_size": 1 << 20},
		}},
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onlineKeys returns the server's snapshot and timestamp signers, which a
// compromised server holds.
func onlineKeys(t testing.TB, e *servertest.Env) []keys.Signer {
	t.Helper()
	var out []keys.Signer
	for _, n := range []string{"snapshot.key", "timestamp.key"} {
		s, err := keys.OpenFile(filepath.Join(e.DataDir, "keys", n), nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// resign signs a snapshot with the given pins, and a timestamp naming it,
// with the server's online keys, as a compromised server can.
func resign(t testing.TB, e *servertest.Env, meta map[string]*metadata.MetaFiles, snapV, tsV int64, expires time.Time) (snap, ts []byte) {
	t.Helper()
	root, err := metadata.Root().FromBytes(e.ImageRoot)
	if err != nil {
		t.Fatal(err)
	}
	online := onlineKeys(t, e)
	s := metadata.Snapshot(expires)
	s.Signed.Version, s.Signed.Meta = snapV, meta
	if err := onlineroles.SignRole(root, metadata.SNAPSHOT, s, online); err != nil {
		t.Fatal(err)
	}
	if snap, err = s.ToBytes(true); err != nil {
		t.Fatal(err)
	}
	if ts, err = onlineroles.SignTimestamp(root, snap, snapV, tsV, expires, online); err != nil {
		t.Fatal(err)
	}
	return snap, ts
}

// A server's answer to a push is adopted only if it verifies: each
// hostile answer below is refused with nothing written to the repository,
// and the genuine answer is adopted afterwards.
func TestPushAnswerRefused(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 1, "acme-gw-rev2")
	img := make([]byte, 64<<10)
	rand.Read(img)
	p := filepath.Join(t.TempDir(), "fw.img")
	os.WriteFile(p, img, 0o644)
	if _, err := e.Repo.AddRelease(offlinerepo.ReleaseOptions{Image: p, Product: servertest.Product, Version: "2.0.0", SecurityVersion: 2, Hardware: []string{"acme-gw-rev2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.Sign(servertest.Product, e.Rel); err != nil {
		t.Fatal(err)
	}
	oldTS, err := os.ReadFile(filepath.Join(e.Repo.Dir, "public", "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	far := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	// genuine returns the server's real answer for name.
	genuine := func(name string) []byte { return e.Call(e.Pool, "GET", "/repo/"+name, "", nil, 200) }
	// pins returns the server's genuine snapshot pins, and its versions.
	pins := func() (map[string]*metadata.MetaFiles, int64, int64) {
		ts, err := metadata.Timestamp().FromBytes(genuine("timestamp.json"))
		if err != nil {
			t.Fatal(err)
		}
		sv := ts.Signed.Meta["snapshot.json"].Version
		snap, err := metadata.Snapshot().FromBytes(genuine(fmt.Sprintf("%d.snapshot.json", sv)))
		if err != nil {
			t.Fatal(err)
		}
		return snap.Signed.Meta, sv, ts.Signed.Version
	}
	// withSnapshot serves a re-signed snapshot and timestamp instead of the
	// server's.
	withSnapshot := func(snap, ts []byte) func(string, []byte) []byte {
		return func(name string, b []byte) []byte {
			switch {
			case name == "timestamp.json":
				return ts
			case strings.HasSuffix(name, ".snapshot.json"):
				return snap
			}
			return b
		}
	}

	cases := []struct {
		name   string
		tamper func(t *testing.T) func(string, []byte) []byte
		want   string
	}{
		{"an injected target in the pushed role", func(t *testing.T) func(string, []byte) []byte {
			return func(name string, b []byte) []byte {
				if name == "2.acme-gw.json" {
					return injectTarget(t, b, "acme-gw/6.6.6/fw.img", 99)
				}
				return b
			}
		}, "serves a acme-gw version 2 that differs from the one pushed"},
		{"the poisoned role pinned by a snapshot the online keys signed", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, tv := pins()
			poisoned := injectTarget(t, genuine("2.acme-gw.json"), "acme-gw/6.6.6/fw.img", 99)
			meta["acme-gw.json"] = onlineroles.MetaFile(2, poisoned)
			snap, ts := resign(t, e, meta, sv+1, tv+1, far)
			inner := withSnapshot(snap, ts)
			return func(name string, b []byte) []byte {
				if name == "2.acme-gw.json" {
					return poisoned
				}
				return inner(name, b)
			}
		}, "differs from the one pushed"},
		{"a snapshot pinning a role version that was not pushed", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, tv := pins()
			meta["acme-gw.json"] = &metadata.MetaFiles{Version: 3}
			return withSnapshot(resign(t, e, meta, sv+1, tv+1, far))
		}, "expected acme-gw version 3, got 2"},
		{"a snapshot pinning a role nobody delegated", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, tv := pins()
			meta["evil-gw.json"] = &metadata.MetaFiles{Version: 1}
			return withSnapshot(resign(t, e, meta, sv+1, tv+1, far))
		}, "pins evil-gw.json, which this repository neither pushed nor published"},
		{"a snapshot leaving out targets", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, tv := pins()
			delete(meta, "targets.json")
			return withSnapshot(resign(t, e, meta, sv+1, tv+1, far))
		}, "leaves out targets.json"},
		{"a snapshot entry shorter than .json", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, tv := pins()
			meta["a"] = &metadata.MetaFiles{Version: 1}
			return withSnapshot(resign(t, e, meta, sv+1, tv+1, far))
		}, `snapshot entry "a" is neither`},
		{"an expired timestamp", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, tv := pins()
			return withSnapshot(resign(t, e, meta, sv+1, tv+1, time.Now().Add(-time.Hour).UTC().Truncate(time.Second)))
		}, "expired at"},
		{"the previous timestamp replayed", func(t *testing.T) func(string, []byte) []byte {
			return func(name string, b []byte) []byte {
				if name == "timestamp.json" {
					return oldTS
				}
				return b
			}
		}, "acme-gw"},
		{"a snapshot version that does not move forward", func(t *testing.T) func(string, []byte) []byte {
			meta, _, tv := pins()
			return withSnapshot(resign(t, e, meta, 1, tv+1, far))
		}, "snapshot version 1 does not move past the published 1"},
		{"a snapshot signed by a key the root does not name", func(t *testing.T) func(string, []byte) []byte {
			meta, sv, _ := pins()
			k, _ := keys.Generate(keys.Ed25519)
			s := metadata.Snapshot(far)
			s.Signed.Version, s.Signed.Meta = sv+1, meta
			if _, err := s.Sign(keys.ForTUF(keys.InMemory(k))); err != nil {
				t.Fatal(err)
			}
			snap, _ := s.ToBytes(true)
			root, _ := metadata.Root().FromBytes(e.ImageRoot)
			ts, err := onlineroles.SignTimestamp(root, snap, sv+1, 100, far, onlineKeys(t, e))
			if err != nil {
				t.Fatal(err)
			}
			return withSnapshot(snap, ts)
		}, "snapshot"},
	}
	before := treeHash(t, e.Repo.Dir)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := e.PushStaged(c.tamper(t))
			if !errors.Is(err, offlinerepo.ErrUnverified) {
				t.Fatalf("got %v, want ErrUnverified", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if got := treeHash(t, e.Repo.Dir); got != before {
				t.Fatal("the refused answer changed the repository")
			}
		})
	}
	// An answer over the metadata limit is cut, not adopted.
	err = e.PushStaged(func(name string, b []byte) []byte {
		if name == "timestamp.json" {
			return make([]byte, 9<<20)
		}
		return b
	})
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized timestamp: got %v", err)
	}
	if got := treeHash(t, e.Repo.Dir); got != before {
		t.Fatal("the refused answer changed the repository")
	}
	// The genuine answer is adopted, and a bundle of the pushed release can
	// be made from it.
	if err := e.PushStaged(nil); err != nil {
		t.Fatal(err)
	}
	pub, err := e.Repo.FindPublished("acme-gw/2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.BundleContents(pub); err != nil {
		t.Fatal(err)
	}
}

// The first push sends root version 1; a server that serves another root
// 1 back (one naming its own keys) is refused.
func TestPushAnswerRootSubstitution(t *testing.T) {
	e := servertest.New(t)
	img := make([]byte, 4096)
	rand.Read(img)
	p := filepath.Join(t.TempDir(), "fw.img")
	os.WriteFile(p, img, 0o644)
	if _, err := e.Repo.AddRelease(offlinerepo.ReleaseOptions{Image: p, Product: servertest.Product, Version: "1.0.0", SecurityVersion: 1, Hardware: []string{"hw"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.Sign(servertest.Product, e.Rel); err != nil {
		t.Fatal(err)
	}
	evil := attackerRoot(t, e.ImageRoot, 1)
	before := treeHash(t, e.Repo.Dir)
	err := e.PushStaged(func(name string, b []byte) []byte {
		if name == "1.root.json" {
			return evil
		}
		return b
	})
	if !errors.Is(err, offlinerepo.ErrUnverified) || !strings.Contains(err.Error(), "root version 1 that differs from the one pushed") {
		t.Fatalf("got %v", err)
	}
	if treeHash(t, e.Repo.Dir) != before {
		t.Fatal("the refused answer changed the repository")
	}
}

// attackerRoot returns a root of the given version, derived from genuine,
// whose targets key is the attacker's, signed by that key alone.
func attackerRoot(t testing.TB, genuine []byte, version int64) []byte {
	t.Helper()
	r, err := metadata.Root().FromBytes(genuine)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := keys.Generate(keys.Ed25519)
	s := keys.InMemory(k)
	mk, err := metadata.KeyFromPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	id, err := mk.ID()
	if err != nil {
		t.Fatal(err)
	}
	r.Signed.Version = version
	r.Signed.Keys[id] = mk
	r.Signed.Roles[metadata.TARGETS] = &metadata.Role{KeyIDs: []string{id}, Threshold: 1}
	r.Signed.Roles[metadata.ROOT] = &metadata.Role{KeyIDs: []string{id}, Threshold: 1}
	r.ClearSignatures()
	if _, err := r.Sign(keys.ForTUF(s)); err != nil {
		t.Fatal(err)
	}
	b, err := r.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Whatever is done to public/ on disk, no command builds on it unless it
// verifies: each tampering below makes every command that reads the
// published state refuse with ErrUnverified, changing nothing.
func TestTamperedPublicRefused(t *testing.T) {
	s := newSimpleRepo(t)
	img := make([]byte, 8192)
	rand.Read(img)
	s.add(t, "1.0.0", img)
	if _, err := s.r.Sign("acme-gw", s.rel); err != nil {
		t.Fatal(err)
	}
	if _, err := s.r.Publish([]keys.Signer{s.online}); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(s.dir, "public")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(pub, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	root1 := read("1.root.json")
	img2 := filepath.Join(t.TempDir(), "fw2.img")
	os.WriteFile(img2, img[:4000], 0o644)

	cases := []struct {
		name   string
		tamper func()
		want   string
	}{
		{"a target injected into the published role", func() {
			os.WriteFile(filepath.Join(pub, "1.acme-gw.json"), injectTarget(t, read("1.acme-gw.json"), "acme-gw/6.6.6/fw.img", 99), 0o644)
		}, "acme-gw"},
		{"an unsigned root 2 naming another targets key", func() {
			os.WriteFile(filepath.Join(pub, "2.root.json"), attackerRoot(t, root1, 2), 0o644)
		}, "root version 2"},
		{"a root 1 replaced", func() {
			os.WriteFile(filepath.Join(pub, "1.root.json"), attackerRoot(t, root1, 1), 0o644)
			os.WriteFile(filepath.Join(pub, "root.json"), attackerRoot(t, root1, 1), 0o644)
		}, "does not verify"},
		{"a gap in the root history", func() {
			os.WriteFile(filepath.Join(pub, "3.root.json"), root1, 0o644)
		}, "public/2.root.json is missing"},
		{"a snapshot entry shorter than .json", func() {
			var m map[string]any
			json.Unmarshal(read("1.snapshot.json"), &m)
			m["signed"].(map[string]any)["meta"].(map[string]any)["a"] = map[string]any{"version": 1}
			b, _ := json.Marshal(m)
			os.WriteFile(filepath.Join(pub, "1.snapshot.json"), b, 0o644)
		}, `snapshot entry "a"`},
		{"a snapshot entry naming a path outside public/", func() {
			var m map[string]any
			json.Unmarshal(read("1.snapshot.json"), &m)
			m["signed"].(map[string]any)["meta"].(map[string]any)["../../x.json"] = map[string]any{"version": 1}
			b, _ := json.Marshal(m)
			os.WriteFile(filepath.Join(pub, "1.snapshot.json"), b, 0o644)
		}, `snapshot entry "../../x.json"`},
		{"a 9 MiB timestamp", func() {
			os.WriteFile(filepath.Join(pub, "timestamp.json"), make([]byte, 9<<20), 0o644)
		}, "larger than"},
		{"a truncated targets role", func() {
			os.WriteFile(filepath.Join(pub, "1.targets.json"), read("1.targets.json")[:100], 0o644)
		}, "targets"},
		{"a root.json outside the chain", func() {
			os.WriteFile(filepath.Join(pub, "root.json"), attackerRoot(t, root1, 1), 0o644)
		}, "root.json is none of the published root versions"},
	}
	commands := map[string]func() error{
		"release add": func() error {
			_, err := s.r.AddRelease(offlinerepo.ReleaseOptions{Image: img2, Product: "acme-gw", Version: "2.0.0", SecurityVersion: 2, Hardware: []string{"hw"}})
			return err
		},
		"repo stage":  func() error { return s.r.Stage("acme-gw") },
		"repo sign":   func() error { _, err := s.r.Sign("acme-gw", s.rel); return err },
		"repo diff":   func() error { _, err := s.r.Diffs(); return err },
		"repo status": func() error { _, err := s.r.Status(); return err },
		"repo publish": func() error {
			_, err := s.r.Publish([]keys.Signer{s.online})
			return err
		},
		"repo push": func() error { _, err := s.r.PushSet(map[string]int64{}); return err },
		"bundle":    func() error { _, err := s.r.FindPublished("acme-gw/1.0.0"); return err },
	}
	saved := map[string][]byte{}
	entries, _ := os.ReadDir(pub)
	for _, en := range entries {
		if !en.IsDir() {
			saved[en.Name()] = read(en.Name())
		}
	}
	restore := func() {
		entries, _ := os.ReadDir(pub)
		for _, en := range entries {
			if _, ok := saved[en.Name()]; !ok && !en.IsDir() {
				os.Remove(filepath.Join(pub, en.Name()))
			}
		}
		for n, b := range saved {
			os.WriteFile(filepath.Join(pub, n), b, 0o644)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer restore()
			c.tamper()
			before := treeHash(t, s.dir)
			for name, cmd := range commands {
				err := cmd()
				if !errors.Is(err, offlinerepo.ErrUnverified) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s: got %v, want ErrUnverified naming %q", name, err, c.want)
				}
			}
			if treeHash(t, s.dir) != before {
				t.Error("a refused command changed the repository")
			}
		})
	}
	// Restored, everything works again.
	if _, err := s.r.AddRelease(offlinerepo.ReleaseOptions{Image: img2, Product: "acme-gw", Version: "2.0.0", SecurityVersion: 2, Hardware: []string{"hw"}}); err != nil {
		t.Fatal(err)
	}
	d, err := s.r.Diff("acme-gw")
	if err != nil {
		t.Fatal(err)
	}
	if d.Base != 1 || len(d.Changes) < 1 || d.Changes[0].Op != offlinerepo.Added || d.Changes[0].Name != "acme-gw/2.0.0/fw2.img" {
		t.Fatalf("diff %+v", d)
	}
	if !bytes.Contains([]byte(d.Changes[0].Detail), []byte("security version 2")) {
		t.Fatalf("diff detail %q", d.Changes[0].Detail)
	}
}
