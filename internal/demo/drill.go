package demo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/keys"
)

// The key revocation drill's releases: the hotfix signed with the key
// that leaks, and the last known-good release redeploy puts back (the
// newest older release signed with no revoked key).
const (
	drillVersion = "1.1.1"
	goodVersion  = "1.1.0"
	leakedSigner = "rel-b"
	drillReason  = "demo drill: rel-b's laptop was reported stolen"
)

// drillSelector picks the simulated devices still on 1.1.0 (those 1.2.0
// did not reach, and those it rolled back).
const drillSelector = simSelector + ` && version == "` + goodVersion + `"`

// revocationDrill is step 7: a hotfix 1.1.1, signed by rel-a and rel-b,
// reaches the first phase of its rollout; then rel-b leaks. Revoking it
// (rampart incident revoke-key) aborts the rollout, lists the devices
// that run 1.1.1 and the offline rotation steps, and refuses 1.1.1 from
// then on; redeploy (rampart incident redeploy) puts 1.1.0 back on those
// devices, and the demo waits until every one of them has confirmed its
// boot of 1.1.0 again: the time to recover.
func revocationDrill(ctx context.Context, d *Demo) error {
	if err := d.releaseSignedBy(ctx, drillVersion, 48<<10, "rel-a", leakedSigner); err != nil {
		return err
	}
	first := d.firstPhase()
	phases := fmt.Sprintf("%d,100%%", first)
	// A long soak holds the rollout in its first phase: the key leaks
	// while the hotfix has reached part of the fleet.
	ro, err := d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/" + drillVersion, Select: drillSelector, Phases: phases,
		Soak: "1h", MaxFailureRate: "10%"})
	if err != nil {
		return fmt.Errorf("rollout of %s: %w", drillVersion, err)
	}
	d.say("A hotfix %s for the devices still on %s: rampart rollout create %s/%s --select '%s' --phases %s --soak 1h",
		drillVersion, goodVersion, Product, drillVersion, drillSelector, phases)
	t0 := time.Now()
	var r api.Rollout
	var on []string
	err = d.waitFor(ctx, "the first phase of "+drillVersion+" installing it", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.fleet); err != nil {
			return "", false, err
		}
		if r, err = d.api.Rollout(ctx, ro.ID); err != nil {
			return "", false, err
		}
		if r.State != api.RolloutRunning || r.Phase != 1 {
			return "", false, fmt.Errorf("the rollout of %s is %s in phase %d, not running in phase 1", drillVersion, r.State, r.Phase)
		}
		ds, err := d.devices(ctx)
		if err != nil {
			return "", false, err
		}
		on = on[:0]
		for _, s := range ds {
			if s.Version == drillVersion && s.State == string(api.Installed) {
				on = append(on, s.ID)
			}
		}
		line := fmt.Sprintf("phase 1: %d/%d devices run %s", len(on), r.Eligible, drillVersion)
		return line, r.Eligible > 0 && r.Counts.Installed == r.Eligible && len(on) == r.Eligible, nil
	})
	if err != nil {
		return err
	}
	if len(on) >= d.cfg.Devices {
		return fmt.Errorf("%s reached the whole fleet (%d devices), not a part of it", drillVersion, len(on))
	}
	d.rollouts = append(d.rollouts, rolloutRun{release: drillVersion, id: ro.ID, took: time.Since(t0)})
	d.say("Phase 1 done: %d devices run %s; the rest wait for the soak to end.", len(on), drillVersion)

	id, err := keys.ID(d.signers[leakedSigner].Public())
	if err != nil {
		return err
	}
	d.say("Then %s's holder reports the laptop holding it stolen. The key signed %s: revoke it now.", leakedSigner, drillVersion)
	d.say("rampart incident revoke-key %s --reason %q", id, drillReason)
	t0 = time.Now()
	rv, err := d.api.RevokeKey(ctx, id, drillReason)
	if err != nil {
		return fmt.Errorf("rampart incident revoke-key: %w", err)
	}
	target := Product + "/" + drillVersion + "/fw.img"
	switch {
	case rv.Kind != fleet.KindReleaseSigner || rv.Role != Product:
		return fmt.Errorf("revoke-key took %s for a %s key of role %q, not a release signer of %s", leakedSigner, rv.Kind, rv.Role, Product)
	case !slices.Equal(rv.Releases, []string{target}):
		return fmt.Errorf("revoke-key marked releases %v, want only %s", rv.Releases, target)
	case !slices.Equal(rv.HaltedRollouts, []string{ro.ID}):
		return fmt.Errorf("revoke-key halted rollouts %v, want only %s", rv.HaltedRollouts, ro.ID)
	case len(rv.RotationSteps) == 0:
		return errors.New("revoke-key printed no offline rotation steps")
	}
	running := map[string]bool{}
	for _, a := range rv.Devices {
		if a.Running == target {
			running[a.ID] = true
		}
	}
	for _, id := range on {
		if !running[id] {
			return fmt.Errorf("revoke-key did not list %s, which runs %s, among the affected devices (%d listed)", id, drillVersion, len(rv.Devices))
		}
	}
	if len(running) != len(on) {
		return fmt.Errorf("revoke-key lists %d devices running %s, but %d run it", len(running), drillVersion, len(on))
	}
	d.say("Key %s (%s of %s) revoked: %s is marked and refused from now on.", short(id), rv.Kind, rv.Role, target)
	if r, err = d.api.Rollout(ctx, ro.ID); err != nil {
		return err
	}
	if r.State != api.RolloutAborted || r.Phase != 1 || !strings.Contains(r.PausedReason, drillReason) {
		return fmt.Errorf("after the revocation the rollout of %s is %s in phase %d (%q), not aborted in phase 1", drillVersion, r.State, r.Phase, r.PausedReason)
	}
	d.say("Rollout %s halted for good: %s (phase 2 never starts).", ro.ID, r.State)
	ids := make([]string, 0, len(rv.Devices))
	for _, a := range rv.Devices {
		ids = append(ids, a.ID)
	}
	d.say("Affected devices (%d, running %s): %s.", len(rv.Devices), drillVersion, list(ids, 8))
	d.say("The offline steps still to do, as revoke-key prints them:")
	for i, s := range rv.RotationSteps {
		d.say("  %d. %s", i+1, s)
	}
	_, err = d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/" + drillVersion, Select: simSelector, Phases: "100%", Soak: "0s"})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != string(api.RevokedRelease) {
		return fmt.Errorf("a new rollout of %s after the revocation: %v, want 422 %s", drillVersion, err, api.RevokedRelease)
	}
	d.say("A new rollout of %s is refused: %d %s.", drillVersion, ae.Status, ae.Code)

	d.say("rampart incident redeploy %s/%s --affected-by %s", Product, drillVersion, id)
	rd, err := d.api.Redeploy(ctx, Product+"/"+drillVersion, id)
	if err != nil {
		return fmt.Errorf("rampart incident redeploy: %w", err)
	}
	good := Product + "/" + goodVersion + "/fw.img"
	if rd.Assigned != len(on) || rd.Unchanged != 0 {
		return fmt.Errorf("redeploy assigned %d devices and left %d unchanged, want %d assigned", rd.Assigned, rd.Unchanged, len(on))
	}
	for _, dv := range rd.Devices {
		if dv.Assigned != good {
			return fmt.Errorf("redeploy assigned %s to %s, not the last known-good %s (%s)", dv.Assigned, dv.ID, good, dv.Note)
		}
	}
	d.say("Redeploy assigned the last known-good release, %s (newest older release signed by no revoked key), to %d devices.", goodVersion, rd.Assigned)
	err = d.waitFor(ctx, "the affected devices running "+goodVersion+" again", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.fleet); err != nil {
			return "", false, err
		}
		back := 0
		for _, id := range on {
			_, dv, err := d.device(ctx, id)
			if err != nil {
				return "", false, err
			}
			if dv.Version == goodVersion && dv.LastStatus == string(api.Installed) {
				back++
			}
		}
		return fmt.Sprintf("%d/%d affected devices back on %s", back, len(on), goodVersion), back == len(on), nil
	})
	if err != nil {
		return err
	}
	d.drillRecover, d.drillAffected = time.Since(t0), len(on)
	d.say("Every affected device confirmed its boot of %s again: recovered %s after the revocation.", goodVersion, d.drillRecover.Round(100*time.Millisecond))
	ds, err := d.devices(ctx)
	if err != nil {
		return err
	}
	if n := count(ds, func(s api.DeviceSummary) bool { return s.Version == drillVersion }); n != 0 {
		return fmt.Errorf("%d devices still run %s", n, drillVersion)
	}
	d.say("No device runs %s any more. Devices stop trusting %s itself once the rotation above is pushed.", drillVersion, leakedSigner)
	return nil
}

// short is a key id as the narration shows it.
func short(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}

// list shows at most n names, then how many more.
func list(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
