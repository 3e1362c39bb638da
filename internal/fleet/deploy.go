package fleet

import (
	"context"
	"strconv"
	"strings"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

// Deploy assigns a published release to every enrolled, unrevoked device
// of a hardware id that exists now, with its audit entry. (Rollouts
// refine this: phases, gates, and devices enrolled later.)
func (s *Service) Deploy(ctx context.Context, op Op, req api.DeployRequest) (api.Deployed, error) {
	// PRODUCT/VERSION names the release's only file; a full path works
	// too. A bare product is refused: it would pick whichever release
	// happens to be the product's only one.
	product, ok := deployTarget(req.Target)
	if !ok {
		return api.Deployed{}, refuse(Invalid, api.BadTarget, "%q is not PRODUCT/VERSION or PRODUCT/VERSION/FILE", req.Target)
	}
	roles, err := s.productRoles(ctx)
	if err != nil {
		return api.Deployed{}, err
	}
	role := roles[product]
	if role == nil {
		return api.Deployed{}, refuse(NotFound, api.UnknownRelease, "no published release %s", req.Target)
	}
	var matches []string
	for path := range role.Signed.Targets {
		if path == req.Target || strings.HasPrefix(path, req.Target+"/") {
			matches = append(matches, path)
		}
	}
	if len(matches) != 1 {
		if len(matches) == 0 {
			return api.Deployed{}, refuse(NotFound, api.UnknownRelease, "no published release %s", req.Target)
		}
		return api.Deployed{}, refuse(Invalid, api.AmbiguousTarget, "%s names several files: %v; give one", req.Target, matches)
	}
	target := matches[0]
	if err := s.refuseRevoked(ctx, target); err != nil {
		return api.Deployed{}, err
	}
	meta, err := release.FromTarget(target, role.Signed.Targets[target])
	if err != nil {
		return api.Deployed{}, err
	}
	if !meta.Supports(req.Hardware) {
		return api.Deployed{}, refuse(Unprocessable, api.WrongHardware, "release %s is for %v, not %s", target, meta.HardwareIDs, req.Hardware)
	}
	// The devices are read in the deployment's transaction, so a device
	// revoked meanwhile is not assigned.
	var ids []string
	var n int
	err = s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		devs, err := tx.DevicesByHardware(ctx, req.Hardware)
		if err != nil {
			return event{}, err
		}
		for _, d := range devs {
			if d.RevokedAt.IsZero() {
				ids = append(ids, d.ID)
			}
		}
		if n, err = tx.Assign(ctx, target, ids, s.now()); err != nil {
			return event{}, err
		}
		return event{op.Actor, "deploy", target, "ok", map[string]string{"hardware": req.Hardware, "devices": strconv.Itoa(len(ids)), "changed": strconv.Itoa(n)}}, nil
	})
	if err != nil {
		return api.Deployed{}, err
	}
	return api.Deployed{Target: target, Devices: len(ids), Changed: n}, nil
}

// deployTarget returns the product of a deployment's target when the
// target is PRODUCT/VERSION or PRODUCT/VERSION/FILE.
func deployTarget(target string) (product string, ok bool) {
	parts := strings.Split(target, "/")
	if len(parts) == 3 {
		p, _, _, err := release.ParseTargetPath(target)
		return p, err == nil
	}
	if len(parts) != 2 || release.ValidateProduct(parts[0]) != nil || release.ValidateVersion(parts[1]) != nil {
		return "", false
	}
	return parts[0], true
}
