// Package storetest is the conformance suite every store.Store
// implementation runs (sumdb's storage.TestStorage is the model), so that
// SQLite and a later PostgreSQL store behave identically, including under
// concurrency for the operations security depends on.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/store"
)

// Run runs the suite; newStore returns a fresh, empty store each call.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	open := func(t *testing.T) store.Store {
		s := newStore(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
	is := func(t *testing.T, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("got %v, want %v", err, want)
		}
	}

	t.Run("MetadataVersions", func(t *testing.T) {
		s := open(t)
		_, err := s.Doc(ctx, "image", "timestamp", 0)
		is(t, err, store.ErrNotFound)
		if err := s.PutDocs(ctx, store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("r1")}, store.Doc{Repo: "image", Role: "root", Version: 2, Data: []byte("r2")}); err != nil {
			t.Fatal(err)
		}
		d, err := s.Doc(ctx, "image", "root", 0)
		if err != nil || d.Version != 2 || string(d.Data) != "r2" {
			t.Fatalf("latest = %+v, %v", d, err)
		}
		d, err = s.Doc(ctx, "image", "root", 1)
		if err != nil || string(d.Data) != "r1" {
			t.Fatalf("v1 = %+v, %v", d, err)
		}
		// Repositories are separate namespaces.
		_, err = s.Doc(ctx, "director/dev-1", "root", 1)
		is(t, err, store.ErrNotFound)
		// Same bytes again: fine. Different bytes: conflict.
		if err := s.PutDocs(ctx, store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("r1")}); err != nil {
			t.Fatal(err)
		}
		is(t, s.PutDocs(ctx, store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("evil")}), store.ErrConflict)
	})
	t.Run("MetadataBatchIsAtomic", func(t *testing.T) {
		s := open(t)
		if err := s.PutDocs(ctx, store.Doc{Repo: "image", Role: "snapshot", Version: 1, Data: []byte("s1")}); err != nil {
			t.Fatal(err)
		}
		// The second doc conflicts, so the first must not be stored.
		err := s.PutDocs(ctx, store.Doc{Repo: "image", Role: "targets", Version: 1, Data: []byte("t1")}, store.Doc{Repo: "image", Role: "snapshot", Version: 1, Data: []byte("other")})
		is(t, err, store.ErrConflict)
		_, err = s.Doc(ctx, "image", "targets", 1)
		is(t, err, store.ErrNotFound)
	})

	t.Run("Devices", func(t *testing.T) {
		s := open(t)
		dev := store.Device{ID: "dev-1", HardwareID: "acme-gw-rev2", CertSerial: "01", EnrolledAt: now}
		if err := s.CreateDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
		is(t, s.CreateDevice(ctx, dev), store.ErrExists)
		s.CreateDevice(ctx, store.Device{ID: "dev-2", HardwareID: "acme-gw-rev2", CertSerial: "02", EnrolledAt: now})
		s.CreateDevice(ctx, store.Device{ID: "dev-3", HardwareID: "other", CertSerial: "03", EnrolledAt: now})
		ds, err := s.DevicesByHardware(ctx, "acme-gw-rev2")
		if err != nil || len(ds) != 2 || ds[0].ID != "dev-1" {
			t.Fatalf("%v %v", ds, err)
		}
		if n, err := s.CountDevices(ctx); err != nil || n != 3 {
			t.Fatalf("count %d %v", n, err)
		}
		got, err := s.Device(ctx, "dev-1")
		if err != nil || got.HardwareID != "acme-gw-rev2" || !got.EnrolledAt.Equal(now) || !got.RevokedAt.IsZero() {
			t.Fatalf("%+v %v", got, err)
		}
		_, err = s.Device(ctx, "nope")
		is(t, err, store.ErrNotFound)
	})
	t.Run("ListDevicesPages", func(t *testing.T) {
		s := open(t)
		for i := range 5 {
			if err := s.CreateDevice(ctx, store.Device{ID: fmt.Sprintf("dev-%d", 4-i), HardwareID: "hw", CertSerial: fmt.Sprint(i), EnrolledAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		after := ""
		for {
			page, err := s.ListDevices(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 2 {
				t.Fatalf("page of %d devices, limit 2", len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, d := range page {
				ids = append(ids, d.ID)
			}
			after = page[len(page)-1].ID
		}
		if strings.Join(ids, ",") != "dev-0,dev-1,dev-2,dev-3,dev-4" {
			t.Fatalf("pages gave %v", ids)
		}
	})
	t.Run("ListDeviceFacts", func(t *testing.T) {
		s := open(t)
		for i := range 5 {
			id := fmt.Sprintf("dev-%d", 4-i)
			if err := s.CreateDevice(ctx, store.Device{ID: id, HardwareID: fmt.Sprintf("hw-%d", i%2), CertSerial: id, EnrolledAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		s.RecordReport(ctx, "dev-1", store.Report{Counter: 1, Status: "installed", Installed: true, Version: "1.2.0", SecurityVersion: 3, At: now})
		s.SetDeviceTags(ctx, "dev-0", map[string]string{"site": "lab", "ring": "a"}, nil)
		s.SetDeviceTags(ctx, "dev-1", map[string]string{"ring": "a", "site": "lab"}, nil)
		s.SetDeviceTags(ctx, "dev-2", map[string]string{"site": "x"}, nil)
		s.SetDeviceTags(ctx, "dev-2", nil, []string{"site"}) // no tags again
		s.RevokeDevice(ctx, "dev-3", now)                    // revoked devices are left out
		var got []string
		var facts []store.DeviceFacts
		after := ""
		for {
			page, err := s.ListDeviceFacts(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 2 {
				t.Fatalf("page of %d devices, limit 2", len(page))
			}
			for _, f := range page {
				got = append(got, f.ID)
				facts = append(facts, f)
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].ID
		}
		if strings.Join(got, ",") != "dev-0,dev-1,dev-2,dev-4" {
			t.Fatalf("pages gave %v", got)
		}
		f0, f1, f2 := facts[0], facts[1], facts[2]
		if f0.HardwareID != "hw-0" || f1.HardwareID != "hw-1" || f1.Version != "1.2.0" || f1.SecurityVersion != 3 || f0.Version != "" {
			t.Fatalf("%+v %+v", f0, f1)
		}
		if len(f0.Tags) != 2 || f0.Tags["site"] != "lab" || f0.TagsKey != f1.TagsKey || f1.Tags["ring"] != "a" {
			t.Fatalf("equal tags: %+v %+v", f0, f1)
		}
		if len(f2.Tags) != 0 || f2.TagsKey != facts[3].TagsKey || f2.TagsKey == f0.TagsKey {
			t.Fatalf("no tags: %+v %+v", f2, facts[3])
		}
	})
	t.Run("DeviceTags", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "dev-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: now})
		if d, err := s.Device(ctx, "dev-1"); err != nil || len(d.Tags) != 0 {
			t.Fatalf("new device has tags %v (%v)", d.Tags, err)
		}
		got, err := s.SetDeviceTags(ctx, "dev-1", map[string]string{"site": "berlin", "ring": "canary"}, nil)
		if err != nil || len(got) != 2 || got["site"] != "berlin" {
			t.Fatalf("%v %v", got, err)
		}
		// unset applies before set: a key both removed and set is set.
		got, err = s.SetDeviceTags(ctx, "dev-1", map[string]string{"site": "lab"}, []string{"ring", "site", "absent"})
		if err != nil || len(got) != 1 || got["site"] != "lab" {
			t.Fatalf("%v %v", got, err)
		}
		d, err := s.Device(ctx, "dev-1")
		if err != nil || len(d.Tags) != 1 || d.Tags["site"] != "lab" {
			t.Fatalf("stored tags %v (%v)", d.Tags, err)
		}
		page, err := s.ListDevices(ctx, "", 10)
		if err != nil || len(page) != 1 || page[0].Tags["site"] != "lab" {
			t.Fatalf("listed %+v (%v)", page, err)
		}
		_, err = s.SetDeviceTags(ctx, "nope", map[string]string{"a": "b"}, nil)
		is(t, err, store.ErrNotFound)
		// In a transaction that rolls back, tags do not change.
		s.Atomic(ctx, func(tx store.Tx) error {
			tx.SetDeviceTags(ctx, "dev-1", nil, []string{"site"})
			return errors.New("roll back")
		})
		if d, _ := s.Device(ctx, "dev-1"); d.Tags["site"] != "lab" {
			t.Fatalf("a rolled back change of tags stayed: %v", d.Tags)
		}
	})
	t.Run("LastRefusal", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "dev-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: now})
		if err := s.RecordReport(ctx, "dev-1", store.Report{Counter: 1, Status: "verification-refused", Reason: "rollback", Refusal: "rollback", At: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordReport(ctx, "dev-1", store.Report{Counter: 2, Status: "downloading", At: now}); err != nil {
			t.Fatal(err)
		}
		if d, _ := s.Device(ctx, "dev-1"); d.LastRefusal != "rollback" {
			t.Fatalf("last refusal %q, want rollback (kept across other reports)", d.LastRefusal)
		}
	})
	t.Run("Rollouts", func(t *testing.T) {
		s := open(t)
		a, err := s.CreateRollout(ctx, store.Rollout{ID: "r-a", Target: "p/1.0.0/f", SecurityVersion: 3, Selector: "true", Spec: []byte(`{}`), State: "running", CreatedBy: "token:x", CreatedAt: now})
		if err != nil || a.Seq == 0 {
			t.Fatalf("%+v %v", a, err)
		}
		b, err := s.CreateRollout(ctx, store.Rollout{ID: "r-b", Target: "p/1.1.0/f", Spec: []byte(`{}`), State: "paused", CreatedAt: now})
		if err != nil || b.Seq <= a.Seq {
			t.Fatalf("the newer rollout has seq %d, the older %d (%v)", b.Seq, a.Seq, err)
		}
		_, err = s.CreateRollout(ctx, store.Rollout{ID: "r-a", Spec: []byte(`{}`), State: "running"})
		is(t, err, store.ErrExists)
		got, err := s.Rollout(ctx, "r-a")
		if err != nil || got.Target != "p/1.0.0/f" || got.SecurityVersion != 3 || got.Selector != "true" || got.CreatedBy != "token:x" || !got.CreatedAt.Equal(now) {
			t.Fatalf("%+v %v", got, err)
		}
		_, err = s.Rollout(ctx, "nope")
		is(t, err, store.ErrNotFound)
		got.State, got.Phase, got.Threshold, got.PausedReason, got.ApprovedBy, got.PhaseStarted = "paused", 2, 1000, "gate", "token:y", now.Add(time.Hour)
		if err := s.UpdateRollout(ctx, got); err != nil {
			t.Fatal(err)
		}
		again, _ := s.Rollout(ctx, "r-a")
		if again.State != "paused" || again.Phase != 2 || again.Threshold != 1000 || again.PausedReason != "gate" || again.ApprovedBy != "token:y" || !again.PhaseStarted.Equal(now.Add(time.Hour)) {
			t.Fatalf("%+v", again)
		}
		is(t, s.UpdateRollout(ctx, store.Rollout{ID: "nope"}), store.ErrNotFound)
		list, err := s.ListRollouts(ctx, 10)
		if err != nil || len(list) != 2 || list[0].ID != "r-b" {
			t.Fatalf("newest first: %+v %v", list, err)
		}
		if list, _ := s.ListRollouts(ctx, 1); len(list) != 1 {
			t.Fatalf("limit 1 gave %d", len(list))
		}
		paused, err := s.RolloutsInState(ctx, "paused", "running")
		if err != nil || len(paused) != 2 || paused[0].ID != "r-a" {
			t.Fatalf("oldest first: %+v %v", paused, err)
		}
		if none, _ := s.RolloutsInState(ctx, "completed"); len(none) != 0 {
			t.Fatalf("%+v", none)
		}

		_, err = s.RolloutDevice(ctx, "r-a", "dev-1")
		is(t, err, store.ErrNotFound)
		for i, st := range []string{"downloading", "downloading", "installed", "failed", "rolled-back", "rolled-back"} {
			reason := ""
			if st == "rolled-back" {
				reason = "health-check"
			} else if st == "failed" {
				reason = "write"
			}
			failures := 0
			if reason != "" {
				failures = 1
			}
			if err := s.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: "r-a", DeviceID: fmt.Sprintf("dev-%d", i), Status: st, OfferedAt: now, Failures: failures, Reason: reason, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		// A second put replaces the first.
		if err := s.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: "r-a", DeviceID: "dev-0", Status: "installed", Failures: 1, CooldownUntil: now.Add(time.Hour), UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		d, err := s.RolloutDevice(ctx, "r-a", "dev-0")
		if err != nil || d.Status != "installed" || d.Failures != 1 || !d.CooldownUntil.Equal(now.Add(time.Hour)) || !d.OfferedAt.IsZero() {
			t.Fatalf("%+v %v", d, err)
		}
		counts, err := s.RolloutCounts(ctx, "r-a")
		if err != nil || counts.ByStatus["installed"] != 2 || counts.ByStatus["downloading"] != 1 || counts.ByStatus["failed"] != 1 || counts.ByStatus["rolled-back"] != 2 || counts.Failures != 4 {
			t.Fatalf("%v %v", counts, err)
		}
		s.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: "r-a", DeviceID: "dev-9", Status: "installing", UpdatedAt: now})
		if n, err := s.RolloutInFlight(ctx, "r-a"); err != nil || n != 2 {
			t.Fatalf("in flight: %d %v", n, err)
		}
		if n, err := s.RolloutInFlight(ctx, "nope"); err != nil || n != 0 {
			t.Fatalf("in flight in no rollout: %d %v", n, err)
		}
		s.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: "r-a", DeviceID: "dev-9", Status: "installed", UpdatedAt: now})
		reasons, err := s.RolloutReasons(ctx, "r-a", 1)
		if err != nil || len(reasons) != 1 || reasons["health-check"] != 2 {
			t.Fatalf("the most common reason: %v %v", reasons, err)
		}
		s.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: "r-b", DeviceID: "dev-0", Status: "downloading", UpdatedAt: now})
		mine, err := s.DeviceRollouts(ctx, "dev-0")
		if err != nil || len(mine) != 2 || mine[0].RolloutID != "r-a" || mine[1].Status != "downloading" {
			t.Fatalf("%+v %v", mine, err)
		}
	})
	t.Run("ReportsOnlyMoveForward", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
		if err := s.RecordReport(ctx, "d", store.Report{Counter: 5, Status: "downloading", At: now}); err != nil {
			t.Fatal(err)
		}
		is(t, s.RecordReport(ctx, "d", store.Report{Counter: 5, Status: "installed", Installed: true, Version: "9.9.9", At: now}), store.ErrReplay)
		is(t, s.RecordReport(ctx, "d", store.Report{Counter: 4, Status: "installed", At: now}), store.ErrReplay)
		// Only an installed report changes what the device runs.
		if err := s.RecordReport(ctx, "d", store.Report{Counter: 6, Status: "installed-pending-reboot", Version: "2.4.1", SecurityVersion: 7, At: now}); err != nil {
			t.Fatal(err)
		}
		d, _ := s.Device(ctx, "d")
		if d.Version != "" || d.ReportCounter != 6 || d.LastStatus != "installed-pending-reboot" {
			t.Fatalf("%+v", d)
		}
		if err := s.RecordReport(ctx, "d", store.Report{Counter: 7, Status: "installed", Installed: true, Version: "2.4.1", SecurityVersion: 7, At: now}); err != nil {
			t.Fatal(err)
		}
		d, _ = s.Device(ctx, "d")
		if d.Version != "2.4.1" || d.SecurityVersion != 7 {
			t.Fatalf("%+v", d)
		}
		is(t, s.RecordReport(ctx, "nope", store.Report{Counter: 1}), store.ErrNotFound)
	})
	t.Run("ConcurrentReportsAcceptEachCounterOnce", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
		var ok atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.RecordReport(ctx, "d", store.Report{Counter: 1, Status: "x", At: now}) == nil {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Fatalf("counter 1 accepted %d times", ok.Load())
		}
	})
	t.Run("RevokedDevice", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
		if err := s.RevokeDevice(ctx, "d", now); err != nil {
			t.Fatal(err)
		}
		is(t, s.RevokeDevice(ctx, "d", now), store.ErrRevoked)
		is(t, s.RecordReport(ctx, "d", store.Report{Counter: 1}), store.ErrRevoked)
		d, _ := s.Device(ctx, "d")
		if !d.RevokedAt.Equal(now) {
			t.Fatalf("%+v", d)
		}
		is(t, s.RevokeDevice(ctx, "nope", now), store.ErrNotFound)
		s.CreateDevice(ctx, store.Device{ID: "c", HardwareID: "hw", CertSerial: "2", EnrolledAt: now})
		s.CreateDevice(ctx, store.Device{ID: "a", HardwareID: "hw", CertSerial: "3", EnrolledAt: now})
		if err := s.RevokeDevice(ctx, "a", now); err != nil {
			t.Fatal(err)
		}
		serials, err := s.RevokedCertificates(ctx)
		if err != nil || fmt.Sprint(serials) != "[1 3]" {
			t.Fatalf("revoked certificates %v %v", serials, err)
		}
	})
	t.Run("RemoveDevice", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "a1", EnrolledAt: now})
		s.CreateDevice(ctx, store.Device{ID: "r", HardwareID: "hw", CertSerial: "b2", EnrolledAt: now})
		if _, err := s.Assign(ctx, "p/1.0.0/f", []string{"d"}, now); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeDevice(ctx, "r", now); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"d", "r"} {
			d, err := s.RemoveDevice(ctx, id, now)
			if err != nil || d.ID != id {
				t.Fatalf("remove %s: %+v %v", id, d, err)
			}
			_, err = s.Device(ctx, id)
			is(t, err, store.ErrNotFound)
			_, err = s.Assignment(ctx, id)
			is(t, err, store.ErrNotFound)
		}
		_, err := s.RemoveDevice(ctx, "d", now)
		is(t, err, store.ErrNotFound)
		// Both certificates stay refused; the ids can enroll again.
		serials, err := s.RevokedCertificates(ctx)
		if err != nil || fmt.Sprint(serials) != "[a1 b2]" {
			t.Fatalf("revoked certificates %v %v", serials, err)
		}
		if err := s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw2", CertSerial: "c3", EnrolledAt: now}); err != nil {
			t.Fatal(err)
		}
		d, err := s.Device(ctx, "d")
		if err != nil || d.CertSerial != "c3" || d.HardwareID != "hw2" || d.ReportCounter != 0 || !d.RevokedAt.IsZero() {
			t.Fatalf("re-enrolled %+v %v", d, err)
		}
		if a, err := s.Assignment(ctx, "d"); err != nil || a.Target != "" {
			t.Fatalf("re-enrolled device inherited assignment %+v %v", a, err)
		}
	})
	t.Run("Anomalies", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
		for _, why := range []string{"unknown-release", "security-version"} {
			if err := s.RecordAnomaly(ctx, "d", why, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		d, _ := s.Device(ctx, "d")
		if d.Anomalies != 2 || d.LastAnomaly != "security-version" || !d.LastSeen.Equal(now.Add(time.Minute)) || d.ReportCounter != 0 {
			t.Fatalf("%+v", d)
		}
		is(t, s.RecordAnomaly(ctx, "nope", "x", now), store.ErrNotFound)
	})

	t.Run("EnrollTokens", func(t *testing.T) {
		s := open(t)
		if err := s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h1", HardwareID: "hw", Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		is(t, s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h1", HardwareID: "hw", Expires: now}), store.ErrExists)
		tok, err := s.ConsumeEnrollToken(ctx, "h1", "dev-1", now)
		if err != nil || tok.HardwareID != "hw" || tok.UsedBy != "dev-1" {
			t.Fatalf("%+v %v", tok, err)
		}
		_, err = s.ConsumeEnrollToken(ctx, "h1", "dev-2", now)
		is(t, err, store.ErrUsed)
		s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h2", HardwareID: "hw", Expires: now})
		_, err = s.ConsumeEnrollToken(ctx, "h2", "dev-3", now)
		is(t, err, store.ErrExpired)
		_, err = s.ConsumeEnrollToken(ctx, "nope", "dev-3", now)
		is(t, err, store.ErrNotFound)
	})
	t.Run("EnrollTokenUsedOnceUnderConcurrency", func(t *testing.T) {
		s := open(t)
		s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h", HardwareID: "hw", Expires: now.Add(time.Hour)})
		var ok, used atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, err := s.ConsumeEnrollToken(ctx, "h", fmt.Sprintf("dev-%d", i), now)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, store.ErrUsed):
					used.Add(1)
				}
			}(i)
		}
		wg.Wait()
		if ok.Load() != 1 || used.Load() != 15 {
			t.Fatalf("%d succeeded, %d refused as used", ok.Load(), used.Load())
		}
	})
	t.Run("OperatorTokens", func(t *testing.T) {
		s := open(t)
		if err := s.CreateOperatorToken(ctx, store.OperatorToken{Hash: "h", Name: "ci", Role: "release-manager", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		is(t, s.CreateOperatorToken(ctx, store.OperatorToken{Hash: "h2", Name: "ci", Role: "admin", CreatedAt: now}), store.ErrExists)
		tok, err := s.OperatorToken(ctx, "h")
		if err != nil || tok.Role != "release-manager" || tok.Name != "ci" {
			t.Fatalf("%+v %v", tok, err)
		}
		// A role change is seen by the next lookup.
		if err := s.SetOperatorTokenRole(ctx, "ci", "auditor"); err != nil {
			t.Fatal(err)
		}
		if tok, err := s.OperatorToken(ctx, "h"); err != nil || tok.Role != "auditor" {
			t.Fatalf("after role change: %+v %v", tok, err)
		}
		is(t, s.SetOperatorTokenRole(ctx, "nope", "auditor"), store.ErrNotFound)
		if err := s.RevokeOperatorToken(ctx, "ci", now); err != nil {
			t.Fatal(err)
		}
		tok, err = s.OperatorToken(ctx, "h")
		is(t, err, store.ErrRevoked)
		if tok.Name != "ci" || !tok.RevokedAt.Equal(now) {
			t.Fatalf("revoked token: %+v", tok)
		}
		is(t, s.RevokeOperatorToken(ctx, "ci", now), store.ErrRevoked)
		is(t, s.SetOperatorTokenRole(ctx, "ci", "admin"), store.ErrRevoked)
		is(t, s.RevokeOperatorToken(ctx, "nope", now), store.ErrNotFound)
		_, err = s.OperatorToken(ctx, "nope")
		is(t, err, store.ErrNotFound)
		// A revoked token's name is not free again.
		is(t, s.CreateOperatorToken(ctx, store.OperatorToken{Hash: "h3", Name: "ci", Role: "admin", CreatedAt: now}), store.ErrExists)

		s.CreateOperatorToken(ctx, store.OperatorToken{Hash: "h4", Name: "admin", Role: "admin", CreatedAt: now.Add(time.Second)})
		all, err := s.OperatorTokens(ctx)
		if err != nil || len(all) != 2 {
			t.Fatalf("%+v %v", all, err)
		}
		if all[0].Name != "admin" || all[0].Role != "admin" || !all[0].RevokedAt.IsZero() || !all[0].CreatedAt.Equal(now.Add(time.Second)) ||
			all[1].Name != "ci" || all[1].Role != "auditor" || !all[1].RevokedAt.Equal(now) || all[1].Hash != "h" {
			t.Fatalf("%+v", all)
		}
	})

	t.Run("AtomicCommitsActionWithAudit", func(t *testing.T) {
		s := open(t)
		err := s.Atomic(ctx, func(tx store.Tx) error {
			if err := tx.CreateOperatorToken(ctx, store.OperatorToken{Hash: "h", Name: "ci", Role: "auditor", CreatedAt: now}); err != nil {
				return err
			}
			// Reads inside the transaction see its own writes.
			if _, err := tx.OperatorToken(ctx, "h"); err != nil {
				return err
			}
			_, err := tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "token:admin", Action: "create-token", Subject: "ci", Outcome: "ok"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.OperatorToken(ctx, "h"); err != nil {
			t.Fatal(err)
		}
		es, _ := s.AuditEntries(ctx, 0, 10)
		if len(es) != 1 || es[0].Subject != "ci" || audit.Verify(nil, es) != nil {
			t.Fatalf("%+v", es)
		}
	})
	t.Run("AtomicRollsBackActionAndAudit", func(t *testing.T) {
		s := open(t)
		s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "x", Action: "before", Outcome: "ok"})
		s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "e", HardwareID: "hw", Expires: now.Add(time.Hour)})
		boom := errors.New("boom")
		err := s.Atomic(ctx, func(tx store.Tx) error {
			if _, err := tx.ConsumeEnrollToken(ctx, "e", "d", now); err != nil {
				return err
			}
			if err := tx.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now}); err != nil {
				return err
			}
			if _, err := tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:d", Action: "enroll", Outcome: "ok"}); err != nil {
				return err
			}
			return fmt.Errorf("late failure: %w", boom)
		})
		is(t, err, boom)
		_, err = s.Device(ctx, "d")
		is(t, err, store.ErrNotFound)
		if es, _ := s.AuditEntries(ctx, 0, 10); len(es) != 1 {
			t.Fatalf("a rolled-back audit entry is stored: %+v", es)
		}
		// The token was not spent.
		if _, err := s.ConsumeEnrollToken(ctx, "e", "d", now); err != nil {
			t.Fatal(err)
		}
		// And the chain continues from the last committed entry.
		if _, err := s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "x", Action: "after", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		if es, _ := s.AuditEntries(ctx, 0, 10); len(es) != 2 || audit.Verify(nil, es) != nil {
			t.Fatalf("%+v", es)
		}
	})
	t.Run("AtomicFailedActionStoresNoAudit", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
		err := s.Atomic(ctx, func(tx store.Tx) error {
			if _, err := tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:d", Action: "enroll", Outcome: "ok"}); err != nil {
				return err
			}
			return tx.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "2", EnrolledAt: now})
		})
		is(t, err, store.ErrExists)
		if es, _ := s.AuditEntries(ctx, 0, 10); len(es) != 0 {
			t.Fatalf("the audit entry of a failed action is stored: %+v", es)
		}
	})
	t.Run("AtomicMethodFailureLeavesTransactionIntact", func(t *testing.T) {
		s := open(t)
		s.PutDocs(ctx, store.Doc{Repo: "image", Role: "snapshot", Version: 1, Data: []byte("s1")})
		err := s.Atomic(ctx, func(tx store.Tx) error {
			// The batch fails on its second doc; its first must not stay
			// in the transaction the callback goes on to commit.
			err := tx.PutDocs(ctx, store.Doc{Repo: "image", Role: "targets", Version: 1, Data: []byte("t1")}, store.Doc{Repo: "image", Role: "snapshot", Version: 1, Data: []byte("other")})
			is(t, err, store.ErrConflict)
			return tx.PutDocs(ctx, store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("r1")})
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Doc(ctx, "image", "targets", 1)
		is(t, err, store.ErrNotFound)
		if d, err := s.Doc(ctx, "image", "root", 1); err != nil || string(d.Data) != "r1" {
			t.Fatalf("%+v %v", d, err)
		}
	})
	t.Run("AtomicEnrollmentUnderConcurrency", func(t *testing.T) {
		s := open(t)
		s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h", HardwareID: "hw", Expires: now.Add(time.Hour)})
		var ok atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				id := fmt.Sprintf("dev-%d", i)
				err := s.Atomic(ctx, func(tx store.Tx) error {
					tok, err := tx.ConsumeEnrollToken(ctx, "h", id, now)
					if err != nil {
						return err
					}
					if err := tx.CreateDevice(ctx, store.Device{ID: id, HardwareID: tok.HardwareID, CertSerial: id, EnrolledAt: now}); err != nil {
						return err
					}
					_, err = tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:" + id, Action: "enroll", Outcome: "ok"})
					return err
				})
				if err == nil {
					ok.Add(1)
				} else if !errors.Is(err, store.ErrUsed) {
					t.Error(err)
				}
				// Plain appends interleave with the transactions.
				if _, err := s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:" + id, Action: "report", Outcome: "ok"}); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		if n, _ := s.CountDevices(ctx); ok.Load() != 1 || n != 1 {
			t.Fatalf("%d enrollments committed, %d devices", ok.Load(), n)
		}
		es, _ := s.AuditEntries(ctx, 0, 100)
		if len(es) != 17 {
			t.Fatalf("%d audit entries", len(es))
		}
		if err := audit.Verify(nil, es); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Assignments", func(t *testing.T) {
		s := open(t)
		for _, id := range []string{"d1", "d2"} {
			s.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now})
		}
		a, err := s.Assignment(ctx, "d1")
		if err != nil || a.Target != "" {
			t.Fatalf("%+v %v", a, err)
		}
		n, err := s.Assign(ctx, "acme-gw/1.0.0/fw.img", []string{"d1", "d2"}, now)
		if err != nil || n != 2 {
			t.Fatalf("%d %v", n, err)
		}
		a1, _ := s.Assignment(ctx, "d1")
		if a1.Target != "acme-gw/1.0.0/fw.img" || a1.Seq == 0 || !a1.AssignedAt.Equal(now) {
			t.Fatalf("%+v", a1)
		}
		// Re-assigning the same target changes nothing.
		if n, _ := s.Assign(ctx, "acme-gw/1.0.0/fw.img", []string{"d1"}, now); n != 0 {
			t.Fatalf("%d changed", n)
		}
		n, err = s.Assign(ctx, "acme-gw/1.1.0/fw.img", []string{"d1"}, now)
		a2, _ := s.Assignment(ctx, "d1")
		if err != nil || n != 1 || a2.Seq <= a1.Seq || a2.Target != "acme-gw/1.1.0/fw.img" {
			t.Fatalf("%+v %v", a2, err)
		}
		// An unknown device fails the whole deployment, and is named.
		_, err = s.Assign(ctx, "acme-gw/2.0.0/fw.img", []string{"d2", "nope"}, now)
		is(t, err, store.ErrNotFound)
		if !strings.Contains(fmt.Sprint(err), "nope") {
			t.Fatalf("the error does not name the unknown device: %v", err)
		}
		if a, _ := s.Assignment(ctx, "d2"); a.Target != "acme-gw/1.0.0/fw.img" {
			t.Fatalf("a failed deployment changed d2: %+v", a)
		}
		_, err = s.Assignment(ctx, "nope")
		is(t, err, store.ErrNotFound)
		// A device listed twice counts once; only devices whose target
		// changes count, and only they get the new sequence number.
		n, err = s.Assign(ctx, "acme-gw/1.1.0/fw.img", []string{"d2", "d1", "d2"}, now.Add(time.Minute))
		a3, _ := s.Assignment(ctx, "d1")
		b3, _ := s.Assignment(ctx, "d2")
		if err != nil || n != 1 || a3.Seq != a2.Seq || !a3.AssignedAt.Equal(now) || b3.Seq <= a2.Seq || b3.Target != "acme-gw/1.1.0/fw.img" {
			t.Fatalf("%d %v: %+v %+v", n, err, a3, b3)
		}
		// A long list (more than one batch of a store): devices listed
		// again in a later batch count once; an unknown device in a
		// later batch undoes the earlier ones.
		var ids []string
		for i := range 12000 {
			ids = append(ids, fmt.Sprintf("m%d", i%3))
		}
		for _, id := range ids[:3] {
			s.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now})
		}
		if n, err := s.Assign(ctx, "acme-gw/1.0.0/fw.img", ids, now); err != nil || n != 3 {
			t.Fatalf("%d of 3: %v", n, err)
		}
		_, err = s.Assign(ctx, "acme-gw/2.0.0/fw.img", append(ids, "nope"), now)
		is(t, err, store.ErrNotFound)
		if a, _ := s.Assignment(ctx, "m0"); a.Target != "acme-gw/1.0.0/fw.img" {
			t.Fatalf("a failed deployment changed m0: %+v", a)
		}
	})
	// A store may keep assignments in memory (both do): what it serves
	// is what a query would, after an assignment commits (alone, in
	// Atomic, under a savepoint), after one rolls back, after a device
	// is removed or enrolled.
	t.Run("AssignmentFollowsWrites", func(t *testing.T) {
		db := open(t)
		var err error
		want := func(id, target string) {
			t.Helper()
			a, err := db.Assignment(ctx, id)
			if err != nil || a.Target != target {
				t.Fatalf("assignment of %s: %+v %v, want target %q", id, a, err, target)
			}
		}
		if _, err := db.Assignment(ctx, "gw-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown device: %v", err)
		}
		if err := db.CreateDevice(ctx, store.Device{ID: "gw-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: now}); err != nil {
			t.Fatal(err)
		}
		want("gw-1", "") // an unknown device's refusal was not cached

		if _, err := db.Assign(ctx, "p/1.0.0/fw.img", []string{"gw-1"}, now); err != nil {
			t.Fatal(err)
		}
		want("gw-1", "p/1.0.0/fw.img")
		for range 3 {
			want("gw-1", "p/1.0.0/fw.img")
		}

		// In Atomic, then under a savepoint in Atomic.
		err = db.Atomic(ctx, func(tx store.Tx) error {
			_, err := tx.Assign(ctx, "p/1.1.0/fw.img", []string{"gw-1"}, now)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		want("gw-1", "p/1.1.0/fw.img")
		// A transaction that assigns and then fails changes nothing.
		boom := errors.New("boom")
		err = db.Atomic(ctx, func(tx store.Tx) error {
			if _, err := tx.Assign(ctx, "p/9.9.9/fw.img", []string{"gw-1"}, now); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		want("gw-1", "p/1.1.0/fw.img")

		// Removed: refused again, as a query would.
		if _, err := db.RemoveDevice(ctx, "gw-1", now); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Assignment(ctx, "gw-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("removed device: %v", err)
		}
	})
	// Readers racing an assignment never see the old target once Assign
	// has returned (run with -race).
	t.Run("AssignmentReadersNeverGoBack", func(t *testing.T) {
		db := open(t)
		if err := db.CreateDevice(ctx, store.Device{ID: "gw-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		committed := "" // the last target whose Assign returned
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					floor := committed
					mu.Unlock()
					a, err := db.Assignment(ctx, "gw-1")
					if err != nil {
						errs <- err
						return
					}
					// Targets go up: v0, v1, ...; a read after Assign of vN
					// returned sees vN or later.
					if floor != "" && a.Target < floor {
						errs <- fmt.Errorf("read %q after %q was committed", a.Target, floor)
						return
					}
				}
			}()
		}
		for i := range 50 {
			target := fmt.Sprintf("p/v%03d/fw.img", i)
			if _, err := db.Assign(ctx, target, []string{"gw-1"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			committed = target
			mu.Unlock()
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("LogEntries", func(t *testing.T) {
		s := open(t)
		e := store.LogEntry{Target: "acme-gw/1.0.0/fw.img", Index: 7, Leaf: []byte("statement")}
		if err := s.PutLogEntry(ctx, e); err != nil {
			t.Fatal(err)
		}
		is(t, s.PutLogEntry(ctx, e), store.ErrExists)
		got, err := s.LogEntry(ctx, e.Target)
		if err != nil || got.Index != 7 || string(got.Leaf) != "statement" {
			t.Fatalf("%+v %v", got, err)
		}
		_, err = s.LogEntry(ctx, "nope")
		is(t, err, store.ErrNotFound)
	})
	t.Run("PendingPush", func(t *testing.T) {
		s := open(t)
		_, err := s.PendingPush(ctx)
		is(t, err, store.ErrNotFound)
		if err := s.PutPendingPush(ctx, []byte("one")); err != nil {
			t.Fatal(err)
		}
		is(t, s.PutPendingPush(ctx, []byte("two")), store.ErrExists)
		if b, err := s.PendingPush(ctx); err != nil || string(b) != "one" {
			t.Fatalf("%q %v", b, err)
		}
		// Deleting it commits, or rolls back, with the transaction.
		s.Atomic(ctx, func(tx store.Tx) error {
			if err := tx.DeletePendingPush(ctx); err != nil {
				t.Fatal(err)
			}
			return errors.New("roll back")
		})
		if b, err := s.PendingPush(ctx); err != nil || string(b) != "one" {
			t.Fatalf("after rollback: %q %v", b, err)
		}
		if err := s.Atomic(ctx, func(tx store.Tx) error { return tx.DeletePendingPush(ctx) }); err != nil {
			t.Fatal(err)
		}
		_, err = s.PendingPush(ctx)
		is(t, err, store.ErrNotFound)
		if err := s.DeletePendingPush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.PutPendingPush(ctx, []byte("three")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Chunks", func(t *testing.T) {
		s := open(t)
		a := store.ChunkRef{Hash: strings.Repeat("a", 64), Blob: strings.Repeat("1", 64), Offset: 0, Length: 1 << 20}
		b := store.ChunkRef{Hash: strings.Repeat("b", 64), Blob: strings.Repeat("1", 64), Offset: 1 << 20, Length: 77}
		if err := s.PutChunks(ctx, []store.ChunkRef{a, b}); err != nil {
			t.Fatal(err)
		}
		// A later release holding chunk a elsewhere: a keeps its first
		// location, the new chunk is added.
		a2 := store.ChunkRef{Hash: a.Hash, Blob: strings.Repeat("2", 64), Offset: 5 << 20, Length: 1 << 20}
		c := store.ChunkRef{Hash: strings.Repeat("c", 64), Blob: a2.Blob, Offset: 0, Length: 1 << 20}
		if err := s.PutChunks(ctx, []store.ChunkRef{a2, c}); err != nil {
			t.Fatal(err)
		}
		for _, want := range []store.ChunkRef{a, b, c} {
			got, err := s.Chunk(ctx, want.Hash)
			if err != nil || got != want {
				t.Fatalf("Chunk(%s) = %+v, %v; want %+v", want.Hash[:4], got, err, want)
			}
		}
		_, err := s.Chunk(ctx, strings.Repeat("d", 64))
		is(t, err, store.ErrNotFound)
		// Inside a transaction that fails, nothing is recorded.
		boom := errors.New("boom")
		d := store.ChunkRef{Hash: strings.Repeat("d", 64), Blob: a.Blob, Length: 1}
		err = s.Atomic(ctx, func(tx store.Tx) error {
			if err := tx.PutChunks(ctx, []store.ChunkRef{d}); err != nil {
				return err
			}
			return boom
		})
		is(t, err, boom)
		_, err = s.Chunk(ctx, d.Hash)
		is(t, err, store.ErrNotFound)
	})
	t.Run("AuditChain", func(t *testing.T) {
		s := open(t)
		for i := 0; i < 5; i++ {
			if _, err := s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "admin", Action: "push", Outcome: "ok", Detail: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
				t.Fatal(err)
			}
		}
		es, err := s.AuditEntries(ctx, 0, 100)
		if err != nil || len(es) != 5 {
			t.Fatalf("%d %v", len(es), err)
		}
		if err := audit.Verify(nil, es); err != nil {
			t.Fatal(err)
		}
		page, _ := s.AuditEntries(ctx, 2, 2)
		if len(page) != 2 || page[0].Seq != 3 {
			t.Fatalf("%+v", page)
		}
		if err := audit.Verify(&es[1], page); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("AuditConcurrentAppendsStayChained", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, err := s.AppendAudit(ctx, audit.Entry{Time: now, Actor: fmt.Sprint("a", i), Action: "report", Outcome: "ok"}); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		es, _ := s.AuditEntries(ctx, 0, 100)
		if len(es) != 20 {
			t.Fatalf("%d entries", len(es))
		}
		if err := audit.Verify(nil, es); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ReportHistoryIsBounded", func(t *testing.T) {
		s := open(t)
		s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
		for i := 1; i <= 3*store.ReportHistory; i++ {
			st := []string{"downloading", "failed"}[i%2]
			if err := s.RecordReport(ctx, "d", store.Report{Counter: uint64(i), Status: st, Reason: fmt.Sprint("r", i), At: now}); err != nil {
				t.Fatal(err)
			}
		}
		is(t, s.RecordReport(ctx, "d", store.Report{Counter: 2, Status: "failed", At: now}), store.ErrReplay)
		rs, counts, err := s.Reports(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != store.ReportHistory || rs[0].Counter != 3*store.ReportHistory || rs[0].Reason != fmt.Sprint("r", 3*store.ReportHistory) {
			t.Fatalf("%d reports kept, newest %+v", len(rs), rs[0])
		}
		if counts["downloading"] != uint64(3*store.ReportHistory/2) || counts["failed"] != uint64(3*store.ReportHistory/2) || len(counts) != 2 {
			t.Fatalf("counts %v", counts)
		}
		if _, err := s.RemoveDevice(ctx, "d", now); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.Reports(ctx, "d")
		is(t, err, store.ErrNotFound)
	})
	t.Run("EnrollTokenReadOnly", func(t *testing.T) {
		s := open(t)
		_, err := s.EnrollToken(ctx, "h")
		is(t, err, store.ErrNotFound)
		s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h", HardwareID: "hw", Expires: now.Add(time.Hour)})
		tok, err := s.EnrollToken(ctx, "h")
		if err != nil || tok.HardwareID != "hw" || !tok.UsedAt.IsZero() {
			t.Fatalf("%+v %v", tok, err)
		}
		if _, err := s.ConsumeEnrollToken(ctx, "h", "d", now); err != nil {
			t.Fatal(err)
		}
		if tok, _ := s.EnrollToken(ctx, "h"); tok.UsedAt.IsZero() || tok.UsedBy != "d" {
			t.Fatalf("%+v", tok)
		}
	})
	t.Run("AuditPruneKeepsTheChainVerifiable", func(t *testing.T) {
		s := open(t)
		for i := range 10 {
			at := now.Add(time.Duration(i) * time.Hour)
			if _, err := s.AppendAudit(ctx, audit.Entry{Time: at, Actor: "admin", Action: "x", Outcome: "ok"}); err != nil {
				t.Fatal(err)
			}
		}
		all, _ := s.AuditEntries(ctx, 0, 100)
		a, err := s.AuditAnchor(ctx)
		if err != nil || a.Seq != 0 || a.Hash != audit.Genesis {
			t.Fatalf("anchor before pruning: %+v %v", a, err)
		}
		// Entries 1-4 are older than now+4h; at most 3 at a time.
		n, a, err := s.PruneAudit(ctx, now.Add(4*time.Hour), 3)
		if err != nil || n != 3 || a.Seq != 3 || a.Hash != all[2].Hash {
			t.Fatalf("pruned %d, anchor %+v, %v", n, a, err)
		}
		n, a, err = s.PruneAudit(ctx, now.Add(4*time.Hour), 3)
		if err != nil || n != 1 || a.Seq != 4 || a.Hash != all[3].Hash {
			t.Fatalf("pruned %d, anchor %+v, %v", n, a, err)
		}
		if n, _, _ := s.PruneAudit(ctx, now.Add(4*time.Hour), 3); n != 0 {
			t.Fatalf("pruned %d more", n)
		}
		rest, _ := s.AuditEntries(ctx, 0, 100)
		if len(rest) != 6 || rest[0].Seq != 5 {
			t.Fatalf("%d entries left, first %d", len(rest), rest[0].Seq)
		}
		if err := audit.Verify(&audit.Entry{Seq: a.Seq, Hash: a.Hash}, rest); err != nil {
			t.Fatal(err)
		}
		// Everything is old: the head stays, and appends still chain.
		if n, _, _ := s.PruneAudit(ctx, now.Add(100*time.Hour), 100); n != 5 {
			t.Fatalf("pruned %d of 6", n)
		}
		if _, err := s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "admin", Action: "y", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		a, _ = s.AuditAnchor(ctx)
		rest, _ = s.AuditEntries(ctx, 0, 100)
		if a.Seq != 9 || len(rest) != 2 || audit.Verify(&audit.Entry{Seq: a.Seq, Hash: a.Hash}, rest) != nil {
			t.Fatalf("anchor %+v, %d entries", a, len(rest))
		}
	})
	t.Run("AuditRawIsBoundedByBytes", func(t *testing.T) {
		s := open(t)
		for range 10 {
			s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "admin", Action: "x", Outcome: "ok", Detail: map[string]string{"pad": strings.Repeat("p", 1000)}})
		}
		var sizes []int
		n, err := s.AuditRaw(ctx, 0, 100, 4000, func(seq uint64, raw []byte) error { sizes = append(sizes, len(raw)); return nil })
		if err != nil || n != 3 || len(sizes) != 3 {
			t.Fatalf("%d entries (%v), %v; want 3 within 4000 bytes", n, sizes, err)
		}
		// One entry always passes, so a page always moves forward.
		if n, _ := s.AuditRaw(ctx, 9, 100, 1, func(uint64, []byte) error { return nil }); n != 1 {
			t.Fatalf("%d entries past a tiny bound", n)
		}
		if n, _ := s.AuditRaw(ctx, 0, 4, 1<<20, func(uint64, []byte) error { return nil }); n != 4 {
			t.Fatalf("%d entries with limit 4", n)
		}
	})
	t.Run("ChunkBlobs", func(t *testing.T) {
		s := open(t)
		s.PutChunks(ctx, []store.ChunkRef{{Hash: "c1", Blob: "b1", Length: 1}, {Hash: "c2", Blob: "b1", Offset: 1, Length: 1}, {Hash: "c3", Blob: "b2", Length: 1}})
		bs, err := s.ChunkBlobs(ctx)
		if err != nil || fmt.Sprint(bs) != "[b1 b2]" && fmt.Sprint(bs) != "[b2 b1]" {
			t.Fatalf("%v %v", bs, err)
		}
	})
	t.Run("RevokedKeys", func(t *testing.T) {
		s := open(t)
		if ks, err := s.RevokedKeys(ctx); err != nil || len(ks) != 0 {
			t.Fatalf("%v %v", ks, err)
		}
		k := store.RevokedKey{KeyID: "ab12", Kind: "release-signer", Reason: "laptop stolen", RevokedBy: "token:ops", RevokedAt: now}
		if err := s.RevokeKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		is(t, s.RevokeKey(ctx, k), store.ErrExists)
		s.RevokeKey(ctx, store.RevokedKey{KeyID: "00ff", Kind: "online", RevokedAt: now.Add(time.Second)})
		ks, err := s.RevokedKeys(ctx)
		if err != nil || len(ks) != 2 || ks[0] != k || ks[1].KeyID != "00ff" {
			t.Fatalf("oldest first: %+v %v", ks, err)
		}
	})
	t.Run("FleetStats", func(t *testing.T) {
		s := open(t)
		for i, v := range []string{"", "1.0.0", "1.0.0", "2.0.0", "2.0.0"} {
			id := fmt.Sprintf("dev-%d", i)
			s.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now})
			if v != "" {
				sv := uint64(1)
				if v == "2.0.0" {
					sv = 2
				}
				if err := s.RecordReport(ctx, id, store.Report{Counter: 1, Status: "installed", Installed: true, Version: v, SecurityVersion: sv, At: now}); err != nil {
					t.Fatal(err)
				}
			}
		}
		s.RevokeDevice(ctx, "dev-4", now) // revoked devices are not counted
		c, err := s.DeviceCounts(ctx)
		if err != nil || c.Devices != 4 || c.ByVersion[""] != 1 || c.ByVersion["1.0.0"] != 2 || c.ByVersion["2.0.0"] != 1 ||
			c.BySecurityVersion[0] != 1 || c.BySecurityVersion[1] != 2 || c.BySecurityVersion[2] != 1 {
			t.Fatalf("%+v %v", c, err)
		}

		// Refusals are counted by class, whatever else the device reports.
		s.RecordReport(ctx, "dev-0", store.Report{Counter: 2, Status: "verification-refused", Reason: "rollback", Refusal: "rollback", At: now})
		s.RecordReport(ctx, "dev-0", store.Report{Counter: 3, Status: "verification-refused", Reason: "rollback", Refusal: "rollback", At: now})
		s.RecordReport(ctx, "dev-1", store.Report{Counter: 2, Status: "verification-refused", Reason: "bad-signature", Refusal: "bad-signature", At: now})
		s.RecordReport(ctx, "dev-1", store.Report{Counter: 3, Status: "failed", Reason: "network", At: now})
		r, err := s.RefusalCounts(ctx)
		if err != nil || len(r) != 2 || r["rollback"] != 2 || r["bad-signature"] != 1 {
			t.Fatalf("%v %v", r, err)
		}

		// Rollout outcomes, per rollout and in all; install times of the
		// latest installs first.
		put := func(ro, dev, st string, offered, updated time.Duration, failures int, reason string) {
			t.Helper()
			if err := s.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: ro, DeviceID: dev, Status: st, OfferedAt: now.Add(offered), Failures: failures,
				Reason: reason, UpdatedAt: now.Add(updated)}); err != nil {
				t.Fatal(err)
			}
		}
		put("r-a", "dev-0", "installed", 0, 10*time.Second, 0, "")
		put("r-a", "dev-1", "installed", 0, 30*time.Second, 1, "health")
		put("r-a", "dev-2", "rolled-back", 0, time.Second, 1, "health")
		put("r-a", "dev-3", "refused", 0, time.Second, 0, "rollback")
		put("r-b", "dev-0", "installed", time.Minute, 2*time.Minute, 0, "")
		put("r-b", "dev-1", "downloading", time.Minute, time.Minute, 0, "")
		st, err := s.RolloutStats(ctx, "r-a", 10)
		if err != nil || st.Installed != 2 || st.Failures != 2 || len(st.Refusals) != 1 || st.Refusals["rollback"] != 1 ||
			fmt.Sprint(st.InstallTimes) != "[30s 10s]" {
			t.Fatalf("%+v %v", st, err)
		}
		st, err = s.RolloutStats(ctx, "", 2)
		if err != nil || st.Installed != 3 || st.Failures != 2 || fmt.Sprint(st.InstallTimes) != "[1m0s 30s]" {
			t.Fatalf("every rollout, 2 install times: %+v %v", st, err)
		}
		if st, err := s.RolloutStats(ctx, "nope", 10); err != nil || st.Installed != 0 || len(st.InstallTimes) != 0 {
			t.Fatalf("%+v %v", st, err)
		}

		// Assignments by target.
		s.Assign(ctx, "p/2.0.0/f", []string{"dev-3", "dev-1", "dev-2"}, now)
		s.Assign(ctx, "p/1.0.0/f", []string{"dev-0"}, now)
		ids, err := s.AssignedDevices(ctx, "p/2.0.0/f", "", 2)
		if err != nil || fmt.Sprint(ids) != "[dev-1 dev-2]" {
			t.Fatalf("%v %v", ids, err)
		}
		if ids, _ := s.AssignedDevices(ctx, "p/2.0.0/f", "dev-2", 2); fmt.Sprint(ids) != "[dev-3]" {
			t.Fatalf("after dev-2: %v", ids)
		}
		// With their facts, revoked devices (dev-4) left out.
		s.Assign(ctx, "p/2.0.0/f", []string{"dev-4"}, now)
		s.SetDeviceTags(ctx, "dev-2", map[string]string{"site": "lab"}, nil)
		fs, err := s.AssignedDeviceFacts(ctx, "p/2.0.0/f", "", 2)
		if err != nil || len(fs) != 2 || fs[0].ID != "dev-1" || fs[0].Version != "1.0.0" || fs[0].SecurityVersion != 1 || fs[0].HardwareID != "hw" ||
			fs[1].ID != "dev-2" || fs[1].Tags["site"] != "lab" {
			t.Fatalf("%+v %v", fs, err)
		}
		if fs, err := s.AssignedDeviceFacts(ctx, "p/2.0.0/f", "dev-2", 2); err != nil || len(fs) != 1 || fs[0].ID != "dev-3" {
			t.Fatalf("after dev-2: %+v %v", fs, err)
		}

		// Recoveries: one open per device; closing one that is not
		// open is not an error.
		if err := s.OpenRecoveries(ctx, []string{"dev-0", "dev-1"}, "r-a", now); err != nil {
			t.Fatal(err)
		}
		s.OpenRecoveries(ctx, []string{"dev-0", "dev-2"}, "", now.Add(time.Minute)) // dev-0 has one open: kept
		if ok, err := s.CloseRecovery(ctx, "dev-0", now.Add(10*time.Minute)); err != nil || !ok {
			t.Fatalf("%v %v", ok, err)
		}
		if ok, err := s.CloseRecovery(ctx, "dev-0", now.Add(20*time.Minute)); err != nil || ok {
			t.Fatalf("closed twice: %v %v", ok, err)
		}
		s.CloseRecovery(ctx, "dev-2", now.Add(3*time.Minute))
		rs, err := s.RecoveryStats(ctx, "")
		if err != nil || rs.Closed != 2 || rs.Total != 12*time.Minute || rs.Open != 1 {
			t.Fatalf("%+v %v", rs, err)
		}
		if rs, _ := s.RecoveryStats(ctx, "r-a"); rs.Closed != 1 || rs.Total != 10*time.Minute || rs.Open != 1 {
			t.Fatalf("of r-a: %+v", rs)
		}
		// A device may fail again after it recovered.
		s.OpenRecoveries(ctx, []string{"dev-0"}, "r-b", now.Add(time.Hour))
		if rs, _ := s.RecoveryStats(ctx, "r-b"); rs.Open != 1 {
			t.Fatalf("of r-b: %+v", rs)
		}
	})

	t.Run("Leases", func(t *testing.T) {
		s := open(t)
		lease := func(name, holder string, ttl time.Duration) (bool, string) {
			t.Helper()
			st, err := s.Lease(ctx, name, holder, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return st.Held, st.Owner
		}
		if held, owner := lease("work", "a", time.Hour); !held || owner != "a" {
			t.Fatalf("a free lease: held %v by %q", held, owner)
		}
		if held, owner := lease("work", "b", time.Hour); held || owner != "a" {
			t.Fatalf("b took a's unexpired lease: held %v, owner %q", held, owner)
		}
		// Renewal by the holder; leases are independent by name.
		if held, _ := lease("work", "a", time.Hour); !held {
			t.Fatal("the holder cannot renew")
		}
		if held, _ := lease("push", "b", time.Hour); !held {
			t.Fatal("another lease's name is not free")
		}
		// Releasing by a non-holder changes nothing; by the holder frees it.
		if err := s.ReleaseLease(ctx, "work", "b"); err != nil {
			t.Fatal(err)
		}
		if held, _ := lease("work", "b", time.Hour); held {
			t.Fatal("a non-holder released the lease")
		}
		if err := s.ReleaseLease(ctx, "work", "a"); err != nil {
			t.Fatal(err)
		}
		if held, owner := lease("work", "b", 150*time.Millisecond); !held || owner != "b" {
			t.Fatalf("a released lease: held %v by %q", held, owner)
		}
		// Expiry: a holder that stops renewing loses the lease after ttl
		// and not before.
		if held, _ := lease("work", "a", time.Hour); held {
			t.Fatal("taken before expiry")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if held, _ := lease("work", "a", time.Hour); held {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("an expired lease is never free")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if held, owner := lease("work", "b", time.Hour); held || owner != "a" {
			t.Fatalf("after the takeover: held %v by %q", held, owner)
		}
	})

	t.Run("LeaseHasOneHolderUnderConcurrency", func(t *testing.T) {
		s := open(t)
		const n = 16
		var won atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := s.Lease(ctx, "work", fmt.Sprintf("r%d", i), time.Hour)
				if err != nil {
					t.Error(err)
				}
				if st.Held {
					won.Add(1)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("%d of %d concurrent callers hold the lease, want 1", won.Load(), n)
		}
	})

	// Each term of a lease has a larger token than the last; renewals
	// keep it, whoever takes the lease next and however it came free.
	t.Run("LeaseTermTokens", func(t *testing.T) {
		s := open(t)
		take := func(holder string, ttl time.Duration) int64 {
			t.Helper()
			st, err := s.Lease(ctx, "work", holder, ttl)
			if err != nil || !st.Held || st.Owner != holder || st.Token <= 0 {
				t.Fatalf("%s taking the lease: %+v, %v", holder, st, err)
			}
			return st.Token
		}
		t1 := take("a", time.Hour)
		if got := take("a", time.Hour); got != t1 {
			t.Fatalf("a renewal moved the token from %d to %d", t1, got)
		}
		if st, _ := s.Lease(ctx, "work", "b", time.Hour); st.Held || st.Token != 0 {
			t.Fatalf("b refused: %+v", st)
		}
		s.ReleaseLease(ctx, "work", "a")
		t2 := take("b", time.Hour)
		s.ReleaseLease(ctx, "work", "b")
		t3 := take("a", 100*time.Millisecond)
		time.Sleep(200 * time.Millisecond)
		t4 := take("a", time.Hour) // its own term expired: a new one
		if !(t1 < t2 && t2 < t3 && t3 < t4) {
			t.Fatalf("tokens %d, %d, %d, %d: want each term's larger than the last", t1, t2, t3, t4)
		}
	})

	// A write fenced with a lease term commits only while that term
	// lasts: with another term's token, another holder, token 0, after
	// the term expired or passed to another, it fails with ErrFenced and
	// writes nothing.
	t.Run("FencedWrites", func(t *testing.T) {
		s := open(t)
		st, err := s.Lease(ctx, "work", "a", time.Hour)
		if err != nil || !st.Held {
			t.Fatal(st, err)
		}
		doc := func(v int64) store.Doc {
			return store.Doc{Repo: "image", Role: "fenced", Version: v, Data: []byte(fmt.Sprint(v))}
		}
		written := func(v int64) bool {
			_, err := s.Doc(ctx, "image", "fenced", v)
			return err == nil
		}
		fenced := func(holder string, token int64) context.Context {
			return store.WithFence(ctx, store.Fence{Lease: "work", Holder: holder, Token: token})
		}
		if err := s.PutDocs(fenced("a", st.Token), doc(1)); err != nil {
			t.Fatalf("a write in the term: %v", err)
		}
		if err := s.Atomic(fenced("a", st.Token), func(tx store.Tx) error { return tx.PutDocs(ctx, doc(2)) }); err != nil {
			t.Fatalf("an Atomic write in the term: %v", err)
		}
		v := int64(10)
		for _, f := range []store.Fence{{Lease: "work", Holder: "a", Token: st.Token + 1}, {Lease: "work", Holder: "b", Token: st.Token}, {Lease: "work", Holder: "a"}, {Lease: "other", Holder: "a", Token: st.Token}} {
			v++
			is(t, s.PutDocs(store.WithFence(ctx, f), doc(v)), store.ErrFenced)
			ran := false
			is(t, s.Atomic(store.WithFence(ctx, f), func(tx store.Tx) error { ran = true; return tx.PutDocs(ctx, doc(v+100)) }), store.ErrFenced)
			if ran || written(v) || written(v+100) {
				t.Fatalf("fence %+v: wrote (Atomic's function ran: %v)", f, ran)
			}
		}
		// The term passes to b: a's fence no longer writes, b's does.
		s.ReleaseLease(ctx, "work", "a")
		stb, err := s.Lease(ctx, "work", "b", time.Hour)
		if err != nil || !stb.Held {
			t.Fatal(stb, err)
		}
		is(t, s.PutDocs(fenced("a", st.Token), doc(20)), store.ErrFenced)
		if err := s.PutDocs(fenced("b", stb.Token), doc(21)); err != nil {
			t.Fatalf("b's write in its term: %v", err)
		}
		// A term that expired, though no one took the lease.
		stc, err := s.Lease(ctx, "short", "c", 100*time.Millisecond)
		if err != nil || !stc.Held {
			t.Fatal(stc, err)
		}
		time.Sleep(200 * time.Millisecond)
		is(t, s.PutDocs(store.WithFence(ctx, store.Fence{Lease: "short", Holder: "c", Token: stc.Token}), doc(22)), store.ErrFenced)
		if !written(1) || !written(2) || written(20) || !written(21) || written(22) {
			t.Fatal("the fenced writes that committed are not those that should have")
		}
	})

	// A new term does not begin while a write fenced with the current
	// term is open, even after the term's expiry: the old holder's
	// writes commit before the new holder's term begins, never after.
	t.Run("NewTermWaitsForFencedWrite", func(t *testing.T) {
		s := open(t)
		// The TTL leaves a loaded machine time to begin the write in the
		// term; the write then stays open well past it.
		st, err := s.Lease(ctx, "work", "a", 600*time.Millisecond)
		if err != nil || !st.Held {
			t.Fatal(st, err)
		}
		fctx := store.WithFence(ctx, store.Fence{Lease: "work", Holder: "a", Token: st.Token})
		started := make(chan struct{})
		var bHeld atomic.Bool
		bDone := make(chan store.LeaseState, 1)
		go func() {
			<-started
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				st, err := s.Lease(ctx, "work", "b", time.Hour)
				if err == nil && st.Held {
					bHeld.Store(true)
					bDone <- st
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			bDone <- store.LeaseState{}
		}()
		err = s.Atomic(fctx, func(tx store.Tx) error {
			close(started)
			if err := tx.PutDocs(ctx, store.Doc{Repo: "image", Role: "fenced", Version: 1, Data: []byte("1")}); err != nil {
				return err
			}
			time.Sleep(1200 * time.Millisecond) // the term expires meanwhile
			if bHeld.Load() {
				t.Error("b began a term while a's fenced write was open")
			}
			return tx.PutDocs(ctx, store.Doc{Repo: "image", Role: "fenced", Version: 2, Data: []byte("2")})
		})
		if err != nil {
			t.Fatalf("the fenced write, begun in its term: %v", err)
		}
		stb := <-bDone
		if !stb.Held || stb.Token <= st.Token {
			t.Fatalf("b after a's write: %+v (a's token %d)", stb, st.Token)
		}
		is(t, s.PutDocs(fctx, store.Doc{Repo: "image", Role: "fenced", Version: 3, Data: []byte("3")}), store.ErrFenced)
		for v, want := range map[int64]bool{1: true, 2: true, 3: false} {
			if _, err := s.Doc(ctx, "image", "fenced", v); (err == nil) != want {
				t.Errorf("version %d written: %v, want %v", v, err == nil, want)
			}
		}
	})
}
