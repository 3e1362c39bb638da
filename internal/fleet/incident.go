package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// Incident response: revoking a key and redeploying a known-good
// release.
//
// Which releases a key signed: a release's signers are the keys whose
// signatures on its product role met the threshold when the release was
// first published, as its transparency-log statement records them (a
// release without a log entry takes its role's current signers). A
// release stays what those signers approved: a published release cannot
// change (pushaccept refuses it) and its log entry pins its hash, so a
// later role version signed by other keys does not make an older
// release the new keys' work, nor a newer one the old keys'.
//
// Revoking a key aborts (for good: an aborted rollout is never resumed)
// every rollout of a release it signed, whatever its state; clears the
// assignment of every device assigned such a release that does not run
// it yet, so that nothing more installs it; opens a recovery (mttr) for
// every device that runs one; marks the releases (api.Release
// RevokedKey); and refuses new rollouts and deployments of them (422
// revoked-release). The key itself can only be removed from the
// metadata offline: the answer lists those steps.

// IncidentStore is what incident response reads of the store.
type IncidentStore interface {
	RevokedKeys(ctx context.Context) ([]store.RevokedKey, error)
	AssignedDeviceFacts(ctx context.Context, target, after string, limit int) ([]store.DeviceFacts, error)
}

// Key kinds.
const (
	KindReleaseSigner = "release-signer"
	KindProductKey    = "product-key"
	KindOnline        = "online"
	KindTargets       = "targets"
	KindRoot          = "root"
)

var keyIDRE = regexp.MustCompile(`^[0-9a-f]{16,128}$`)

// rel is a published release with the keys that signed it.
type rel struct {
	target   string
	meta     release.Meta
	signedBy []string
}

// signedReleases returns every published release with its signers (see
// above), and the product roles' delegated keys (key id -> roles).
func (s *Service) signedReleases(ctx context.Context) ([]rel, map[string][]string, error) {
	pub, err := s.catalog.Published(ctx)
	if err != nil {
		return nil, nil, err
	}
	delegated := map[string][]string{}
	if top, err := metadata.Targets().FromBytes(pub.Targets); err == nil && top.Signed.Delegations != nil {
		for _, r := range top.Signed.Delegations.Roles {
			for _, id := range r.KeyIDs {
				delegated[id] = append(delegated[id], r.Name)
			}
		}
	}
	var out []rel
	for _, name := range slices.Sorted(maps.Keys(pub.Roles)) {
		role, err := metadata.Targets().FromBytes(pub.Roles[name])
		if err != nil {
			return nil, nil, fmt.Errorf("published role %s: %w", name, err)
		}
		var current []string
		for _, path := range slices.Sorted(maps.Keys(role.Signed.Targets)) {
			m, err := release.FromTarget(path, role.Signed.Targets[path])
			if err != nil {
				continue
			}
			r := rel{target: path, meta: *m}
			if e, err := s.store.LogEntry(ctx, path); err == nil {
				if st, err := logproof.ParseStatement(e.Leaf); err == nil {
					r.signedBy = st.SignerKeyIDs
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				return nil, nil, err
			}
			if r.signedBy == nil {
				if current == nil {
					current, _, _ = roleSigners(pub.Targets, name, role)
				}
				r.signedBy = current
			}
			out = append(out, r)
		}
	}
	return out, delegated, nil
}

// revokedSet returns the revoked key ids.
func (s *Service) revokedSet(ctx context.Context) (map[string]bool, error) {
	ks, err := s.store.RevokedKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ks))
	for _, k := range ks {
		out[k.KeyID] = true
	}
	return out, nil
}

func signedByAny(r rel, keys map[string]bool) string {
	for _, id := range r.signedBy {
		if keys[id] {
			return id
		}
	}
	return ""
}

// refuseRevoked refuses a release signed with a revoked key (422
// revoked-release): it is never offered again.
func (s *Service) refuseRevoked(ctx context.Context, target string) error {
	revoked, err := s.revokedSet(ctx)
	if err != nil || len(revoked) == 0 {
		return err
	}
	rels, _, err := s.signedReleases(ctx)
	if err != nil {
		return err
	}
	for _, r := range rels {
		if r.target != target {
			continue
		}
		if k := signedByAny(r, revoked); k != "" {
			return refuse(Unprocessable, api.RevokedRelease, "release %s is signed with revoked key %s and is never offered again (rampart incident redeploy puts a good release back)", target, k)
		}
	}
	return nil
}

// goodInstall reports whether a confirmed install of version on hardware
// is of a release not signed with a revoked key (it ends a recovery).
func (s *Service) goodInstall(ctx context.Context, hardware, version string) (bool, error) {
	revoked, err := s.revokedSet(ctx)
	if err != nil || len(revoked) == 0 {
		return err == nil, err
	}
	rels, _, err := s.signedReleases(ctx)
	if err != nil {
		return false, err
	}
	for _, r := range rels {
		if r.meta.Version == version && r.meta.Supports(hardware) && signedByAny(r, revoked) != "" {
			return false, nil
		}
	}
	return true, nil
}

// identify says what a key id is: a release signer (it signed a
// published release), a product role's delegated key, one of the
// server's online keys, or a top-level role's key.
func (s *Service) identify(ctx context.Context, id string, rels []rel, delegated map[string][]string) (kind, role string, err error) {
	var products []string
	for _, r := range rels {
		if slices.Contains(r.signedBy, id) && !slices.Contains(products, r.meta.Product) {
			products = append(products, r.meta.Product)
		}
	}
	if len(products) > 0 {
		return KindReleaseSigner, strings.Join(products, ","), nil
	}
	if roles := delegated[id]; len(roles) > 0 {
		return KindProductKey, strings.Join(roles, ","), nil
	}
	if name, ok := s.onlineKeys[id]; ok {
		return KindOnline, name, nil
	}
	pub, err := s.catalog.Published(ctx)
	if err != nil {
		return "", "", err
	}
	if root, err := metadata.Root().FromBytes(pub.Root); err == nil {
		for _, name := range []string{"root", "targets", "snapshot", "timestamp"} {
			if r, ok := root.Signed.Roles[name]; ok && slices.Contains(r.KeyIDs, id) {
				switch name {
				case "root":
					return KindRoot, name, nil
				case "targets":
					return KindTargets, name, nil
				}
				return KindOnline, name, nil
			}
		}
	}
	return "", "", refuse(NotFound, api.UnknownKey, "no key %s: it signed no published release, no product delegates to it, and it is none of the repository's or the server's keys (rampart release list --json shows the signers)", id)
}

// checkKeyID refuses a malformed key id.
func checkKeyID(id string) error {
	if !keyIDRE.MatchString(id) {
		return refuse(Invalid, api.BadKeyID, "key id %q must be 16-128 lowercase hex digits (rampart key id KEY.pub prints it)", termsafe.Bounded(id, 140))
	}
	return nil
}

// affected returns the devices that run or are assigned one of rels,
// in id order, with their facts: running (a confirmed release of the
// version, for their hardware) from a batched scan of the fleet's
// facts, assigned from the assignments' index (with the devices' facts
// in the same read). Revoked devices are left out. r reads through a
// transaction or the store.
func affected(ctx context.Context, r interface {
	ListDeviceFacts(ctx context.Context, after string, limit int) ([]store.DeviceFacts, error)
	AssignedDeviceFacts(ctx context.Context, target, after string, limit int) ([]store.DeviceFacts, error)
}, rels []rel) (map[string]*api.AffectedDevice, map[string]store.DeviceFacts, error) {
	out := map[string]*api.AffectedDevice{}
	devs := map[string]store.DeviceFacts{}
	after := ""
	for {
		page, err := r.ListDeviceFacts(ctx, after, scanBatch)
		if err != nil {
			return nil, nil, err
		}
		for i := range page {
			d := &page[i]
			after = d.ID
			if d.Version == "" {
				continue
			}
			for _, rl := range rels {
				if rl.meta.Version == d.Version && rl.meta.Supports(d.HardwareID) {
					out[d.ID] = &api.AffectedDevice{ID: d.ID, Running: rl.target}
					devs[d.ID] = *d
					break
				}
			}
		}
		if len(page) < scanBatch {
			break
		}
	}
	for _, rl := range rels {
		after := ""
		for {
			page, err := r.AssignedDeviceFacts(ctx, rl.target, after, scanBatch)
			if err != nil {
				return nil, nil, err
			}
			for i := range page {
				d := &page[i]
				after = d.ID
				if out[d.ID] == nil {
					devs[d.ID] = *d
					out[d.ID] = &api.AffectedDevice{ID: d.ID}
				}
				out[d.ID].Assigned = rl.target
			}
			if len(page) < scanBatch {
				break
			}
		}
	}
	return out, devs, nil
}

// RevokeKey revokes a key (see above) with its audit entries, in one
// transaction: the revocation, each rollout it halts.
func (s *Service) RevokeKey(ctx context.Context, op Op, req api.RevokeKeyRequest) (api.KeyRevoked, error) {
	if err := checkKeyID(req.KeyID); err != nil {
		return api.KeyRevoked{}, err
	}
	if strings.TrimSpace(req.Reason) == "" {
		return api.KeyRevoked{}, refuse(Invalid, api.NoReason, "give the reason for revoking key %s (--reason): it is audited and shown on every halted rollout", req.KeyID)
	}
	if len(req.Reason) > maxActionReason {
		return api.KeyRevoked{}, refuse(Invalid, api.BadReason, "the reason is %d bytes, more than %d", len(req.Reason), maxActionReason)
	}
	reason := termsafe.Bounded(req.Reason, maxActionReason)
	rels, delegated, err := s.signedReleases(ctx)
	if err != nil {
		return api.KeyRevoked{}, err
	}
	kind, role, err := s.identify(ctx, req.KeyID, rels, delegated)
	if err != nil {
		return api.KeyRevoked{}, err
	}
	var bad []rel
	for _, r := range rels {
		if slices.Contains(r.signedBy, req.KeyID) {
			bad = append(bad, r)
		}
	}
	out := api.KeyRevoked{KeyID: req.KeyID, Kind: kind, Role: role, Reason: reason, HaltedRollouts: []string{}, Releases: []string{},
		Devices: []api.AffectedDevice{}, RotationSteps: RotationSteps(kind, role, req.KeyID)}
	for _, r := range bad {
		out.Releases = append(out.Releases, r.target)
	}
	now := s.now()
	err = s.store.Atomic(ctx, func(tx store.Tx) error {
		out.HaltedRollouts, out.Devices, out.DevicesMore = out.HaltedRollouts[:0], out.Devices[:0], 0
		err := tx.RevokeKey(ctx, store.RevokedKey{KeyID: req.KeyID, Kind: kind, Reason: reason, RevokedBy: op.Actor, RevokedAt: now})
		if errors.Is(err, store.ErrExists) {
			return refuse(Conflict, api.KeyAlreadyRevoked, "key %s is already revoked", req.KeyID)
		} else if err != nil {
			return err
		}
		targets := map[string]bool{}
		for _, r := range bad {
			targets[r.target] = true
		}
		// Every rollout of those releases stops for good.
		rs, err := tx.RolloutsInState(ctx, api.RolloutRunning, api.RolloutPaused, api.RolloutWaitingApproval, api.RolloutCompleted)
		if err != nil {
			return err
		}
		rolloutOf := map[string]string{}
		for _, r := range rs {
			if !targets[r.Target] {
				continue
			}
			rolloutOf[r.Target] = r.ID
			from := r.State
			r.State, r.PausedReason, r.UpdatedAt = api.RolloutAborted, fmt.Sprintf("aborted by %s: key %s that signed the release was revoked: %s", op.Actor, req.KeyID, reason), now
			if err := tx.UpdateRollout(ctx, r); err != nil {
				return err
			}
			if _, err := tx.AppendAudit(ctx, s.entry(op, event{op.Actor, "abort-rollout", r.ID, "ok",
				map[string]string{"from": from, "to": r.State, "reason": "revoked key " + req.KeyID}})); err != nil {
				return err
			}
			out.HaltedRollouts = append(out.HaltedRollouts, r.ID)
		}
		aff, _, err := affected(ctx, tx, bad)
		if err != nil {
			return err
		}
		// Nothing more installs them; devices running one are on a
		// failed deployment until they confirm a good release.
		var clear []string
		running := map[string][]string{}
		for _, id := range slices.Sorted(maps.Keys(aff)) {
			a := aff[id]
			if a.Assigned != "" && a.Running == "" {
				clear = append(clear, id)
			}
			if a.Running != "" {
				running[rolloutOf[a.Running]] = append(running[rolloutOf[a.Running]], id)
			}
			if len(out.Devices) < api.MaxAffectedDevices {
				out.Devices = append(out.Devices, *a)
			} else {
				out.DevicesMore++
			}
		}
		if len(clear) > 0 {
			if _, err := tx.Assign(ctx, "", clear, now); err != nil {
				return err
			}
		}
		for ro, ids := range running {
			if err := tx.OpenRecoveries(ctx, ids, ro, now); err != nil {
				return err
			}
		}
		_, err = tx.AppendAudit(ctx, s.entry(op, event{op.Actor, "revoke-key", req.KeyID, "ok", map[string]string{
			"kind": kind, "role": role, "reason": reason, "releases": strings.Join(out.Releases, ","),
			"halted_rollouts": strings.Join(out.HaltedRollouts, ","), "devices": strconv.Itoa(len(aff)), "unassigned": strconv.Itoa(len(clear))}}))
		return err
	})
	if err != nil {
		return api.KeyRevoked{}, err
	}
	s.invalidate()
	s.forgetAll()
	return out, nil
}

// forgetAll makes every device decide afresh at its next check-in.
func (s *Service) forgetAll() {
	s.ro.mu.Lock()
	s.ro.decided = nil
	s.ro.gen++
	s.ro.mu.Unlock()
}

// Redeploy puts the last known-good release back on the devices that
// run or are assigned req.Release, a release signed with the revoked key
// req.AffectedBy: for each device, the newest release of the same
// product, older than req.Release, for its hardware, at or above its
// security version, and signed with no revoked key. A device with no
// such release keeps its assignment cleared and is listed with why.
func (s *Service) Redeploy(ctx context.Context, op Op, req api.RedeployRequest) (api.Redeployed, error) {
	if err := checkKeyID(req.AffectedBy); err != nil {
		return api.Redeployed{}, err
	}
	if _, ok := deployTarget(req.Release); !ok {
		return api.Redeployed{}, refuse(Invalid, api.BadTarget, "%q is not PRODUCT/VERSION or PRODUCT/VERSION/FILE", termsafe.Bounded(req.Release, 140))
	}
	revoked, err := s.revokedSet(ctx)
	if err != nil {
		return api.Redeployed{}, err
	}
	rels, delegated, err := s.signedReleases(ctx)
	if err != nil {
		return api.Redeployed{}, err
	}
	if !revoked[req.AffectedBy] {
		if _, _, err := s.identify(ctx, req.AffectedBy, rels, delegated); err != nil {
			return api.Redeployed{}, err
		}
		return api.Redeployed{}, refuse(Conflict, api.KeyNotRevoked, "key %s is not revoked: revoke it first (rampart incident revoke-key %s --reason TEXT)", req.AffectedBy, req.AffectedBy)
	}
	target, meta, err := s.resolveRelease(ctx, req.Release)
	if err != nil {
		return api.Redeployed{}, err
	}
	var badRel rel
	for _, r := range rels {
		if r.target == target {
			badRel = r
		}
	}
	if !slices.Contains(badRel.signedBy, req.AffectedBy) {
		return api.Redeployed{}, refuse(Unprocessable, api.NotSignedByKey, "release %s was not signed with key %s (its signers: %s)", target, req.AffectedBy, strings.Join(badRel.signedBy, ", "))
	}
	// The candidates, newest first.
	var good []rel
	for _, r := range rels {
		if r.meta.Product == meta.Product && release.CompareVersions(r.meta.Version, meta.Version) < 0 && signedByAny(r, revoked) == "" {
			good = append(good, r)
		}
	}
	sort.SliceStable(good, func(i, j int) bool { return release.CompareVersions(good[i].meta.Version, good[j].meta.Version) > 0 })
	out := api.Redeployed{Release: target, Devices: []api.RedeployedDevice{}}
	now := s.now()
	err = s.store.Atomic(ctx, func(tx store.Tx) error {
		out.Devices, out.Assigned, out.Unchanged, out.DevicesMore = out.Devices[:0], 0, 0, 0
		aff, devs, err := affected(ctx, tx, []rel{badRel})
		if err != nil {
			return err
		}
		byTarget := map[string][]string{}
		var none []string
		for _, id := range slices.Sorted(maps.Keys(aff)) {
			d := devs[id]
			res := api.RedeployedDevice{ID: id}
			for _, g := range good {
				if g.meta.Supports(d.HardwareID) && g.meta.SecurityVersion >= d.SecurityVersion {
					res.Assigned = g.target
					break
				}
			}
			if res.Assigned == "" {
				res.Note = fmt.Sprintf("no release of %s older than %s for hardware %s at or above its security version %d is signed without a revoked key: publish a fixed release and roll it out",
					meta.Product, meta.Version, d.HardwareID, d.SecurityVersion)
				out.Unchanged++
				if aff[id].Assigned != "" {
					none = append(none, id)
				}
			} else {
				if _, v, _, _ := parseTarget(res.Assigned); v == d.Version {
					res.Note = "it runs this release already"
				}
				byTarget[res.Assigned] = append(byTarget[res.Assigned], id)
				out.Assigned++
			}
			if len(out.Devices) < api.MaxAffectedDevices {
				out.Devices = append(out.Devices, res)
			} else {
				out.DevicesMore++
			}
		}
		for t, ids := range byTarget {
			if _, err := tx.Assign(ctx, t, ids, now); err != nil {
				return err
			}
		}
		if len(none) > 0 {
			if _, err := tx.Assign(ctx, "", none, now); err != nil {
				return err
			}
		}
		_, err = tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: op.Actor, Action: "redeploy", Subject: target, RequestID: op.RequestID, Outcome: "ok",
			Detail: map[string]string{"affected_by": req.AffectedBy, "assigned": strconv.Itoa(out.Assigned), "unchanged": strconv.Itoa(out.Unchanged)}})
		return err
	})
	if err != nil {
		return api.Redeployed{}, err
	}
	s.forgetAll()
	return out, nil
}

// RotationSteps are the offline steps that remove a revoked key from
// the metadata devices trust (docs/incident-response.md has the whole
// playbook).
func RotationSteps(kind, role, id string) []string {
	switch kind {
	case KindReleaseSigner, KindProductKey:
		var steps []string
		for _, p := range strings.Split(role, ",") {
			steps = append(steps,
				fmt.Sprintf("rampart repo rotate repo %s --remove-key %s --add-key keys/NEW-SIGNER.pub   # a new signer for %s (keep the threshold reachable)", p, id, p),
				"rampart repo sign repo targets --key keys/targets.key   # targets names the new product keys",
				fmt.Sprintf("rampart repo stage repo %s   # a new version of the product role, without the revoked key's signature", p),
				fmt.Sprintf("rampart repo sign repo %s --key keys/REMAINING-SIGNER.key   # repeat for the threshold of the remaining and new signers", p))
		}
		return append(steps,
			"rampart repo push repo --server URL --ca ca.pem --token TOKEN   # devices stop accepting the revoked key's signatures at their next check-in",
			"if the revoked key alone (or with other lost keys) met the threshold: publish a fixed release with a higher security version, and roll it out")
	case KindOnline:
		if role == "previous" {
			return []string{"this key was rotated out already (rampart-server rotate-keys): check that the published roots name it no more (rampart repo status repo; rampart repo status director), and finish the rotation of docs/incident-response.md if one does"}
		}
		flag := "--image"
		if strings.HasPrefix(role, "director-") {
			flag = "--director"
		}
		steps := []string{
			"rampart-server rotate-keys --data DATA " + flag + "   # new online keys; the old ones go to DATA/keys/previous/",
			"systemctl restart rampart-server",
			"rampart server keys -o online/ --server URL --ca ca.pem   # compare the new key ids with the server's console out of band",
		}
		if flag == "--director" {
			return append(steps,
				"rampart repo rotate director "+strings.TrimPrefix(role, "director-")+" --remove-key "+id+" --add-key online/"+role+".pub",
				"rampart repo sign director root --key keys/director-root-a.key   # a threshold of the old and new root keys",
				"rampart director push-root director --server URL --ca ca.pem --token TOKEN")
		}
		return append(steps,
			"rampart repo rotate repo "+role+" --remove-key "+id+" --add-key online/"+role+".pub",
			"rampart repo sign repo root --key keys/root-a.key   # a threshold of the old and new root keys",
			"rampart repo push repo --server URL --ca ca.pem --token TOKEN")
	case KindTargets, KindRoot:
		return []string{
			"rampart repo rotate repo " + role + " --remove-key " + id + " --add-key keys/NEW-" + strings.ToUpper(role) + ".pub",
			"rampart repo sign repo root --key keys/root-a.key   # a threshold of the old root keys and of the new",
			"rampart repo sign repo targets --key keys/NEW-TARGETS.key   # when targets keys changed, targets is signed again",
			"rampart repo push repo --server URL --ca ca.pem --token TOKEN",
		}
	}
	return nil
}
