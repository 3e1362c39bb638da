package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

var (
	keyA = strings.Repeat("a1", 32)
	keyB = strings.Repeat("b2", 32)
)

// twoReleases publishes acme-gw 1.0.0 (signed with keyA by its log
// statement) and 2.0.0 (keyB), both security version 1, for hw.
func twoReleases(t testing.TB, db store.Store) catalog {
	role := metadata.Targets(time.Now().Add(time.Hour))
	for i, v := range []struct{ version, key string }{{"1.0.0", keyA}, {"2.0.0", keyB}} {
		path := "acme-gw/" + v.version + "/fw.img"
		m := &release.Meta{Product: "acme-gw", Version: v.version, SecurityVersion: 1, HardwareIDs: []string{"hw"}, Created: time.Now().UTC(),
			Index: release.IndexRef{SHA256: fmt.Sprintf("%064x", 1), Length: 1, ChunkSize: 1 << 20}}
		custom, err := m.Custom()
		if err != nil {
			t.Fatal(err)
		}
		tf, err := metadata.TargetFile().FromBytes(path, []byte(v.version), "sha256")
		if err != nil {
			t.Fatal(err)
		}
		tf.Custom = custom
		role.Signed.Targets[path] = tf
		leaf, err := logproof.MarshalStatement(&logproof.Statement{Target: path, Length: 5, SHA256: fmt.Sprintf("%064x", i+1), SecurityVersion: 1,
			SignerKeyIDs: []string{v.key}, RoleVersion: int64(i + 1), Role: "acme-gw"})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.PutLogEntry(context.Background(), store.LogEntry{Target: path, Index: uint64(i), Leaf: leaf}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := role.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return catalog{fleet.Published{Roles: map[string][]byte{"acme-gw": b}}}
}

func code(t *testing.T, err error, want api.Code) {
	t.Helper()
	var r *fleet.Refusal
	if !errors.As(err, &r) || r.Code != want {
		t.Fatalf("%v, want %s", err, want)
	}
}

func TestRevokeKeyAndRedeploy(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	clock := now
	svc := fleet.New(fleet.Config{Store: db, Catalog: twoReleases(t, db), Now: func() time.Time { return clock }})
	op := fleet.Op{Actor: "token:ops"}
	for i, v := range []string{"2.0.0", "1.0.0", "1.0.0"} {
		id := fmt.Sprintf("dev-%d", i)
		db.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now})
		db.RecordReport(ctx, id, store.Report{Counter: 1, Status: "installed", Installed: true, Version: v, SecurityVersion: 1, At: now})
	}
	c, err := svc.CreateRollout(ctx, op, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Decide(ctx, "dev-1"); err != nil { // in flight
		t.Fatal(err)
	}
	if a, _ := db.Assignment(ctx, "dev-1"); a.Target != "acme-gw/2.0.0/fw.img" {
		t.Fatalf("%+v", a)
	}

	_, err = svc.RevokeKey(ctx, op, api.RevokeKeyRequest{KeyID: "zz", Reason: "x"})
	code(t, err, api.BadKeyID)
	_, err = svc.RevokeKey(ctx, op, api.RevokeKeyRequest{KeyID: keyB, Reason: " "})
	code(t, err, api.NoReason)
	_, err = svc.RevokeKey(ctx, op, api.RevokeKeyRequest{KeyID: strings.Repeat("c3", 32), Reason: "x"})
	code(t, err, api.UnknownKey)

	clock = clock.Add(time.Minute)
	out, err := svc.RevokeKey(ctx, op, api.RevokeKeyRequest{KeyID: keyB, Reason: "stolen"})
	if err != nil || out.Kind != fleet.KindReleaseSigner || fmt.Sprint(out.HaltedRollouts) != "["+c.ID+"]" ||
		fmt.Sprint(out.Devices) != "[{dev-0 acme-gw/2.0.0/fw.img } {dev-1  acme-gw/2.0.0/fw.img}]" {
		t.Fatalf("%+v %v", out, err)
	}
	r, _ := svc.ShowRollout(ctx, c.ID)
	if r.State != api.RolloutAborted {
		t.Fatalf("%+v", r)
	}
	if a, _ := db.Assignment(ctx, "dev-1"); a.Target != "" {
		t.Fatalf("in flight, still assigned: %+v", a)
	}
	_, err = svc.RevokeKey(ctx, op, api.RevokeKeyRequest{KeyID: keyB, Reason: "x"})
	code(t, err, api.KeyAlreadyRevoked)
	_, err = svc.CreateRollout(ctx, op, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"})
	code(t, err, api.RevokedRelease)
	_, err = svc.Redeploy(ctx, op, api.RedeployRequest{Release: "acme-gw/2.0.0", AffectedBy: keyA})
	code(t, err, api.KeyNotRevoked)
	_, err = svc.Redeploy(ctx, op, api.RedeployRequest{Release: "acme-gw/1.0.0", AffectedBy: keyB})
	code(t, err, api.NotSignedByKey)
	rels, _ := svc.Releases(ctx, "")
	for _, rl := range rels.Releases {
		if rl.RevokedKey != (rl.Version == "2.0.0") {
			t.Fatalf("%+v", rl)
		}
	}

	rd, err := svc.Redeploy(ctx, op, api.RedeployRequest{Release: "acme-gw/2.0.0", AffectedBy: keyB})
	if err != nil || rd.Assigned != 1 || fmt.Sprint(rd.Devices) != "[{dev-0 acme-gw/1.0.0/fw.img }]" {
		t.Fatalf("%+v %v", rd, err)
	}
	// dev-0 confirms the good release: its recovery ends, 5 minutes after
	// the revocation.
	clock = clock.Add(5 * time.Minute)
	if err := svc.Report(ctx, "", "dev-0", api.ReportRequest{Counter: 2, Status: api.Installed, Version: "1.0.0", SecurityVersion: 1}); err != nil {
		t.Fatal(err)
	}
	st, err := svc.FleetStats(ctx)
	if err != nil || st.MTTR == nil || *st.MTTR != 300 || st.Devices != 3 || st.ByVersion["1.0.0"] != 3 {
		t.Fatalf("%+v %v", st, err)
	}
}

// A device that confirms a release signed with a revoked key does not
// end its recovery.
func TestRecoveryNeedsAGoodRelease(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	svc := fleet.New(fleet.Config{Store: db, Catalog: twoReleases(t, db), Now: func() time.Time { return now }})
	db.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "d", EnrolledAt: now})
	db.RecordReport(ctx, "d", store.Report{Counter: 1, Status: "installed", Installed: true, Version: "2.0.0", SecurityVersion: 1, At: now})
	if _, err := svc.RevokeKey(ctx, fleet.Op{Actor: "token:x"}, api.RevokeKeyRequest{KeyID: keyB, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	svc.Report(ctx, "", "d", api.ReportRequest{Counter: 2, Status: api.Installed, Version: "2.0.0", SecurityVersion: 1})
	if rs, _ := db.RecoveryStats(ctx, ""); rs.Open != 1 || rs.Closed != 0 {
		t.Fatalf("%+v", rs)
	}
}
