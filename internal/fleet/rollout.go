package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

// Rollouts. A rollout offers one release to the devices its selector
// picks, phase by phase. Which device is in which phase is its Bucket,
// so it is decided by a hash, never by walking the fleet at check-in:
// a device checks in, the service finds (in memory) the rollouts that
// select it, picks one by the competing-rollouts rule, and hands it the
// release when its bucket is under the phase's bound, its concurrency
// slot is free and it is not cooling down. Reports move its progress;
// Step (periodic, bounded work per rollout) checks the gates and
// promotes phases.
//
// Competing rollouts: when several running rollouts select a device,
// the one whose release has the higher security version wins, then the
// newer rollout. The device waits for the winner's phase to reach it; it
// is never offered the losers' releases.

// maxRollouts bounds the rollouts listed; maxReasons the failure reasons
// a rollout shows.
const (
	maxRollouts = 1000
	maxReasons  = 16
	scanBatch   = 5000
)

// active is a rollout the service offers from, with what a check-in
// needs already parsed.
type active struct {
	r       store.Rollout
	spec    Spec
	sel     *Selector
	meta    release.Meta
	version string
}

// rollouts is the service's in-memory view of the rollouts that offer
// releases (running and completed ones), with a generation that every
// change bumps, and each device's generation at its last decision, so a
// check-in that nothing changed for costs a map lookup.
type rollouts struct {
	mu       sync.Mutex
	loaded   bool
	loadedAt time.Time // by the service's clock
	offer    []*active // by the competing rule: higher security version, then newer
	gen      uint64
	decided  map[string]uint64
	// windowed is set when a rollout of offer has a window, which
	// may open or close at any check-in.
	windowed bool
}

// maxDecided bounds the memo of decisions (then it starts afresh).
const maxDecided = 1 << 20

func (s *Service) invalidate() {
	s.ro.mu.Lock()
	s.ro.loaded = false
	s.ro.gen++
	s.ro.mu.Unlock()
}

// bump makes every device decide again at its next check-in (a
// concurrency slot was freed).
func (s *Service) bump() {
	s.ro.mu.Lock()
	s.ro.gen++
	s.ro.mu.Unlock()
}

// forget drops a device's memoised decision (it reported, its tags
// changed).
func (s *Service) forget(id string) {
	s.ro.mu.Lock()
	delete(s.ro.decided, id)
	s.ro.mu.Unlock()
}

func (s *Service) offering(ctx context.Context) ([]*active, uint64, error) {
	s.ro.mu.Lock()
	defer s.ro.mu.Unlock()
	if s.ro.loaded {
		return s.ro.offer, s.ro.gen, nil
	}
	if err := s.loadView(ctx); err != nil {
		return nil, 0, err
	}
	return s.ro.offer, s.ro.gen, nil
}

// viewRefresh bounds how long a replica decides from a view of the
// rollouts and the policy that another replica may have changed: a
// rollout created, promoted, paused, resumed, approved or aborted there,
// or a policy set there, reaches this replica's decisions within it
// (Decide, their only reader, reloads a view this old). A replica's own
// changes reach its decisions at once.
const viewRefresh = 5 * time.Second

// refresh re-reads what other replicas may have changed: the policy and
// the rollouts that offer releases. When they changed, every device
// decides again at its next check-in.
func (s *Service) refresh(ctx context.Context) error {
	if err := s.stepPolicy(ctx); err != nil {
		return err
	}
	s.ro.mu.Lock()
	defer s.ro.mu.Unlock()
	return s.loadView(ctx)
}

// loadView reads the rollouts that offer releases into s.ro (s.ro.mu is
// held), and bumps the generation when they differ from the view it
// replaces.
func (s *Service) loadView(ctx context.Context) error {
	rs, err := s.store.RolloutsInState(ctx, api.RolloutRunning, api.RolloutCompleted)
	if err != nil {
		return err
	}
	var out []*active
	for _, r := range rs {
		a, err := parseActive(r)
		if err != nil {
			return err
		}
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, j int) bool { return wins(out[i].r, out[j].r) })
	if s.ro.loaded && !sameView(s.ro.offer, out) {
		s.ro.gen++
	}
	s.ro.windowed = false
	for _, a := range out {
		s.ro.windowed = s.ro.windowed || a.spec.Window != "" && !a.spec.Critical
	}
	s.ro.offer, s.ro.loaded, s.ro.loadedAt = out, true, s.now()
	return nil
}

// sameView reports whether two views offer the same rollouts in the same
// state.
func sameView(a, b []*active) bool {
	return slices.EqualFunc(a, b, func(x, y *active) bool {
		r, q := x.r, y.r
		return r.ID == q.ID && r.Seq == q.Seq && r.State == q.State && r.Phase == q.Phase && r.Threshold == q.Threshold &&
			r.Eligible == q.Eligible && r.PausedReason == q.PausedReason && r.ApprovedBy == q.ApprovedBy &&
			r.UpdatedAt.Equal(q.UpdatedAt) && bytes.Equal(r.Spec, q.Spec) && r.Selector == q.Selector
	})
}

// wins is the competing-rollouts rule: a beats b when its release's
// security version is higher, or equal and a is newer.
func wins(a, b store.Rollout) bool {
	if a.SecurityVersion != b.SecurityVersion {
		return a.SecurityVersion > b.SecurityVersion
	}
	return a.Seq > b.Seq
}

func parseActive(r store.Rollout) (*active, error) {
	var sp Spec
	if err := json.Unmarshal(r.Spec, &sp); err != nil {
		return nil, fmt.Errorf("rollout %s: stored spec: %w", r.ID, err)
	}
	sel, err := CompileSelector(r.Selector)
	if err != nil {
		return nil, fmt.Errorf("rollout %s: stored selector: %w", r.ID, err)
	}
	product, version, _, err := release.ParseTargetPath(r.Target)
	if err != nil {
		return nil, fmt.Errorf("rollout %s: %w", r.ID, err)
	}
	return &active{r: r, spec: sp, sel: sel, version: version, meta: release.Meta{Product: product, Version: version, SecurityVersion: r.SecurityVersion}}, nil
}

// RolloutStore is what rollouts read of the store outside transactions.
type RolloutStore interface {
	Rollout(ctx context.Context, id string) (store.Rollout, error)
	ListRollouts(ctx context.Context, limit int) ([]store.Rollout, error)
	RolloutsInState(ctx context.Context, states ...string) ([]store.Rollout, error)
	RolloutDevice(ctx context.Context, rolloutID, deviceID string) (store.RolloutDevice, error)
	RolloutCounts(ctx context.Context, rolloutID string) (store.RolloutCounts, error)
	RolloutInFlight(ctx context.Context, rolloutID string) (int, error)
	RolloutReasons(ctx context.Context, rolloutID string, limit int) (map[string]int, error)
}

// selects reports whether a rollout may offer its release to d: its
// selector picks d, the release is for d's hardware, and d does not run
// a higher security version (it would refuse the release).
func (a *active) selects(d *store.Device, hardware []string) bool {
	return d.RevokedAt.IsZero() && slices.Contains(hardware, d.HardwareID) && d.SecurityVersion <= a.r.SecurityVersion && a.sel.Match(d)
}

// CreateRollout checks and stores a rollout, with its audit entry. The
// release must be published; the selector, phases and gates must be
// good. The devices the selector picks now are counted: those that run a
// higher security version than the release would refuse it, and when
// every picked device would, the rollout is refused (422
// below-security-version) with the count. A selector that picks no
// device is accepted and said plainly (devices enrolled later are picked
// up). A --critical rollout starts waiting for a second operator's
// approval.
func (s *Service) CreateRollout(ctx context.Context, op Op, req api.RolloutRequest) (api.RolloutCreated, error) {
	sel, err := CompileSelector(req.Select)
	if err != nil {
		return api.RolloutCreated{}, err
	}
	spec, err := ParseSpec(req)
	if err != nil {
		return api.RolloutCreated{}, err
	}
	target, meta, err := s.resolveRelease(ctx, req.Release)
	if err != nil {
		return api.RolloutCreated{}, err
	}
	if err := s.refuseRevoked(ctx, target); err != nil {
		return api.RolloutCreated{}, err
	}
	specJSON, _ := json.Marshal(spec)
	id := newRolloutID()
	now := s.now()
	r := store.Rollout{ID: id, Target: target, SecurityVersion: meta.SecurityVersion, Selector: req.Select, Spec: specJSON,
		State: api.RolloutRunning, Phase: 1, PhaseStarted: now, CreatedBy: op.Actor, CreatedAt: now, UpdatedAt: now}
	a := &active{r: r, spec: spec, sel: sel, meta: meta, version: meta.Version}
	matched, below, err := s.startPhase(ctx, a, 1, meta.HardwareIDs)
	if err != nil {
		return api.RolloutCreated{}, err
	}
	if matched > 0 && below == matched {
		return api.RolloutCreated{}, refuse(Unprocessable, api.BelowSecurityVersion,
			"release %s has security version %d; all %d devices the selector picks run a higher security version and would refuse it", target, meta.SecurityVersion, matched)
	}
	r = a.r
	if spec.Critical {
		r.State, r.PausedReason = api.RolloutWaitingApproval, "a critical rollout starts only when an operator other than its creator approves it"
	}
	err = s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		if _, err := tx.CreateRollout(ctx, r); err != nil {
			return event{}, err
		}
		return event{op.Actor, "create-rollout", id, "ok", map[string]string{
			"release": target, "select": req.Select, "phases": strings.Join(spec.phaseNames(), ","), "state": r.State,
			"matched": strconv.Itoa(matched), "below_security_version": strconv.Itoa(below)}}, nil
	})
	if err != nil {
		return api.RolloutCreated{}, err
	}
	s.invalidate()
	out := api.RolloutCreated{ID: id, Matched: matched, BelowSecurityVersion: below}
	switch {
	case matched == 0:
		out.Note = "the selector picks no device now; devices that match it later are picked up"
	case below > 0:
		out.Note = fmt.Sprintf("%d of the %d devices the selector picks run a higher security version than %d and are never offered this release", below, matched, meta.SecurityVersion)
	}
	return out, nil
}

func newRolloutID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "ro-" + hex.EncodeToString(b)
}

// resolveRelease finds a published release by PRODUCT/VERSION or its
// full target path.
func (s *Service) resolveRelease(ctx context.Context, name string) (string, release.Meta, error) {
	product, ok := deployTarget(name)
	if !ok {
		return "", release.Meta{}, refuse(Invalid, api.BadTarget, "%q is not PRODUCT/VERSION or PRODUCT/VERSION/FILE", name)
	}
	roles, err := s.productRoles(ctx)
	if err != nil {
		return "", release.Meta{}, err
	}
	role := roles[product]
	var matches []string
	if role != nil {
		for path := range role.Signed.Targets {
			if path == name || strings.HasPrefix(path, name+"/") {
				matches = append(matches, path)
			}
		}
	}
	switch len(matches) {
	case 0:
		return "", release.Meta{}, refuse(NotFound, api.UnknownRelease, "no published release %s", name)
	case 1:
	default:
		return "", release.Meta{}, refuse(Invalid, api.AmbiguousTarget, "%s names several files: %v; give one", name, matches)
	}
	m, err := release.FromTarget(matches[0], role.Signed.Targets[matches[0]])
	if err != nil {
		return "", release.Meta{}, err
	}
	return matches[0], *m, nil
}

// startPhase sets a rollout's phase n (from 1): its bucket bound and how
// many devices the phases so far hold. It scans the fleet once, in
// batches, when the phase starts, and returns how many devices the
// selector picks for the release's hardware and how many of those run a
// higher security version than the release (never offered it).
func (s *Service) startPhase(ctx context.Context, a *active, n int, hardware []string) (matched, below int, err error) {
	ph := a.spec.Phases[n-1]
	var buckets []int
	sel := newScanMatcher(a.sel)
	after := ""
	for {
		page, err := s.store.ListDeviceFacts(ctx, after, scanBatch)
		if err != nil {
			return 0, 0, err
		}
		for i := range page {
			d := &page[i]
			after = d.ID
			if !slices.Contains(hardware, d.HardwareID) || !sel.match(d) {
				continue
			}
			matched++
			if d.SecurityVersion > a.r.SecurityVersion {
				below++
				continue
			}
			buckets = append(buckets, Bucket(a.r.ID, d.ID))
		}
		if len(page) < scanBatch {
			break
		}
	}
	sort.Ints(buckets)
	th := ph.threshold()
	if ph.Count > 0 {
		th = countThreshold(buckets, ph.Count)
	}
	a.r.Phase, a.r.Threshold = n, th
	a.r.Eligible = sort.SearchInts(buckets, th)
	a.r.PhaseStarted = s.now()
	return matched, below, nil
}

// Decide is called when a device checks in, before its director
// metadata is built: when a rollout should hand it a release now, it
// assigns it. It reads the device and its progress in the winning
// rollout only when something changed since its last decision.
func (s *Service) Decide(ctx context.Context, id string) error {
	if err := s.refreshIfStale(ctx); err != nil {
		return err
	}
	// The common case, in one lock: nothing changed for the device
	// since its last decision (no window can have moved), or nothing
	// offers.
	s.ro.mu.Lock()
	if s.ro.loaded && !s.ro.windowed {
		g, ok := s.ro.decided[id]
		if len(s.ro.offer) == 0 || ok && g == s.ro.gen {
			s.ro.mu.Unlock()
			return nil
		}
	}
	s.ro.mu.Unlock()
	offer, gen, err := s.offering(ctx)
	if err != nil || len(offer) == 0 {
		return err
	}
	now := s.now()
	if s.windowsMoved(offer, now) {
		// A rollout's window opened or closed: every device decides
		// again.
		s.bump()
		gen = s.generation()
	}
	s.ro.mu.Lock()
	// A device never decided is not done, whatever the generation (a
	// fresh replica's, or a restarted server's, is 0).
	g, ok := s.ro.decided[id]
	done := ok && g == gen
	s.ro.mu.Unlock()
	if done {
		return nil
	}
	// A device that no rollout's phases reach yet can be offered
	// nothing, whichever rollout would win it: its buckets (and the
	// rollouts' windows) say so without reading its record.
	reached := false
	for _, a := range offer {
		if Bucket(a.r.ID, id) < a.r.Threshold && s.rolloutOpen(a, now) {
			reached = true
			break
		}
	}
	if !reached {
		s.memo(id, gen)
		return nil
	}
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return err
	}
	held, err := s.decide(ctx, offer, &d, now)
	if err != nil || held {
		// A device its own window holds is not memoised: it decides
		// again at its next check-in, when the window may be open.
		return err
	}
	s.memo(id, gen)
	return nil
}

// refreshIfStale refreshes a view older than viewRefresh. One check-in
// refreshes; the others meanwhile decide from the view they have.
func (s *Service) refreshIfStale(ctx context.Context) error {
	s.ro.mu.Lock()
	stale := s.ro.loaded && s.now().Sub(s.ro.loadedAt) >= viewRefresh
	s.ro.mu.Unlock()
	if !stale || !s.refreshing.TryLock() {
		return nil
	}
	defer s.refreshing.Unlock()
	return s.refresh(ctx)
}

// memo records that a device was decided for at generation gen.
func (s *Service) memo(id string, gen uint64) {
	s.ro.mu.Lock()
	if s.ro.decided == nil || len(s.ro.decided) >= maxDecided {
		s.ro.decided = map[string]uint64{}
	}
	s.ro.decided[id] = gen
	s.ro.mu.Unlock()
}

// decide offers d the winning rollout's release when its phase reaches
// d, the rollout's window and d's own are open (a critical rollout
// ignores both) and the fleet policy allows it. held reports that d's
// own window held it.
func (s *Service) decide(ctx context.Context, offer []*active, d *store.Device, now time.Time) (held bool, err error) {
	for _, a := range offer {
		hw, err := s.hardwareOf(ctx, a)
		if err != nil {
			return false, err
		}
		if !a.selects(d, hw) {
			continue
		}
		// The winner. Its phase may not reach the device yet, or its
		// window may be closed: then it waits, and is offered no
		// other rollout's release.
		if Bucket(a.r.ID, d.ID) >= a.r.Threshold || d.Version == a.version || !s.rolloutOpen(a, now) {
			return false, nil
		}
		if !s.deviceOpen(a, d, now) {
			return true, nil
		}
		// What the device's progress says is read first, outside a
		// transaction: when it settles the decision, nothing is
		// written (the transaction would change nothing), so a device
		// in flight or done that decides again (a slot was freed, the
		// policy is rechecked) costs two reads, not a write.
		rd, err := s.store.RolloutDevice(ctx, a.r.ID, d.ID)
		if errors.Is(err, store.ErrNotFound) {
			rd = store.RolloutDevice{}
		} else if err != nil {
			return false, err
		}
		if settled(rd.Status) {
			return false, nil
		}
		dec, err := s.policyDecision(ctx, a, d)
		if err != nil {
			return false, err
		}
		if !dec.Allowed {
			if rd.Status == PolicyDenied && (rd.Reason == denialReason(dec) || rd.Failures > 0) {
				return false, nil
			}
			return false, s.denyByPolicy(ctx, a, d, dec)
		}
		if skip, err := s.offerChangesNothing(ctx, a, rd, now); err != nil || skip {
			return false, err
		}
		return false, s.offer(ctx, a, d)
	}
	return false, nil
}

// settled reports whether a device's progress in a rollout is left as it
// is, whatever is decided: in flight or installed.
func settled(status string) bool {
	switch status {
	case "downloading", "installing", "installed":
		return true
	}
	return false
}

// offerChangesNothing reports, from reads outside a transaction, that
// offering the release to a device with progress rd would change
// nothing now: it rolled the release back, it cools down, or the
// rollout's devices in flight are at its limit. The offer's transaction
// checks all of it again; this only spares it when its answer is known.
func (s *Service) offerChangesNothing(ctx context.Context, a *active, rd store.RolloutDevice, now time.Time) (bool, error) {
	if rd.Status == "rolled-back" || rd.Failures >= maxFailures && now.Before(rd.CooldownUntil) {
		return true, nil
	}
	if a.spec.MaxConcurrent == 0 {
		return false, nil
	}
	n, err := s.store.RolloutInFlight(ctx, a.r.ID)
	return err == nil && n >= a.spec.MaxConcurrent, err
}

// hardwareOf returns the hardware ids a rollout's release supports
// (read from the published metadata once per rollout). Check-ins share
// the active rollouts, so what is kept is read and written under the
// rollouts' lock.
func (s *Service) hardwareOf(ctx context.Context, a *active) ([]string, error) {
	s.ro.mu.Lock()
	hw := a.meta.HardwareIDs
	s.ro.mu.Unlock()
	if hw != nil {
		return hw, nil
	}
	_, m, err := s.resolveRelease(ctx, a.r.Target)
	if err != nil {
		return nil, err
	}
	s.ro.mu.Lock()
	a.meta.HardwareIDs = m.HardwareIDs
	s.ro.mu.Unlock()
	return m.HardwareIDs, nil
}

// changeRolloutDevice runs change, in one transaction, on the device's
// record in the rollout (a new one when it has none), unless the device
// is in flight or installed: those are left as they are.
func (s *Service) changeRolloutDevice(ctx context.Context, a *active, d *store.Device, change func(tx store.Tx, rd store.RolloutDevice) error) error {
	return s.store.Atomic(ctx, func(tx store.Tx) error {
		rd, err := tx.RolloutDevice(ctx, a.r.ID, d.ID)
		if errors.Is(err, store.ErrNotFound) {
			rd = store.RolloutDevice{RolloutID: a.r.ID, DeviceID: d.ID}
		} else if err != nil {
			return err
		}
		if settled(rd.Status) {
			return nil
		}
		return change(tx, rd)
	})
}

// offer hands a rollout's release to a device, in one transaction that
// checks its progress and the concurrency limit: a device already in
// flight or installed is left as it is, one that rolled back the
// release is not offered it again (its agent would not install it), one
// cooling down after two failed installs is not offered (and holds no
// slot), and at most
// MaxConcurrent devices are downloading or installing.
func (s *Service) offer(ctx context.Context, a *active, d *store.Device) error {
	now := s.now()
	return s.changeRolloutDevice(ctx, a, d, func(tx store.Tx, rd store.RolloutDevice) error {
		switch rd.Status {
		case "rolled-back":
			// The agent keeps an image that rolled back as failed and
			// never installs it again: offered again, it would answer
			// "not-retried" without a report, and the device would
			// count as in flight for ever, holding a concurrency slot.
			// It stays on what it runs (a failed install, which the
			// agent does retry, is offered again).
			return nil
		}
		if rd.Failures >= maxFailures && now.Before(rd.CooldownUntil) {
			return nil
		}
		if a.spec.MaxConcurrent > 0 {
			n, err := tx.RolloutInFlight(ctx, a.r.ID)
			if err != nil {
				return err
			}
			if n >= a.spec.MaxConcurrent {
				return nil
			}
		}
		if rd.Failures >= maxFailures {
			rd.Failures = 0 // the cool-down is over: a fresh start
		}
		// The reason of an earlier failure stays: the rollout's failure
		// reasons count it.
		rd.Status, rd.OfferedAt, rd.UpdatedAt = "downloading", now, now
		if err := tx.PutRolloutDevice(ctx, rd); err != nil {
			return err
		}
		_, err := tx.Assign(ctx, a.r.Target, []string{d.ID}, now)
		return err
	})
}
