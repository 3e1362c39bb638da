package server_test

import (
	"crypto"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

func keyID(t *testing.T, s keys.Signer) string {
	t.Helper()
	id, err := keys.ID(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// incidentEnv publishes 1.0.0 (security version 1) and 1.1.0 (2), both
// signed with e.Rel, then adds a second release signer, rel2, which
// alone signs 2.0.0 (security version 2, also for other-hw).
func incidentEnv(t *testing.T) (*fleetEnv, keys.Signer) {
	clk := &clock{t: time.Now().UTC()}
	e := &fleetEnv{Env: servertest.New(t, servertest.WithNow(clk.Now)), t: t, clk: clk, devs: map[string]*http.Client{}, counter: map[string]int{}}
	e.Release("1.0.0", 1, rolloutHW)
	e.Release("1.1.0", 2, rolloutHW)
	s, err := keys.Generate(keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	rel2 := keys.InMemory(s)
	if err := e.Repo.Rotate(servertest.Product, offlinerepo.RotateOptions{Add: []crypto.PublicKey{rel2.Public()}, Remove: []string{keyID(t, e.Rel)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.Sign("targets", e.TargetsKey); err != nil {
		t.Fatal(err)
	}
	e.Rel = rel2 // ReleaseImage signs the product role with e.Rel
	e.Release("2.0.0", 2, rolloutHW, "other-hw")
	return e, rel2
}

func (e *fleetEnv) revoke(token string, req api.RevokeKeyRequest, want int) api.KeyRevoked {
	e.t.Helper()
	var out api.KeyRevoked
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", token, req, want), &out)
	return out
}

func (e *fleetEnv) stats() api.FleetStats {
	e.t.Helper()
	var out api.FleetStats
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/fleet/stats", e.Admin, nil, 200), &out)
	return out
}

func refusedWith(t *testing.T, b []byte, code api.Code, msg string) {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code != code || !strings.Contains(eb.Error.Message, msg) {
		t.Fatalf("%s, want %s containing %q", b, code, msg)
	}
}

// The key revocation drill: a rollout of a release signed with a leaked
// key is halted mid-phase (aborted, never resumed), devices in flight
// are not handed it any more, the release is marked, and redeploy puts
// the previous release back on every device it reached, or says why it
// cannot. Devices that confirm the good release end their recovery
// (mttr), and the fleet statistics say so.
func TestIncidentRevokeKeyDrill(t *testing.T) {
	e, rel2 := incidentEnv(t)
	leaked := keyID(t, rel2)
	fleetIDs := ids("gw", 40)
	e.enroll(fleetIDs...)
	for _, id := range fleetIDs { // they shipped with 1.1.0
		e.report(id, api.Installed, "", "1.1.0", 2)
	}
	e.devs["odd-1"] = e.Client(e.Enroll("odd-1", "other-hw"))

	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "50%,100%", Soak: "1h", MinSuccess: 1, MaxFailureRate: "50%"})
	var in []string
	for _, id := range fleetIDs {
		if e.checkIn(id) != "" {
			in = append(in, id)
		}
	}
	if len(in) < 6 {
		t.Fatalf("only %d devices in the first phase", len(in))
	}
	installed, inFlight := in[:len(in)/2], in[len(in)/2:]
	for _, id := range installed {
		e.clk.Add(time.Minute)
		e.install(id)
	}
	// odd-1 installed 2.0.0 by a plain deploy.
	e.Deploy("acme-gw/2.0.0", "other-hw")
	e.counter["odd-1"]++
	e.Call(e.devs["odd-1"], "POST", "/api/v1/device/report", "", api.ReportRequest{Counter: int64(e.counter["odd-1"]), Status: api.Installed, Version: "2.0.0", SecurityVersion: 2}, 204)
	// A tamper detection: a refusal, not a failure.
	e.report(inFlight[0], api.VerificationRefused, "rollback", "", 0)
	if r := e.show(c.ID); r.State != "running" || r.Phase != 1 || r.Counts.Installed != len(installed) || r.Stats == nil ||
		*r.Stats.UpdateSuccessRate != 1 || r.Stats.TamperDetections["rollback"] != 1 || *r.Stats.TimeToInstallP50 < 60 {
		t.Fatalf("before: %+v %+v", r, r.Stats)
	}

	// Bad input first: each a precise 4xx, nothing revoked.
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", e.Admin, api.RevokeKeyRequest{KeyID: "XYZ", Reason: "x"}, 400), api.BadKeyID, "16-128 lowercase hex")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", e.Admin, api.RevokeKeyRequest{KeyID: leaked}, 400), api.NoReason, "give the reason")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", e.Admin, api.RevokeKeyRequest{KeyID: leaked, Reason: strings.Repeat("x", 300)}, 400), api.BadReason, "more than 256")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", e.Admin, api.RevokeKeyRequest{KeyID: strings.Repeat("ab", 32), Reason: "x"}, 404), api.UnknownKey, "no key abab")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw/2.0.0", AffectedBy: leaked}, 409), api.KeyNotRevoked, "revoke it first")
	var aud struct{ Token string }
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/tokens", e.Admin, api.TokenRequest{Name: "aud", Role: "auditor"}, 201), &aud)
	e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", aud.Token, api.RevokeKeyRequest{KeyID: leaked, Reason: "x"}, 403)
	e.Call(e.Pool, "GET", "/api/v1/fleet/stats", aud.Token, nil, 200)

	// The drill.
	e.clk.Add(time.Minute)
	out := e.revoke(e.Admin, api.RevokeKeyRequest{KeyID: leaked, Reason: "signing laptop stolen"}, 200)
	if out.Kind != "release-signer" || out.Role != "acme-gw" || !slices.Equal(out.HaltedRollouts, []string{c.ID}) ||
		!slices.Equal(out.Releases, []string{"acme-gw/2.0.0/fw.img"}) || len(out.RotationSteps) == 0 ||
		!strings.Contains(out.RotationSteps[0], "rampart repo rotate repo acme-gw --remove-key "+leaked) {
		t.Fatalf("%+v", out)
	}
	running, assigned := 0, 0
	for _, d := range out.Devices {
		if d.Running != "" {
			running++
		} else if d.Assigned != "" {
			assigned++
		}
	}
	if running != len(installed)+1 || assigned != len(inFlight) {
		t.Fatalf("%d running, %d assigned: %+v", running, assigned, out.Devices)
	}
	r := e.show(c.ID)
	if r.State != "aborted" || !strings.Contains(r.PausedReason, "key "+leaked+" that signed the release was revoked: signing laptop stolen") {
		t.Fatalf("%+v", r)
	}
	// Halted at once: nothing more is handed out, in flight or not.
	for _, id := range append(inFlight, fleetIDs...) {
		if got := e.checkIn(id); got != "" && !slices.Contains(installed, id) {
			t.Fatalf("%s is still assigned %s", id, got)
		}
	}
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/resume", e.Admin, nil, 409), api.RolloutState, "is aborted")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/rollouts", e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"}, 422), api.RevokedRelease, "signed with revoked key "+leaked)
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/deploy", e.Admin, api.DeployRequest{Target: "acme-gw/2.0.0", Hardware: rolloutHW}, 422), api.RevokedRelease, "never offered again")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/revoke-key", e.Admin, api.RevokeKeyRequest{KeyID: leaked, Reason: "again"}, 409), api.KeyAlreadyRevoked, "already revoked")
	var rels api.ReleaseList
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/releases", e.Admin, nil, 200), &rels)
	for _, rl := range rels.Releases {
		if rl.RevokedKey != (rl.Version == "2.0.0") || len(rl.SignedBy) != 1 {
			t.Fatalf("%+v", rl)
		}
	}

	// Redeploy: bad input, then the previous release back.
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw", AffectedBy: leaked}, 400), api.BadTarget, "not PRODUCT/VERSION")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw/9.9.9", AffectedBy: leaked}, 404), api.UnknownRelease, "no published release")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw/1.1.0", AffectedBy: leaked}, 422), api.NotSignedByKey, "was not signed with key")
	refusedWith(t, e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw/2.0.0", AffectedBy: "00"}, 400), api.BadKeyID, "lowercase hex")
	var rd api.Redeployed
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/incidents/redeploy", e.Admin, api.RedeployRequest{Release: "acme-gw/2.0.0", AffectedBy: leaked}, 200), &rd)
	if rd.Release != "acme-gw/2.0.0/fw.img" || rd.Assigned != len(installed) || rd.Unchanged != 1 {
		t.Fatalf("%+v", rd)
	}
	for _, d := range rd.Devices {
		switch {
		case d.ID == "odd-1":
			if d.Assigned != "" || !strings.Contains(d.Note, "no release of acme-gw older than 2.0.0 for hardware other-hw at or above its security version 2") {
				t.Fatalf("%+v", d)
			}
		case d.Assigned != "acme-gw/1.1.0/fw.img":
			t.Fatalf("%+v", d)
		}
	}
	e.clk.Add(10 * time.Minute)
	for _, id := range installed {
		if got := e.checkIn(id); got != "acme-gw/1.1.0/fw.img" {
			t.Fatalf("%s: assigned %q", id, got)
		}
		e.report(id, api.Installed, "", "1.1.0", 2)
	}

	st := e.stats()
	if st.Devices != 41 || st.ByVersion["1.1.0"] != 40 || st.ByVersion["2.0.0"] != 1 || st.BySecurityVersion["2"] != 41 ||
		st.MTTR == nil || *st.MTTR != 600 || st.TamperDetections["rollback"] != 1 || st.TamperDetections["bad-signature"] != 0 ||
		st.UpdateSuccessRate == nil || *st.UpdateSuccessRate != 1 || st.TimeToInstallP95 == nil {
		t.Fatalf("%+v", st)
	}
	// Prometheus: the same, without a device in any label.
	m := string(e.Call(e.Pool, "GET", "/metrics", e.Admin, nil, 200))
	for _, want := range []string{`rampart_fleet_devices 41`, `rampart_fleet_devices_by_version{version="1.1.0"} 40`, `rampart_fleet_mttr_seconds 600`,
		`rampart_fleet_tamper_detections_total{class="rollback"} 1`, `rampart_fleet_devices_by_security_version{security_version="2"} 41`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if regexp.MustCompile(`(gw-0|odd-1)`).MatchString(m) {
		t.Error("/metrics names a device")
	}
	// Audited.
	b := string(e.Call(e.Pool, "GET", "/api/v1/audit", e.Admin, nil, 200))
	for _, a := range []string{`"action":"revoke-key"`, `"action":"redeploy"`, `"action":"abort-rollout"`} {
		if !strings.Contains(b, a) {
			t.Errorf("no %s audit entry", a)
		}
	}
}

// An online key is recognised (no release is signed with it: nothing
// halts) and its rotation steps are those of the server's online keys.
func TestIncidentRevokeOnlineKey(t *testing.T) {
	e := newFleetEnv(t)
	var k api.Keys
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/keys", e.Admin, nil, 200), &k)
	pub, err := keys.ParsePublic([]byte(k.Snapshot))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := keys.ID(pub)
	out := e.revoke(e.Admin, api.RevokeKeyRequest{KeyID: id, Reason: "server compromised"}, 200)
	if out.Kind != "online" || out.Role != "snapshot" || len(out.Releases) != 0 || len(out.HaltedRollouts) != 0 ||
		!strings.Contains(strings.Join(out.RotationSteps, "\n"), "rampart-server rotate-keys --data DATA --image") {
		t.Fatalf("%+v", out)
	}
	root := keyID(t, e.RootKey)
	if out := e.revoke(e.Admin, api.RevokeKeyRequest{KeyID: root, Reason: "lost"}, 200); out.Kind != "root" {
		t.Fatalf("%+v", out)
	}
}
