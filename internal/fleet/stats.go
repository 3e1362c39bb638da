package fleet

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
)

// Fleet statistics. Each is read from indexed state by grouped queries
// (store.Incidents): devices by version, rollout outcomes by status,
// refusals by class, recoveries summed. Only the install-time
// percentiles read rows, and at most maxInstallTimes of them (the latest
// installs): docs/performance.md has the figure over 100,000 devices.
//
// What they mean, so that they tell the truth:
//   - update_success_rate is confirmed installs (a confirmed-boot report
//     of the rollout's release) over those plus failures (rollbacks and
//     failed installs, each retry's included) in rollouts. Refusals of
//     tampered data and network errors are neither: a refusal is a
//     tamper detection, a network error is retried by the agent.
//   - time to install runs from the moment the server handed the device
//     the release (its assignment) to its confirmed-boot report.
//   - mttr runs from the moment the server found a device on a failed
//     deployment (a confirmed release whose signing key was revoked) to
//     its confirmed boot of a release not signed with a revoked key.
//     Rollbacks are not counted: the agent is back on its previous,
//     confirmed release before the server hears of the failure, so a
//     duration would be made up.
//   - tamper detections are verification-refused reports by class.

// maxInstallTimes bounds the install times the percentiles are computed
// from: the latest installs.
const maxInstallTimes = 10_000

// StatsStore is what statistics read of the store.
type StatsStore interface {
	DeviceCounts(ctx context.Context) (store.DeviceCounts, error)
	RefusalCounts(ctx context.Context) (map[string]int, error)
	RolloutStats(ctx context.Context, rolloutID string, limit int) (store.RolloutStats, error)
	RecoveryStats(ctx context.Context, rolloutID string) (store.RecoveryStats, error)
}

// FleetStats returns the fleet's statistics (api.FleetStats).
func (s *Service) FleetStats(ctx context.Context) (api.FleetStats, error) {
	dc, err := s.store.DeviceCounts(ctx)
	if err != nil {
		return api.FleetStats{}, err
	}
	out := api.FleetStats{Devices: dc.Devices, ByVersion: topN(dc.ByVersion, func(v string) string {
		if v == "" {
			return "none"
		}
		return v
	}), BySecurityVersion: topN(dc.BySecurityVersion, func(sv uint64) string { return strconv.FormatUint(sv, 10) })}
	rs, err := s.rolloutStats(ctx, "")
	if err != nil {
		return api.FleetStats{}, err
	}
	out.UpdateSuccessRate, out.TimeToInstallP50, out.TimeToInstallP95, out.MTTR = rs.UpdateSuccessRate, rs.TimeToInstallP50, rs.TimeToInstallP95, rs.MTTR
	refusals, err := s.store.RefusalCounts(ctx)
	if err != nil {
		return api.FleetStats{}, err
	}
	out.TamperDetections = knownClasses(refusals)
	return out, nil
}

// rolloutStats returns a rollout's statistics ("" for every rollout's);
// its tamper detections are its devices whose latest report in it was a
// refusal.
func (s *Service) rolloutStats(ctx context.Context, id string) (api.RolloutStats, error) {
	st, err := s.store.RolloutStats(ctx, id, maxInstallTimes)
	if err != nil {
		return api.RolloutStats{}, err
	}
	rec, err := s.store.RecoveryStats(ctx, id)
	if err != nil {
		return api.RolloutStats{}, err
	}
	out := api.RolloutStats{TamperDetections: knownClasses(st.Refusals)}
	if n := st.Installed + st.Failures; n > 0 {
		out.UpdateSuccessRate = ptr(round(float64(st.Installed)/float64(n), 4))
	}
	if len(st.InstallTimes) > 0 {
		slices.Sort(st.InstallTimes)
		out.TimeToInstallP50 = ptr(percentile(st.InstallTimes, 50))
		out.TimeToInstallP95 = ptr(percentile(st.InstallTimes, 95))
	}
	if rec.Closed > 0 {
		out.MTTR = ptr(round((rec.Total / time.Duration(rec.Closed)).Seconds(), 3))
	}
	return out, nil
}

// percentile returns the p-th percentile (nearest rank) of sorted
// durations, in seconds.
func percentile(sorted []time.Duration, p int) float64 {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n), from 1
	return round(sorted[max(rank, 1)-1].Seconds(), 3)
}

func round(f float64, digits int) float64 {
	s := strconv.FormatFloat(f, 'f', digits, 64)
	r, _ := strconv.ParseFloat(s, 64)
	return r
}

func ptr[T any](v T) *T { return &v }

// topN names the api.MaxStatsVersions keys with the most devices (ties
// by name) and counts the rest as "other": the keys are what devices
// reported, so their number is bounded here, whatever they sent.
func topN[K cmp.Ordered](m map[K]int, name func(K) string) map[string]int {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b K) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	out := map[string]int{}
	for i, k := range keys {
		if i < api.MaxStatsVersions {
			out[name(k)] += m[k]
		} else {
			out["other"] += m[k]
		}
	}
	return out
}

// knownClasses keeps the counts of the known refusal classes, every one
// named (0 when none), and counts anything else as "other".
func knownClasses(m map[string]int) map[string]int {
	out := map[string]int{}
	for _, c := range api.RefusalClasses {
		out[string(c)] = 0
	}
	for k, n := range m {
		if _, ok := out[k]; ok {
			out[k] += n
		} else {
			out["other"] += n
		}
	}
	return out
}
