package director_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/directormeta"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/release"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func key(t *testing.T, typ keys.Type) keys.Signer {
	t.Helper()
	s, err := keys.Generate(typ)
	if err != nil {
		t.Fatal(err)
	}
	return keys.InMemory(s)
}

type fx struct {
	t          *testing.T
	rootA      keys.Signer
	rootB      keys.Signer
	k          director.Keys
	root       []byte
	rootMD     *metadata.Metadata[metadata.RootType]
	img1, img2 *metadata.TargetFiles
}

const (
	dev  = "dev-0001"
	hw   = "acme-gw-rev-b"
	tgt1 = "acme-gw/1.0.0/fw.img"
	tgt2 = "acme-gw/1.1.0/fw.img"
)

// newFx builds a director root directly with go-tuf: a 2-of-2 offline root
// (ed25519 + ECDSA) naming the server's online targets key (ECDSA) and one
// online key for snapshot and timestamp, with consistent snapshots.
func newFx(t *testing.T) *fx {
	f := &fx{t: t, rootA: key(t, keys.Ed25519), rootB: key(t, keys.ECDSAP256)}
	online := key(t, keys.Ed25519)
	f.k = director.Keys{Targets: []keys.Signer{key(t, keys.ECDSAP256)}, Snapshot: []keys.Signer{online}, Timestamp: []keys.Signer{online}}
	root := metadata.Root(t0.Add(365 * 24 * time.Hour))
	root.Signed.ConsistentSnapshot = true
	add := func(role string, ss ...keys.Signer) {
		for _, s := range ss {
			k, err := keys.TUFKey(s.Public())
			if err != nil {
				t.Fatal(err)
			}
			if err := root.Signed.AddKey(k, role); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(metadata.ROOT, f.rootA, f.rootB)
	root.Signed.Roles[metadata.ROOT].Threshold = 2
	add(metadata.TARGETS, f.k.Targets...)
	add(metadata.SNAPSHOT, f.k.Snapshot...)
	add(metadata.TIMESTAMP, f.k.Timestamp...)
	for _, s := range []keys.Signer{f.rootA, f.rootB} {
		if _, err := root.Sign(keys.ForTUF(s)); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if f.root, err = root.ToBytes(true); err != nil {
		t.Fatal(err)
	}
	f.rootMD = root
	f.img1 = imageTarget(t, tgt1, []string{hw, "acme-gw-rev-c"})
	f.img2 = imageTarget(t, tgt2, []string{hw})
	return f
}

// imageTarget is an image repository entry as internal/offlinerepo writes it,
// with an extra sha512 hash.
func imageTarget(t *testing.T, path string, hwids []string) *metadata.TargetFiles {
	t.Helper()
	img := make([]byte, 4096)
	rand.Read(img)
	tf, err := metadata.TargetFile().FromBytes(path, img, "sha256", "sha512")
	if err != nil {
		t.Fatal(err)
	}
	product, version, _, err := release.ParseTargetPath(path)
	if err != nil {
		t.Fatal(err)
	}
	m := &release.Meta{Product: product, Version: version, SecurityVersion: 3, HardwareIDs: hwids, Created: t0.Add(-time.Hour),
		Index: release.IndexRef{Length: 100, SHA256: strings.Repeat("ab", 32), ChunkSize: 65536}}
	if tf.Custom, err = m.Custom(); err != nil {
		t.Fatal(err)
	}
	// Round-trip through JSON, as a device or the server sees it.
	b, err := json.Marshal(tf)
	if err != nil {
		t.Fatal(err)
	}
	var out metadata.TargetFiles
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	out.Path = path
	return &out
}

func (f *fx) assign(target string, img *metadata.TargetFiles) director.Assignment {
	a := director.Assignment{DeviceID: dev, HardwareID: hw, Target: target, File: img}
	if img != nil {
		m, err := release.FromTarget(target, img)
		if err != nil {
			f.t.Fatal(err)
		}
		a.Release = m
	}
	return a
}

func (f *fx) build(a director.Assignment, prev *director.Repo, now time.Time) *director.Repo {
	f.t.Helper()
	r, err := director.Build(f.root, a, prev, f.k, now, director.Expiry{})
	if err != nil {
		f.t.Fatalf("Build: %v", err)
	}
	return r
}

// clientRefresh loads old (the device's cached state, may be nil) and then
// new into go-tuf's trustedmetadata in the order go-tuf's updater does,
// and returns the verified top-level targets.
func clientRefresh(t *testing.T, root []byte, old, cur *director.Repo, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	t.Helper()
	tm, err := trustedmetadata.New(root)
	if err != nil {
		return nil, err
	}
	tm.RefTime = now
	if old != nil {
		// Like the updater: an expired cached timestamp still guards
		// against rollback, and is otherwise ignored.
		if _, err := tm.UpdateTimestamp(old.Timestamp); err != nil && !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
			return nil, fmt.Errorf("cached timestamp: %w", err)
		}
	}
	if old == nil || !bytes.Equal(old.Timestamp, cur.Timestamp) {
		if _, err := tm.UpdateTimestamp(cur.Timestamp); err != nil {
			return nil, fmt.Errorf("timestamp: %w", err)
		}
	}
	if old != nil {
		_, err := tm.UpdateSnapshot(old.Snapshot, true)
		if err != nil && bytes.Equal(old.Snapshot, cur.Snapshot) {
			return nil, fmt.Errorf("cached snapshot: %w", err)
		}
	}
	if old == nil || !bytes.Equal(old.Snapshot, cur.Snapshot) {
		if _, err := tm.UpdateSnapshot(cur.Snapshot, false); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return tm.UpdateTargets(cur.Targets)
}

func TestBuildVerifiesAsClient(t *testing.T) {
	f := newFx(t)
	r := f.build(f.assign(tgt1, f.img1), nil, t0)
	if r.Versions != (director.Versions{Root: 1, Targets: 1, Snapshot: 1, Timestamp: 1}) {
		t.Fatalf("versions = %+v", r.Versions)
	}
	if r.Target != tgt1 || r.DeviceID != dev {
		t.Fatalf("Target, DeviceID = %q, %q", r.Target, r.DeviceID)
	}
	if !r.Expires.Timestamp.Equal(t0.Add(24*time.Hour)) || r.Expires.Timestamp.Nanosecond() != 0 {
		t.Fatalf("timestamp expires %v", r.Expires.Timestamp)
	}
	tg, err := clientRefresh(t, f.root, nil, r, t0)
	if err != nil {
		t.Fatalf("client refresh: %v", err)
	}
	if len(tg.Signed.Targets) != 1 {
		t.Fatalf("targets = %v", tg.Signed.Targets)
	}
	dt := tg.Signed.Targets[tgt1]
	if err := directormeta.Check(dt, f.img1, tgt1, dev, hw); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := directormeta.CheckDevice(tg, dev); err != nil {
		t.Fatalf("CheckDevice: %v", err)
	}
	if err := directormeta.CheckDevice(tg, "dev-0002"); !errors.Is(err, directormeta.ErrWrongDevice) {
		t.Fatalf("CheckDevice(other) = %v, want ErrWrongDevice", err)
	}
	c, err := directormeta.CustomOf(dt)
	if err != nil || c.DeviceID != dev || c.HardwareID != hw {
		t.Fatalf("CustomOf = %+v, %v", c, err)
	}
	if !bytes.Contains(r.Targets, []byte(`"expires": "2026-03-08T12:00:00Z"`)) {
		t.Fatalf("targets expires not truncated to seconds:\n%s", r.Targets)
	}
	files := r.Files(true)
	for _, name := range []string{"timestamp.json", "1.snapshot.json", "1.targets.json"} {
		if files[name] == nil {
			t.Fatalf("Files lacks %s: %v", name, files)
		}
	}
	l, err := director.Load(r.Targets, r.Snapshot, r.Timestamp)
	if err != nil || l.Versions.Targets != 1 || l.Target != tgt1 || l.DeviceID != dev || !l.Expires.Snapshot.Equal(r.Expires.Snapshot) {
		t.Fatalf("Load = %+v, %v", l, err)
	}
}

func TestNothingToDo(t *testing.T) {
	f := newFx(t)
	r := f.build(director.Assignment{DeviceID: dev, HardwareID: hw}, nil, t0)
	tg, err := clientRefresh(t, f.root, nil, r, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tg.Signed.Targets) != 0 || r.Target != "" {
		t.Fatalf("targets = %v", tg.Signed.Targets)
	}
	if !bytes.Contains(r.Targets, []byte(`"targets": {}`)) {
		t.Fatalf("empty targets must encode as {}:\n%s", r.Targets)
	}
	if err := directormeta.CheckDevice(tg, dev); err != nil {
		t.Fatal(err)
	}
	// Then an assignment arrives, then it is withdrawn again.
	r2 := f.build(f.assign(tgt1, f.img1), r, t0.Add(time.Minute))
	r3 := f.build(director.Assignment{DeviceID: dev, HardwareID: hw}, r2, t0.Add(2*time.Minute))
	if r3.Versions.Targets != 3 || r3.Target != "" {
		t.Fatalf("versions %+v target %q", r3.Versions, r3.Target)
	}
	if _, err := clientRefresh(t, f.root, r2, r3, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
}

func TestUnchangedChangedAndRefresh(t *testing.T) {
	f := newFx(t)
	r1 := f.build(f.assign(tgt1, f.img1), nil, t0)

	// Unchanged, timestamp fresh: the very same repository.
	r2 := f.build(f.assign(tgt1, f.img1), r1, t0.Add(time.Hour))
	if !bytes.Equal(r2.Targets, r1.Targets) || !bytes.Equal(r2.Snapshot, r1.Snapshot) || !bytes.Equal(r2.Timestamp, r1.Timestamp) || r2.Versions != r1.Versions {
		t.Fatalf("unchanged assignment changed the repository: %+v -> %+v", r1.Versions, r2.Versions)
	}
	// The release argument may be omitted: File's custom metadata rules.
	a := f.assign(tgt1, f.img1)
	a.Release = nil
	if r := f.build(a, r1, t0.Add(time.Hour)); !bytes.Equal(r.Timestamp, r1.Timestamp) {
		t.Fatal("nil Release changed the repository")
	}
	rr, changed, err := director.RefreshTimestamp(f.root, r1, f.k, t0.Add(time.Hour), director.Expiry{})
	if err != nil || changed || !bytes.Equal(rr.Timestamp, r1.Timestamp) {
		t.Fatalf("RefreshTimestamp of a fresh repo: changed=%v err=%v", changed, err)
	}

	// Changed assignment: every version up by one.
	r3 := f.build(f.assign(tgt2, f.img2), r1, t0.Add(2*time.Hour))
	want := director.Versions{Root: 1, Targets: 2, Snapshot: 2, Timestamp: 2}
	if r3.Versions != want || r3.Target != tgt2 {
		t.Fatalf("versions after change = %+v, want %+v", r3.Versions, want)
	}
	tg, err := clientRefresh(t, f.root, r1, r3, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatalf("client update r1 -> r3: %v", err)
	}
	if err := directormeta.Check(tg.Signed.Targets[tgt2], f.img2, tgt2, dev, hw); err != nil {
		t.Fatal(err)
	}

	// RenewAt says when Build first re-signs an unchanged repository.
	renew, err := r3.RenewAt(director.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.build(f.assign(tgt2, f.img2), r3, renew.Add(-time.Second)); r.Versions != r3.Versions {
		t.Fatalf("rebuilt a second before RenewAt (%s): %+v -> %+v", renew, r3.Versions, r.Versions)
	}
	if r := f.build(f.assign(tgt2, f.img2), r3, renew.Add(time.Second)); r.Versions == r3.Versions {
		t.Fatalf("not rebuilt a second after RenewAt (%s)", renew)
	}

	// Timestamp close to expiry (less than half of its day left): only the
	// timestamp is re-signed, by Build and by RefreshTimestamp alike.
	late := t0.Add(2*time.Hour + 13*time.Hour)
	r4 := f.build(f.assign(tgt2, f.img2), r3, late)
	r5, changed, err := director.RefreshTimestamp(f.root, r3, f.k, late, director.Expiry{})
	if err != nil || !changed {
		t.Fatalf("RefreshTimestamp: changed=%v err=%v", changed, err)
	}
	for _, r := range []*director.Repo{r4, r5} {
		want := director.Versions{Root: 1, Targets: 2, Snapshot: 2, Timestamp: 3}
		if r.Versions != want {
			t.Fatalf("versions after refresh = %+v, want %+v", r.Versions, want)
		}
		if !bytes.Equal(r.Targets, r3.Targets) || !bytes.Equal(r.Snapshot, r3.Snapshot) || bytes.Equal(r.Timestamp, r3.Timestamp) {
			t.Fatal("refresh must keep targets and snapshot bytes and replace the timestamp")
		}
		if !r.Expires.Timestamp.Equal(late.Add(24 * time.Hour)) {
			t.Fatalf("refreshed timestamp expires %v", r.Expires.Timestamp)
		}
		if _, err := clientRefresh(t, f.root, r3, r, late); err != nil {
			t.Fatalf("client update r3 -> refreshed: %v", err)
		}
	}
	// Once the old timestamp has expired the device still moves on.
	if _, err := clientRefresh(t, f.root, nil, r3, t0.Add(30*time.Hour)); !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
		t.Fatalf("r3 at +30h = %v, want expired", err)
	}
	r6, changed, err := director.RefreshTimestamp(f.root, r5, f.k, t0.Add(30*time.Hour), director.Expiry{})
	if err != nil || !changed || r6.Versions.Timestamp != 4 {
		t.Fatalf("refresh after expiry: %+v %v %v", r6, changed, err)
	}
	if _, err := clientRefresh(t, f.root, r3, r6, t0.Add(30*time.Hour)); err != nil {
		t.Fatalf("client update r3 -> r6: %v", err)
	}

	// Snapshot close to expiry: snapshot and timestamp, not targets (with a
	// 4-day targets period, its 2 days 2 hours left are still more than half).
	later := t0.Add(5 * 24 * time.Hour)
	r7, changed, err := director.RefreshTimestamp(f.root, r6, f.k, later, director.Expiry{Targets: 4 * 24 * time.Hour})
	if err != nil || !changed {
		t.Fatal(err)
	}
	if want := (director.Versions{Root: 1, Targets: 2, Snapshot: 3, Timestamp: 5}); r7.Versions != want {
		t.Fatalf("versions = %+v, want %+v", r7.Versions, want)
	}
	if _, err := clientRefresh(t, f.root, r6, r7, later); err != nil {
		t.Fatal(err)
	}
	// Targets close to expiry too: all three, with the same content.
	r8 := f.build(f.assign(tgt2, f.img2), r7, later)
	if want := (director.Versions{Root: 1, Targets: 3, Snapshot: 4, Timestamp: 6}); r8.Versions != want {
		t.Fatalf("versions = %+v, want %+v", r8.Versions, want)
	}
	if _, err := clientRefresh(t, f.root, r7, r8, later); err != nil {
		t.Fatal(err)
	}

	// Back to the first target: versions still go up.
	r9 := f.build(f.assign(tgt1, f.img1), r8, later)
	if r9.Versions.Targets != 4 {
		t.Fatalf("versions = %+v", r9.Versions)
	}
	if _, err := clientRefresh(t, f.root, r8, r9, later); err != nil {
		t.Fatal(err)
	}
}

// memFetcher serves a director repository to go-tuf's updater.
type memFetcher struct{ files map[string][]byte }

func (m *memFetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	name := u[strings.LastIndex(u, "/")+1:]
	b, ok := m.files[name]
	if !ok {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: 404, URL: u}
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: "too long"}
	}
	return b, nil
}

// TestUpdater drives go-tuf's own updater against successive repositories
// with one persistent metadata cache, as the agent will.
func TestUpdater(t *testing.T) {
	f := newFx(t)
	cache := filepath.Join(t.TempDir(), "director")
	refresh := func(r *director.Repo) map[string]*metadata.TargetFiles {
		t.Helper()
		files := r.Files(true)
		files["1.root.json"] = f.root
		cfg, err := config.New("https://director.invalid/"+dev, f.root)
		if err != nil {
			t.Fatal(err)
		}
		cfg.LocalMetadataDir, cfg.LocalTargetsDir = cache, t.TempDir()
		cfg.Fetcher = &memFetcher{files}
		up, err := updater.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		up.UnsafeSetRefTime(r.Expires.Timestamp.Add(-time.Hour))
		if err := up.Refresh(); err != nil {
			t.Fatalf("updater refresh (versions %+v): %v", r.Versions, err)
		}
		return up.GetTopLevelTargets()
	}
	r1 := f.build(f.assign(tgt1, f.img1), nil, t0)
	if got := refresh(r1); got[tgt1] == nil {
		t.Fatalf("targets = %v", got)
	}
	r2 := f.build(f.assign(tgt2, f.img2), r1, t0.Add(time.Hour))
	if got := refresh(r2); got[tgt2] == nil || len(got) != 1 {
		t.Fatalf("targets = %v", got)
	}
	r3, _, err := director.RefreshTimestamp(f.root, r2, f.k, t0.Add(20*time.Hour), director.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	if got := refresh(r3); got[tgt2] == nil {
		t.Fatalf("targets = %v", got)
	}
	// Replaying the older repository after the newer one is refused.
	files := r2.Files(true)
	files["1.root.json"] = f.root
	cfg, _ := config.New("https://director.invalid/"+dev, f.root)
	cfg.LocalMetadataDir, cfg.LocalTargetsDir = cache, t.TempDir()
	cfg.Fetcher = &memFetcher{files}
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	up.UnsafeSetRefTime(t0.Add(20 * time.Hour))
	if err := up.Refresh(); err == nil {
		t.Fatal("updater accepted a replayed older timestamp")
	}
}

// TestRootFromRepoWorkflow makes the director root with the offline
// repository workflow (rampart repo init, sign, publish) and builds on it.
func TestRootFromRepoWorkflow(t *testing.T) {
	rootA, rootB := key(t, keys.Ed25519), key(t, keys.Ed25519)
	tk, online := key(t, keys.Ed25519), key(t, keys.ECDSAP256)
	dir := filepath.Join(t.TempDir(), "director-root")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{
		RootKeys: []crypto.PublicKey{rootA.Public(), rootB.Public()}, RootThreshold: 2,
		TargetsKeys: []crypto.PublicKey{tk.Public()}, TargetsThreshold: 1,
		SnapshotKeys: []crypto.PublicKey{online.Public()}, TimestampKeys: []crypto.PublicKey{online.Public()},
		Now: func() time.Time { return t0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, s := range []struct {
		role string
		k    keys.Signer
	}{{"root", rootA}, {"root", rootB}, {"targets", tk}} {
		if _, err := r.Sign(s.role, s.k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Publish([]keys.Signer{online}); err != nil {
		t.Fatal(err)
	}
	root := readFile(t, filepath.Join(dir, "public", "1.root.json"))
	k := director.Keys{Targets: []keys.Signer{tk}, Snapshot: []keys.Signer{online}, Timestamp: []keys.Signer{online}}
	img := imageTarget(t, tgt1, []string{hw})
	d, err := director.Build(root, director.Assignment{DeviceID: dev, HardwareID: hw, Target: tgt1, File: img}, nil, k, t0, director.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clientRefresh(t, root, nil, d, t0); err != nil {
		t.Fatal(err)
	}
}

func TestBuildRefusals(t *testing.T) {
	f := newFx(t)
	stranger := key(t, keys.Ed25519)
	good := f.assign(tgt1, f.img1)
	prev := f.build(good, nil, t0)

	for name, k := range map[string]director.Keys{
		"targets":   {Targets: []keys.Signer{stranger}, Snapshot: f.k.Snapshot, Timestamp: f.k.Timestamp},
		"snapshot":  {Targets: f.k.Targets, Snapshot: []keys.Signer{stranger}, Timestamp: f.k.Timestamp},
		"timestamp": {Targets: f.k.Targets, Snapshot: f.k.Snapshot, Timestamp: []keys.Signer{f.k.Targets[0]}},
		"extra":     {Targets: append([]keys.Signer{stranger}, f.k.Targets...), Snapshot: f.k.Snapshot, Timestamp: f.k.Timestamp},
	} {
		_, err := director.Build(f.root, good, nil, k, t0, director.Expiry{})
		if !errors.Is(err, director.ErrKeyNotInRoot) || !strings.Contains(err.Error(), "not among the") {
			t.Errorf("%s: Build with a key not in the root = %v, want ErrKeyNotInRoot", name, err)
		}
		if _, _, err := director.RefreshTimestamp(f.root, prev, k, t0.Add(20*time.Hour), director.Expiry{}); !errors.Is(err, director.ErrKeyNotInRoot) {
			t.Errorf("%s: RefreshTimestamp = %v, want ErrKeyNotInRoot", name, err)
		}
	}
	if _, err := director.Build(f.root, good, nil, director.Keys{Snapshot: f.k.Snapshot, Timestamp: f.k.Timestamp}, t0, director.Expiry{}); !errors.Is(err, director.ErrNoKey) {
		t.Errorf("Build without a targets key = %v, want ErrNoKey", err)
	}

	// A root not signed by its own threshold.
	half := metadata.Root()
	if err := json.Unmarshal(f.root, half); err != nil {
		t.Fatal(err)
	}
	half.Signatures = half.Signatures[:1]
	hb, _ := half.ToBytes(true)
	if _, err := director.Build(hb, good, nil, f.k, t0, director.Expiry{}); !errors.Is(err, director.ErrRoot) {
		t.Errorf("Build under a half-signed root = %v, want ErrRoot", err)
	}

	bad := func(name string, a director.Assignment, want ...error) {
		t.Helper()
		_, err := director.Build(f.root, a, nil, f.k, t0, director.Expiry{})
		for _, w := range append(want, director.ErrAssignment) {
			if !errors.Is(err, w) {
				t.Errorf("%s: Build = %v, want %v", name, err, w)
			}
		}
	}
	a := good
	a.DeviceID = ""
	bad("no device", a)
	a = good
	a.HardwareID = "other-hw"
	bad("hardware not in release", a, directormeta.ErrWrongHardware)
	a = good
	a.File = nil
	bad("no file", a)
	a = good
	a.Target = tgt2
	bad("file for another path", a)
	a = good
	a.Release = &release.Meta{}
	*a.Release = *good.Release
	a.Release.SecurityVersion++
	bad("release disagrees with file", a)
	a = good
	a.Target = ""
	bad("file without target", a)

	// A previous repository of another device.
	other := good
	other.DeviceID = "dev-0002"
	if _, err := director.Build(f.root, other, prev, f.k, t0, director.Expiry{}); !errors.Is(err, director.ErrPrevious) {
		t.Errorf("Build with another device's prev = %v, want ErrPrevious", err)
	}
}

// TestKeyRotation: a new director root naming a new online targets key;
// the repository is re-signed with bumped versions and a device that
// trusts the new root moves on without rollback errors.
func TestKeyRotation(t *testing.T) {
	f := newFx(t)
	r1 := f.build(f.assign(tgt1, f.img1), nil, t0)
	newTK := key(t, keys.Ed25519)
	root2 := f.rootMD
	root2.Signed.Version = 2
	for _, id := range root2.Signed.Roles[metadata.TARGETS].KeyIDs {
		if err := root2.Signed.RevokeKey(id, metadata.TARGETS); err != nil {
			t.Fatal(err)
		}
	}
	nk, _ := keys.TUFKey(newTK.Public())
	root2.Signed.AddKey(nk, metadata.TARGETS)
	root2.ClearSignatures()
	for _, s := range []keys.Signer{f.rootA, f.rootB} {
		root2.Sign(keys.ForTUF(s))
	}
	rb, err := root2.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	k := f.k
	k.Targets = []keys.Signer{newTK}
	// The old repository no longer verifies under the new root: Build
	// re-signs everything even though the assignment is unchanged.
	r2, err := director.Build(rb, f.assign(tgt1, f.img1), r1, k, t0.Add(time.Hour), director.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (director.Versions{Root: 2, Targets: 2, Snapshot: 2, Timestamp: 2}); r2.Versions != want {
		t.Fatalf("versions = %+v, want %+v", r2.Versions, want)
	}
	if _, err := clientRefresh(t, rb, nil, r2, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if director.CacheKey(dev, tgt1, 1) == director.CacheKey(dev, tgt1, 2) {
		t.Fatal("cache key ignores the root version")
	}
}

func TestCacheKey(t *testing.T) {
	seen := map[string]bool{}
	var first string
	for _, c := range []struct {
		dev, target string
		v           int64
	}{
		{"a", "p/1.0.0/f", 1}, {"a/p", "1.0.0/f", 1}, {"a", "", 1}, {"a", "p/1.0.0/f", 2}, {"b", "p/1.0.0/f", 1}, {"a%2Fp", "1.0.0/f", 1},
	} {
		k := director.CacheKey(c.dev, c.target, c.v)
		if seen[k] {
			t.Fatalf("cache key %q collides", k)
		}
		seen[k] = true
		if first == "" {
			first = k
		}
	}
	if director.CacheKey(strings.Clone("a"), strings.Clone("p/1.0.0/f"), 1) != first {
		t.Fatal("cache key not deterministic")
	}
}
