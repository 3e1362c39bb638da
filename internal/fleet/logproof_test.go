package fleet_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
	"github.com/rampartfw/rampart/internal/tlog"
)

// The release list says whether each release's inclusion proof verifies,
// decided as a device decides it, against a real log: a statement that
// is the release verifies; one that names other bytes for the target (a
// log and repository that disagree) fails, saying why; a release without
// a statement is not logged; a key that is not the log's fails; and with
// no log configured nothing is claimed.
func TestReleasesLogProof(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const origin = "rampart.test/log"
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := tlog.Open(ctx, filepath.Join(dir, "log"), signer, origin, tlog.WithCheckpointInterval(100*time.Millisecond), tlog.WithBatching(1, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()

	role := metadata.Targets(time.Now().Add(time.Hour))
	for _, c := range []struct {
		version string
		logged  string // the sha256 the log states for it; "" for none
	}{{"1.0.0", "honest"}, {"2.0.0", strings.Repeat("ee", 32)}, {"3.0.0", ""}} {
		path := "acme-gw/" + c.version + "/fw.img"
		content := []byte("image " + c.version)
		m := &release.Meta{Product: "acme-gw", Version: c.version, SecurityVersion: 1, HardwareIDs: []string{"hw"}, Created: time.Now().UTC(),
			Index: release.IndexRef{SHA256: strings.Repeat("01", 32), Length: 1, ChunkSize: 1 << 20}}
		custom, err := m.Custom()
		if err != nil {
			t.Fatal(err)
		}
		tf, err := metadata.TargetFile().FromBytes(path, content, "sha256")
		if err != nil {
			t.Fatal(err)
		}
		tf.Custom = custom
		role.Signed.Targets[path] = tf
		if c.logged == "" {
			continue
		}
		sum := sha256.Sum256(content)
		if c.logged == "honest" {
			c.logged = hex.EncodeToString(sum[:])
		}
		p, leaf, err := lg.AppendStatement(ctx, &logproof.Statement{Target: path, Length: int64(len(content)), SHA256: c.logged, SecurityVersion: 1,
			SignerKeyIDs: []string{keyA}, RoleVersion: 1, Role: "acme-gw"})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.PutLogEntry(ctx, store.LogEntry{Target: path, Index: p.Index, Leaf: leaf}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := role.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog{fleet.Published{Roles: map[string][]byte{"acme-gw": b}}}

	list := func(key string, log fleet.Log) map[string]api.Release {
		t.Helper()
		svc := fleet.New(fleet.Config{Store: db, Catalog: cat, Log: log, LogKey: key})
		rels, err := svc.Releases(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]api.Release{}
		for _, r := range rels.Releases {
			out[r.Version] = r
		}
		return out
	}
	got := list(vkey, lg)
	if r := got["1.0.0"]; r.LogProof != api.LogProofVerified || r.LogProofError != "" {
		t.Errorf("1.0.0, logged as published: %q %q, want verified", r.LogProof, r.LogProofError)
	}
	if r := got["2.0.0"]; r.LogProof != api.LogProofFailed || !strings.Contains(r.LogProofError, "is not this release") {
		t.Errorf("2.0.0, logged with other bytes: %q %q, want failed: is not this release", r.LogProof, r.LogProofError)
	}
	if r := got["3.0.0"]; r.LogProof != api.LogProofNotLogged || r.LogIndex != nil {
		t.Errorf("3.0.0, never logged: %q index %v, want not-logged", r.LogProof, r.LogIndex)
	}

	// Another log's key: the checkpoint's signature does not verify.
	_, otherKey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	if r := list(otherKey, lg)["1.0.0"]; r.LogProof != api.LogProofFailed || r.LogProofError == "" {
		t.Errorf("1.0.0 under another log's key: %q %q, want failed", r.LogProof, r.LogProofError)
	}
	if r := list("", nil)["1.0.0"]; r.LogProof != api.LogProofUnchecked {
		t.Errorf("1.0.0 with no log: %q, want unchecked", r.LogProof)
	}
}
