package sim_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/sim"
)

// The key revocation drill with the real agent: 20 simulated devices run
// 1.0.0 (signed with the first release signer); the signer is rotated
// to rel2, which alone signs 2.0.0; a rollout of 2.0.0 in two phases
// installs it on the first phase's devices; rel2 leaks. revoke-key
// halts the rollout mid-phase (the second phase never starts), and
// redeploy puts 1.0.0 back: the devices that ran 2.0.0 install 1.0.0
// again, verified by the real agent, and the rest never leave it.
func TestIncidentDrillRealAgents(t *testing.T) {
	e, ca := publishedServer(t)
	const n = 20
	s, err := sim.New(sim.Config{Server: e.TS.URL, CA: ca, Token: e.Admin, Devices: n, Hardware: hw,
		Poll: 200 * time.Millisecond, Workers: 8, SlotSize: 64 << 10, Dir: t.TempDir(), Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failed := make(chan error, 1)
	done := make(chan *sim.Report, 1)
	go func() {
		r, err := s.Run(ctx)
		if err != nil {
			failed <- err
		}
		done <- r
	}()
	defer func() { s.Stop(); <-done }()
	waitFor(t, s, failed, "every device enrolled", 3*time.Minute, func(r *sim.Report) bool { return r.ByState[sim.StateIdle] == n })
	image := func() []byte {
		b := make([]byte, 30<<10+1)
		rand.Read(b)
		return b
	}
	e.ReleaseImage("1.0.0", 1, image(), hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	waitFor(t, s, failed, "every device on 1.0.0", 3*time.Minute, func(r *sim.Report) bool { return r.ByRelease["1.0.0"] == n })

	// A second signer takes over; it alone signs 2.0.0.
	k, err := keys.Generate(keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	rel2 := keys.InMemory(k)
	old, _ := keys.ID(e.Rel.Public())
	leaked, _ := keys.ID(rel2.Public())
	if err := e.Repo.Rotate(servertest.Product, offlinerepo.RotateOptions{Add: []crypto.PublicKey{rel2.Public()}, Remove: []string{old}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.Sign("targets", e.TargetsKey); err != nil {
		t.Fatal(err)
	}
	e.Rel = rel2
	e.ReleaseImage("2.0.0", 1, image(), hw)
	var c api.RolloutCreated
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/rollouts", e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "50%,100%", Soak: "1h", MinSuccess: 1}, 201), &c)
	r := waitFor(t, s, failed, "the first phase on 2.0.0", 3*time.Minute, func(r *sim.Report) bool {
		var ro api.Rollout
		json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/rollouts/"+c.ID, e.Admin, nil, 200), &ro)
		return ro.Counts.Installed > 0 && ro.Counts.Installed == ro.Eligible && r.ByRelease["2.0.0"] == ro.Eligible
	})
	on2 := r.ByRelease["2.0.0"]
	if on2 == 0 || on2 == n {
		t.Fatalf("%d devices on 2.0.0 in the first phase", on2)
	}

	var out api.KeyRevoked
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", e.Admin, api.RevokeKeyRequest{KeyID: leaked, Reason: "drill"}, 200), &out)
	if len(out.HaltedRollouts) != 1 || len(out.Devices) != on2 {
		t.Fatalf("%+v", out)
	}
	var rd api.Redeployed
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw/2.0.0", AffectedBy: leaked}, 200), &rd)
	if rd.Assigned != on2 || rd.Unchanged != 0 {
		t.Fatalf("%+v", rd)
	}
	waitFor(t, s, failed, "every device back on 1.0.0", 3*time.Minute, func(r *sim.Report) bool { return r.ByRelease["1.0.0"] == n })
	// The second phase never started, the devices confirmed 1.0.0 to the
	// server, and their recoveries ended.
	var ro api.Rollout
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/rollouts/"+c.ID, e.Admin, nil, 200), &ro)
	if ro.State != "aborted" || ro.Phase != 1 || !strings.Contains(ro.PausedReason, "revoked: drill") {
		t.Fatalf("%+v", ro)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var st api.FleetStats
		json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/fleet/stats", e.Admin, nil, 200), &st)
		if st.ByVersion["1.0.0"] == n && st.MTTR != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := s.Snapshot(); r.Errors > 0 {
		t.Fatalf("errors: %v", r.ErrorSamples)
	}
}
