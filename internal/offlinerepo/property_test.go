package offlinerepo_test

import (
	"crypto"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/race"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

// For random sequences of repository commands against a real server,
// interleaved with random tampering of public/ and of the server's
// answers (as a compromised server holding the online keys could), no
// offline signature ever covers a target or a key that no operator
// command added.
//
// Under -race one seed runs: the sequences are the command line's, one
// goroutine, and the detector made the six seeds 40 s of the race run;
// make test runs all six without it.
func TestNoOfflineSignatureOnUnaddedContent(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6}
	if testing.Short() || race.Enabled {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { propertyRun(t, seed, 80) })
	}
}

func propertyRun(t *testing.T, seed uint64, steps int) {
	rng := mrand.New(mrand.NewPCG(seed, seed))
	e := servertest.New(t)
	dir := e.Repo.Dir
	pub := filepath.Join(dir, "public")
	relID, _ := keys.ID(e.Rel.Public())
	targetsID, _ := keys.ID(e.TargetsKey.Public())
	rootID, _ := keys.ID(e.RootKey.Public())

	// What operator commands added.
	addedTargets := map[string]bool{}
	addedKeys := map[string]bool{relID: true}
	rootRoot, err := metadata.Root().FromBytes(e.ImageRoot)
	if err != nil {
		t.Fatal(err)
	}
	rootKeys := map[string]bool{}
	for id := range rootRoot.Signed.Keys {
		rootKeys[id] = true
	}
	version := 0
	var saved map[string][]byte // public/ before a pending tamper
	far := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)

	snapshotPublic := func() map[string][]byte {
		out := map[string][]byte{}
		entries, _ := os.ReadDir(pub)
		for _, en := range entries {
			if !en.IsDir() {
				b, _ := os.ReadFile(filepath.Join(pub, en.Name()))
				out[en.Name()] = b
			}
		}
		return out
	}
	latest := func(suffix string) string {
		entries, _ := os.ReadDir(pub)
		best, bestV := "", -1
		for _, en := range entries {
			var v int
			if n, _ := fmt.Sscanf(en.Name(), "%d."+suffix, &v); n == 1 && strings.HasSuffix(en.Name(), "."+suffix) && v > bestV {
				best, bestV = en.Name(), v
			}
		}
		return best
	}
	hostileAnswers := []func(name string, b []byte) []byte{
		func(name string, b []byte) []byte { // inject into any served product role
			if strings.HasSuffix(name, ".acme-gw.json") {
				return injectTarget(t, b, "acme-gw/6.6.6/fw.img", 999)
			}
			return b
		},
		func(name string, b []byte) []byte { // garbage timestamp
			if name == "timestamp.json" {
				return []byte(`{"signed":{"_type":"timestamp","meta":{"snapshot.json":{"version":-1}}}}`)
			}
			return b
		},
	}

	for step := 0; step < steps; step++ {
		op := rng.IntN(9)
		switch op {
		case 0, 1: // release add
			version++
			img := make([]byte, 2048+rng.IntN(4096))
			rand.Read(img)
			p := filepath.Join(t.TempDir(), "fw.img")
			os.WriteFile(p, img, 0o644)
			a, err := e.Repo.AddRelease(offlinerepo.ReleaseOptions{Image: p, Product: servertest.Product, Version: fmt.Sprintf("1.0.%d", version), SecurityVersion: uint64(version), Hardware: []string{"hw"}})
			if err == nil {
				addedTargets[a.Target] = true
			}
		case 2: // a release signer signs
			e.Repo.Sign(servertest.Product, e.Rel)
		case 3: // push, genuine answer
			e.PushStaged(nil)
		case 4: // push, hostile answer
			h := hostileAnswers[rng.IntN(len(hostileAnswers))]
			if rng.IntN(2) == 0 {
				h = poisonedSnapshot(t, e, far)
			}
			e.PushStaged(h)
		case 5: // tamper with public/ on disk
			if saved == nil {
				saved = snapshotPublic()
			}
			switch rng.IntN(3) {
			case 0:
				if n := latest("acme-gw.json"); n != "" {
					b, _ := os.ReadFile(filepath.Join(pub, n))
					os.WriteFile(filepath.Join(pub, n), injectTarget(t, b, "acme-gw/6.6.7/fw.img", 999), 0o644)
				}
			case 1:
				if n := latest("root.json"); n != "" {
					b, _ := os.ReadFile(filepath.Join(pub, n))
					var v int
					fmt.Sscanf(n, "%d.", &v)
					os.WriteFile(filepath.Join(pub, fmt.Sprintf("%d.root.json", v+1)), attackerRoot(t, b, int64(v+1)), 0o644)
				}
			case 2:
				if n := latest("targets.json"); n != "" {
					b, _ := os.ReadFile(filepath.Join(pub, n))
					os.WriteFile(filepath.Join(pub, n), injectDelegationKey(t, b), 0o644)
				}
			}
		case 6: // the operator restores public/ from a backup
			if saved != nil {
				entries, _ := os.ReadDir(pub)
				for _, en := range entries {
					if _, ok := saved[en.Name()]; !ok && !en.IsDir() {
						os.Remove(filepath.Join(pub, en.Name()))
					}
				}
				for n, b := range saved {
					os.WriteFile(filepath.Join(pub, n), b, 0o644)
				}
				saved = nil
			}
		case 7: // a new release key, signed into targets
			k, _ := keys.Generate(keys.Ed25519)
			s := keys.InMemory(k)
			if err := e.Repo.Rotate(servertest.Product, offlinerepo.RotateOptions{Add: []crypto.PublicKey{s.Public()}}); err == nil {
				id, _ := keys.ID(s.Public())
				addedKeys[id] = true
			}
			e.Repo.Sign(metadata.TARGETS, e.TargetsKey)
		case 8: // stage the product role again
			e.Repo.Stage(servertest.Product)
		}
		checkOfflineSignatures(t, dir, step, op, e.Rel.Public(), relID, targetsID, rootID, addedTargets, addedKeys, rootKeys)
	}
}

// poisonedSnapshot serves a product role with an injected target, pinned
// by a snapshot and timestamp re-signed with the server's online keys.
func poisonedSnapshot(t *testing.T, e *servertest.Env, far time.Time) func(string, []byte) []byte {
	var poisoned map[string][]byte
	var snap, ts []byte
	return func(name string, b []byte) []byte {
		if poisoned == nil && name == "timestamp.json" {
			tm, err := metadata.Timestamp().FromBytes(b)
			if err != nil {
				return b
			}
			sv := tm.Signed.Meta["snapshot.json"].Version
			raw := e.Call(e.Pool, "GET", fmt.Sprintf("/repo/%d.snapshot.json", sv), "", nil, 200)
			sm, err := metadata.Snapshot().FromBytes(raw)
			if err != nil {
				return b
			}
			poisoned = map[string][]byte{}
			for file, mf := range sm.Signed.Meta {
				if file == "acme-gw.json" {
					n := fmt.Sprintf("%d.acme-gw.json", mf.Version)
					p := injectTarget(t, e.Call(e.Pool, "GET", "/repo/"+n, "", nil, 200), "acme-gw/6.6.6/fw.img", 999)
					poisoned[n] = p
					sm.Signed.Meta[file] = onlineroles.MetaFile(mf.Version, p)
				}
			}
			snap, ts = resign(t, e, sm.Signed.Meta, sv+1, tm.Signed.Version+1, far)
		}
		switch {
		case name == "timestamp.json" && ts != nil:
			return ts
		case strings.HasSuffix(name, ".snapshot.json") && snap != nil:
			return snap
		case poisoned[name] != nil:
			return poisoned[name]
		}
		return b
	}
}

// injectDelegationKey adds an attacker's key to every delegation of a
// targets document, keeping its signatures.
func injectDelegationKey(t testing.TB, doc []byte) []byte {
	var m map[string]any
	if json.Unmarshal(doc, &m) != nil {
		return doc
	}
	signed, _ := m["signed"].(map[string]any)
	del, _ := signed["delegations"].(map[string]any)
	if del == nil {
		return doc
	}
	ks, _ := del["keys"].(map[string]any)
	k, _ := keys.Generate(keys.Ed25519)
	mk, _ := metadata.KeyFromPublicKey(keys.InMemory(k).Public())
	id, _ := mk.ID()
	ks[id] = mk
	for _, r := range del["roles"].([]any) {
		rm := r.(map[string]any)
		rm["keyids"] = append(rm["keyids"].([]any), id)
	}
	b, _ := json.Marshal(m)
	return b
}

// checkOfflineSignatures asserts the invariant over every metadata file in
// the repository, staged or published: where an offline key's signature
// verifies, the document names only targets and keys that operator
// commands added.
func checkOfflineSignatures(t *testing.T, dir string, step, op int, relPublic crypto.PublicKey, relID, targetsID, rootID string, addedTargets, addedKeys, rootKeys map[string]bool) {
	t.Helper()
	root, err := metadata.Root().FromBytes(mustRead(t, filepath.Join(dir, "public", "1.root.json"), filepath.Join(dir, "staged", "root.json")))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".json") && !strings.Contains(p, "blobs") && filepath.Base(p) != "rampart-repo.json" {
			files = append(files, p)
		}
		return nil
	})
	for _, p := range files {
		b, _ := os.ReadFile(p)
		if r, err := metadata.Root().FromBytes(b); err == nil {
			if len(verify.ValidSigners(root.Signed.Keys, []string{rootID}, r)) == 0 {
				continue
			}
			for id := range r.Signed.Keys {
				if !rootKeys[id] {
					t.Fatalf("step %d (op %d): %s carries the root key's signature over key %s, which no command added", step, op, p, id)
				}
			}
			continue
		}
		m, err := metadata.Targets().FromBytes(b)
		if err != nil {
			continue
		}
		if len(verify.ValidSigners(root.Signed.Keys, []string{targetsID}, m)) > 0 && m.Signed.Delegations != nil {
			for id := range m.Signed.Delegations.Keys {
				if !addedKeys[id] {
					t.Fatalf("step %d (op %d): %s carries the targets key's signature over key %s, which no command added", step, op, p, id)
				}
			}
		}
		relKey, err := metadata.KeyFromPublicKey(relPublic)
		if err != nil {
			t.Fatal(err)
		}
		relKeys := map[string]*metadata.Key{relID: relKey}
		if len(verify.ValidSigners(relKeys, []string{relID}, m)) > 0 {
			for path := range m.Signed.Targets {
				if !addedTargets[path] {
					t.Fatalf("step %d (op %d): %s carries a release signature over target %s, which no command added", step, op, p, path)
				}
			}
		}
	}
}

func mustRead(t *testing.T, paths ...string) []byte {
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
	}
	t.Fatalf("none of %v", paths)
	return nil
}
