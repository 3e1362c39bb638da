package offlinerepo_test

import (
	"crypto"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
)

type simpleRepo struct {
	r                          *offlinerepo.Repo
	dir                        string
	root, targets, online, rel keys.Signer
}

func newSimpleRepo(t *testing.T) *simpleRepo {
	t.Helper()
	k := func() keys.Signer {
		s, err := keys.Generate(keys.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		return keys.InMemory(s)
	}
	s := &simpleRepo{dir: filepath.Join(t.TempDir(), "repo"), root: k(), targets: k(), online: k(), rel: k()}
	pub := func(k keys.Signer) []crypto.PublicKey { return []crypto.PublicKey{k.Public()} }
	r, err := offlinerepo.Init(s.dir, offlinerepo.InitOptions{RootKeys: pub(s.root), RootThreshold: 1, TargetsKeys: pub(s.targets), TargetsThreshold: 1, SnapshotKeys: pub(s.online), TimestampKeys: pub(s.online)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	s.r = r
	if _, err := r.Sign("root", s.root); err != nil {
		t.Fatal(err)
	}
	if err := r.Delegate("acme-gw", pub(s.rel), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sign("targets", s.targets); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *simpleRepo) add(t *testing.T, version string, img []byte) *offlinerepo.AddedRelease {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fw.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := s.r.AddRelease(offlinerepo.ReleaseOptions{Image: p, Product: "acme-gw", Version: version, SecurityVersion: 1, Hardware: []string{"hw"}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A staged payload that changed on disk after release add (a crash before
// it reached the disk, or tampering while signers signed) is refused at
// publish, and nothing is published.
func TestPublishRefusesCorruptStagedBlob(t *testing.T) {
	s := newSimpleRepo(t)
	img := make([]byte, 3<<20)
	rand.Read(img)
	a := s.add(t, "1.0.0", img)
	if _, err := s.r.Sign("acme-gw", s.rel); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(s.dir, "staged", "blobs", a.SHA256)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[2<<20+7] ^= 1
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.r.Publish([]keys.Signer{s.online})
	if !errors.Is(err, offlinerepo.ErrCorruptStaging) {
		t.Fatalf("got %v, want ErrCorruptStaging", err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "public", "timestamp.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("timestamp.json was written")
	}
	// Truncated (as after power loss before write-back) is refused too.
	if err := os.Truncate(blob, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.r.Publish([]keys.Signer{s.online}); !errors.Is(err, offlinerepo.ErrCorruptStaging) {
		t.Fatalf("got %v, want ErrCorruptStaging", err)
	}
}

// Two staged releases with the same content share one blob; both publish,
// and the staging area is empty afterwards.
func TestPublishSharedBlob(t *testing.T) {
	s := newSimpleRepo(t)
	img := make([]byte, 1<<20+5)
	rand.Read(img)
	a := s.add(t, "1.0.0", img)
	s.add(t, "1.0.1", img)
	if _, err := s.r.Sign("acme-gw", s.rel); err != nil {
		t.Fatal(err)
	}
	if _, err := s.r.Publish([]keys.Signer{s.online}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		p, err := s.r.FindPublished("acme-gw/" + v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p.ImagePath)
		if err != nil || len(got) != len(img) {
			t.Fatalf("%s: %v", v, err)
		}
	}
	left, _ := os.ReadDir(filepath.Join(s.dir, "staged", "blobs"))
	if len(left) != 0 {
		t.Fatalf("%d blobs left in staging", len(left))
	}
	_ = a
}

// Another process cannot open a repository that is in use.
func TestLock(t *testing.T) {
	s := newSimpleRepo(t)
	if _, err := offlinerepo.Open(s.dir); !errors.Is(err, offlinerepo.ErrLocked) {
		t.Fatalf("got %v", err)
	}
}
