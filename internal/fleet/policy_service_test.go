package fleet_test

import (
	"context"
	"fmt"
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

// Two replicas over one store, only one of which runs the rollout engine
// (the holder of the background lease): a rollout created on the other,
// promoted by the engine, reaches the other's check-ins within
// viewRefresh (5 s), not before: the other replica decides from its view
// meanwhile. (A pause or an abort is a change of the same view.)
func TestRolloutsAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	var clk = now
	clock := func() time.Time { return clk }
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("d%02d", i)
		ids = append(ids, id)
		if err := db.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now, Version: "1.0.0", SecurityVersion: 1}); err != nil {
			t.Fatal(err)
		}
	}
	cat := newCatalog(t)
	engine := fleet.New(fleet.Config{Store: db, Catalog: cat, Now: clock})
	other := fleet.New(fleet.Config{Store: db, Catalog: cat, Now: clock})
	op := fleet.Op{Actor: "token:alice"}
	// The other replica has decided for every device already: nothing
	// offers yet.
	for _, id := range ids {
		if err := other.Decide(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := other.CreateRollout(ctx, op, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "50%,100%", Soak: "0s"})
	if err != nil {
		t.Fatal(err)
	}
	assigned := func() int {
		n := 0
		for _, id := range ids {
			if a, err := db.Assignment(ctx, id); err == nil && a.Target != "" {
				n++
			}
		}
		return n
	}
	decideAll := func(f *fleet.Service) {
		for _, id := range ids {
			if err := f.Decide(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	decideAll(other)
	first := assigned()
	if first == 0 || first == len(ids) {
		t.Fatalf("phase 1 of 50%% assigned %d of %d devices on the creating replica", first, len(ids))
	}
	// The engine promotes the rollout to its last phase; the other
	// replica, deciding from its view, offers nothing more until the
	// view is viewRefresh old.
	for _, id := range ids {
		if a, err := db.Assignment(ctx, id); err == nil && a.Target != "" {
			if err := other.Report(ctx, "", id, api.ReportRequest{Counter: 1, Status: api.Installed, Version: "2.0.0", SecurityVersion: 2}); err != nil {
				t.Fatal(err)
			}
		}
	}
	clk = clk.Add(time.Second)
	if err := engine.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := engine.ShowRollout(ctx, ro.ID); r.Phase != 2 {
		t.Fatalf("the engine did not promote the rollout: %+v", r)
	}
	decideAll(other)
	if n := assigned(); n != first {
		t.Fatalf("the other replica offered %d devices within a second of the promotion: its view should be the old one", n-first)
	}
	clk = clk.Add(5 * time.Second)
	decideAll(other)
	if n := assigned(); n != len(ids) {
		t.Fatalf("%d of %d devices assigned after the other replica's view aged: the promotion did not reach it", n, len(ids))
	}
}
