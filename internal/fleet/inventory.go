package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/verify"
)

// Bounds of the inventory: what a listing scans and returns per request,
// and what a device's tags may hold.
const (
	// MaxListLimit is the most devices one page returns; DefaultListLimit
	// when the request does not say.
	MaxListLimit     = 10000
	DefaultListLimit = 1000
	// maxListScan is the most devices one request reads from the store:
	// a selector that matches few devices of a large fleet is answered in
	// several pages rather than by one long request.
	maxListScan = 50000
	listBatch   = 1000
	// MaxTags is the most tags a device has; tag keys are TagKeyRE,
	// values at most MaxTagValue bytes of printable UTF-8.
	MaxTags     = 32
	MaxTagValue = 128
)

// TagKeyRE is a tag's key: a CEL identifier in lower case, so that
// tags.KEY is a valid selector.
var TagKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ListDevices returns the devices sel selects, in id order, after the id
// after, at most limit (1 to MaxListLimit; 0 is DefaultListLimit).
func (s *Service) ListDevices(ctx context.Context, selector, after string, limit int) (api.DeviceList, error) {
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 1 || limit > MaxListLimit {
		return api.DeviceList{}, refuse(Invalid, api.BadLimit, "limit must be between 1 and %d, not %d", MaxListLimit, limit)
	}
	sel, err := CompileSelector(selector)
	if err != nil {
		return api.DeviceList{}, err
	}
	out := api.DeviceList{Devices: []api.DeviceSummary{}}
	scanned := 0
	for {
		page, err := s.store.ListDevices(ctx, after, listBatch)
		if err != nil {
			return api.DeviceList{}, err
		}
		for i := range page {
			d := &page[i]
			after = d.ID
			scanned++
			if sel.Match(d) {
				out.Devices = append(out.Devices, summary(d))
				if len(out.Devices) == limit {
					out.Next = after
					return out, nil
				}
			}
		}
		if len(page) < listBatch {
			return out, nil
		}
		if scanned >= maxListScan {
			out.Next = after
			return out, nil
		}
	}
}

func summary(d *store.Device) api.DeviceSummary {
	v := api.DeviceSummary{ID: d.ID, Hardware: d.HardwareID, Tags: d.Tags, Version: d.Version, SecurityVersion: d.SecurityVersion,
		State: deviceState(d), LastRefusal: d.LastRefusal}
	if v.Tags == nil {
		v.Tags = map[string]string{}
	}
	if !d.LastSeen.IsZero() {
		seen := d.LastSeen
		v.LastSeen = &seen
	}
	return v
}

func deviceState(d *store.Device) string {
	switch {
	case !d.RevokedAt.IsZero():
		return "revoked"
	case d.LastStatus != "":
		return d.LastStatus
	}
	return "enrolled"
}

// CheckTags refuses a change of tags that is malformed: keys that are not
// TagKeyRE, values too long or not printable, a key both set and unset.
func CheckTags(req api.TagsRequest) error {
	if len(req.Set) == 0 && len(req.Unset) == 0 {
		return refuse(Invalid, api.BadTag, "give tags to set (KEY=VALUE) or keys to remove")
	}
	if len(req.Set) > MaxTags || len(req.Unset) > MaxTags {
		return refuse(Invalid, api.BadTag, "at most %d tags at once", MaxTags)
	}
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		v := req.Set[k]
		if !TagKeyRE.MatchString(k) {
			return refuse(Invalid, api.BadTag, "tag key %q must be 1-63 of a-z 0-9 _, starting with a letter", k)
		}
		if len(v) > MaxTagValue || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return refuse(Invalid, api.BadTag, "the value of tag %s must be at most %d bytes of printable UTF-8", k, MaxTagValue)
		}
		if k == WindowTag { // the device's maintenance window (window.go)
			if _, err := ParseWindow(v); err != nil {
				return refuse(Invalid, api.BadTag, "tag %s: %v", k, err)
			}
		}
	}
	for _, k := range req.Unset {
		if !TagKeyRE.MatchString(k) {
			return refuse(Invalid, api.BadTag, "tag key %q must be 1-63 of a-z 0-9 _, starting with a letter", k)
		}
		if _, ok := req.Set[k]; ok {
			return refuse(Invalid, api.BadTag, "tag %s is both set and removed", k)
		}
	}
	return nil
}

// SetTags changes a device's tags with its audit entry and returns the
// tags it now has; more than MaxTags in all is refused and changes
// nothing.
func (s *Service) SetTags(ctx context.Context, op Op, id string, req api.TagsRequest) (map[string]string, error) {
	if err := CheckTags(req); err != nil {
		return nil, err
	}
	var tags map[string]string
	defer s.forget(id) // its selectors may pick it now, or no longer
	err := s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		var err error
		tags, err = tx.SetDeviceTags(ctx, id, req.Set, req.Unset)
		if errors.Is(err, store.ErrNotFound) {
			return event{}, refuse(NotFound, api.NotFound, "no device %s", id)
		}
		if err != nil {
			return event{}, err
		}
		if len(tags) > MaxTags {
			return event{}, refuse(Invalid, api.BadTag, "device %s would have %d tags, more than %d", id, len(tags), MaxTags)
		}
		detail := map[string]string{}
		for k, v := range req.Set {
			detail["set."+k] = v
		}
		if len(req.Unset) > 0 {
			detail["unset"] = strings.Join(req.Unset, ",")
		}
		return event{op.Actor, "tag-device", id, "ok", detail}, nil
	})
	return tags, err
}

// Releases lists the published releases of product ("" for every
// product), from the image repository's current signed metadata and the
// transparency log.
func (s *Service) Releases(ctx context.Context, product string) (api.ReleaseList, error) {
	if product != "" {
		if err := release.ValidateProduct(product); err != nil {
			return api.ReleaseList{}, refuse(Invalid, api.BadProduct, "%v", err)
		}
	}
	pub, err := s.catalog.Published(ctx)
	if err != nil {
		return api.ReleaseList{}, err
	}
	out := api.ReleaseList{Releases: []api.Release{}}
	revoked, err := s.revokedSet(ctx)
	if err != nil {
		return api.ReleaseList{}, err
	}
	proofs := logChecker{s: s}
	for _, name := range slices.Sorted(maps.Keys(pub.Roles)) {
		if product != "" && name != product {
			continue
		}
		role, err := metadata.Targets().FromBytes(pub.Roles[name])
		if err != nil {
			return api.ReleaseList{}, err
		}
		signers, threshold, met := roleSigners(pub.Targets, name, role)
		var rels []api.Release
		for path, tf := range role.Signed.Targets {
			m, err := release.FromTarget(path, tf)
			if err != nil {
				continue // not a release (release.FromTarget refuses it)
			}
			r := api.Release{Target: path, Product: m.Product, Version: m.Version, SecurityVersion: m.SecurityVersion,
				Hardware: m.HardwareIDs, Signers: signers, Threshold: threshold, ThresholdMet: met, Created: m.Created}
			e, err := s.store.LogEntry(ctx, path)
			switch {
			case err == nil:
				idx := e.Index
				r.LogIndex = &idx
				if st, err := logproof.ParseStatement(e.Leaf); err == nil {
					r.SignedBy = st.SignerKeyIDs
				}
				r.LogProof, r.LogProofError = proofs.check(ctx, e, &verify.Result{Target: path, File: tf, Release: m})
			case errors.Is(err, store.ErrNotFound):
				r.LogProof = api.LogProofNotLogged
			default:
				return api.ReleaseList{}, err
			}
			if r.SignedBy == nil {
				r.SignedBy = signers
			}
			r.RevokedKey = signedByAny(rel{signedBy: r.SignedBy}, revoked) != ""
			rels = append(rels, r)
		}
		sort.Slice(rels, func(i, j int) bool {
			if c := release.CompareVersions(rels[i].Version, rels[j].Version); c != 0 {
				return c > 0
			}
			return rels[i].Target < rels[j].Target
		})
		out.Releases = append(out.Releases, rels...)
	}
	return out, nil
}

// roleSigners returns the key ids of the delegation's keys whose
// signature on the product role verifies, the delegation's threshold,
// and whether the signatures meet it.
func roleSigners(targets []byte, name string, role *metadata.Metadata[metadata.TargetsType]) (signers []string, threshold int, met bool) {
	signers = []string{}
	verify := func(keyIDs []string, threshold int) bool {
		// A fresh copy of the top-level targets each time: the
		// delegation is narrowed to the keys asked about.
		top, err := metadata.Targets().FromBytes(targets)
		if err != nil || top.Signed.Delegations == nil {
			return false
		}
		for _, r := range top.Signed.Delegations.Roles {
			if r.Name == name {
				r.KeyIDs, r.Threshold = keyIDs, threshold
			}
		}
		return top.VerifyDelegate(name, role) == nil
	}
	top, err := metadata.Targets().FromBytes(targets)
	if err != nil || top.Signed.Delegations == nil {
		return signers, 0, false
	}
	for _, r := range top.Signed.Delegations.Roles {
		if r.Name != name {
			continue
		}
		threshold = r.Threshold
		for _, id := range r.KeyIDs {
			if verify([]string{id}, 1) {
				signers = append(signers, id)
			}
		}
		sort.Strings(signers)
		return signers, threshold, verify(r.KeyIDs, r.Threshold)
	}
	return signers, 0, false
}

// logChecker checks releases' inclusion proofs under one checkpoint,
// fetched once per listing, with the device's own decision
// (verify.LogProof): the statement is this release, and its inclusion
// verifies under a checkpoint signed by the log's key.
type logChecker struct {
	s          *Service
	checkpoint []byte
	err        error
}

// maxLogProofError bounds the reason a listing carries per release.
const maxLogProofError = 512

func (c *logChecker) check(ctx context.Context, e store.LogEntry, res *verify.Result) (string, string) {
	if c.s.logKey == nil {
		return api.LogProofUnchecked, ""
	}
	if c.checkpoint == nil && c.err == nil {
		c.checkpoint, c.err = c.s.log.Checkpoint(ctx)
	}
	failed := func(err error) (string, string) {
		msg := err.Error()
		if len(msg) > maxLogProofError {
			msg = msg[:maxLogProofError] + "..."
		}
		return api.LogProofFailed, msg
	}
	if c.err != nil {
		return failed(fmt.Errorf("reading the log's checkpoint: %w", c.err))
	}
	p, err := c.s.log.Prove(ctx, e.Index, c.checkpoint)
	if err != nil {
		return failed(fmt.Errorf("building the inclusion proof of entry %d: %w", e.Index, err))
	}
	env, err := (&logproof.Envelope{Statement: e.Leaf, Proof: p}).Marshal()
	if err != nil {
		return failed(err)
	}
	if _, _, err := verify.LogProof(c.s.log.Origin(), c.s.logKey, env, res); err != nil {
		return failed(err)
	}
	return api.LogProofVerified, ""
}
