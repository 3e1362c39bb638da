package fleet_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// Two replicas over one store: a policy set on one reaches the other's
// decisions at its next Step; a stored version that does not compile
// denies; explain says which rule decided.
func TestPolicyAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	clock := func() time.Time { return now }
	for _, id := range []string{"d1", "d2", "d3"} {
		if err := db.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now, Version: "1.0.0", SecurityVersion: 1}); err != nil {
			t.Fatal(err)
		}
	}
	cat := newCatalog(t)
	a := fleet.New(fleet.Config{Store: db, Catalog: cat, Now: clock})
	b := fleet.New(fleet.Config{Store: db, Catalog: cat, Now: clock})
	op := fleet.Op{Actor: "token:alice"}
	ro, err := a.CreateRollout(ctx, op, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"})
	if err != nil {
		t.Fatal(err)
	}
	// b is a fresh replica (or a restarted server): it decides for
	// devices at once, and loads "no policy".
	if err := b.Decide(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetPolicy(ctx, op, "default: deny\n"); err != nil {
		t.Fatal(err)
	}
	if err := b.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Decide(ctx, "d2"); err != nil {
		t.Fatal(err)
	}
	r, err := b.ShowRollout(ctx, ro.ID)
	if err != nil || r.Counts.Downloading != 1 || r.Counts.PolicyDenied != 1 {
		t.Fatalf("%+v %v", r.Counts, err)
	}
	x, err := b.ExplainPolicy(ctx, "d2", "acme-gw/2.0.0", false)
	if err != nil || x.Allowed || x.Rule != "" || x.PolicyVersion != 1 || !strings.Contains(x.Reason, "default (deny)") {
		t.Fatalf("%+v %v", x, err)
	}
	// A stored version that no longer compiles denies and says why.
	err = db.Atomic(ctx, func(tx store.Tx) error {
		return tx.PutDocs(ctx, store.Doc{Repo: fleet.PolicyRepo, Role: fleet.PolicyRole, Version: 2,
			Data: []byte(`{"source":"rules:\n  - name: gone\n    allow: device.removed == 1\n"}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Step(ctx); err != nil {
		t.Fatal(err)
	}
	x, err = b.ExplainPolicy(ctx, "d3", "acme-gw/2.0.0", false)
	if err != nil || x.Allowed || !strings.Contains(x.Reason, "stored policy version 2 does not compile") {
		t.Fatalf("%+v %v", x, err)
	}
	// Unknown device, unknown release.
	if _, err := b.ExplainPolicy(ctx, "nope", "acme-gw/2.0.0", false); err == nil || !strings.Contains(err.Error(), "no device nope") {
		t.Errorf("%v", err)
	}
	if _, err := b.ExplainPolicy(ctx, "d3", "acme-gw/9.0.0", false); err == nil || !strings.Contains(err.Error(), "no published release") {
		t.Errorf("%v", err)
	}
}
