package server

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
)

func (s *Server) handleFleetStats(w http.ResponseWriter, r *http.Request) {
	out, err := s.fleet.FleetStats(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// promVersions is how many versions (and security versions) the fleet
// metrics label; the others are summed under "other". A label value is a
// series the server keeps for good: versions come from what devices
// report, so their number is bounded here.
const promVersions = 10

// statsEvery is how long a scrape's fleet statistics are reused: a
// scrape reads them from the store at most this often.
const statsEvery = 15 * time.Second

// fleetCollector exports the fleet statistics (fleet.Service.FleetStats)
// as Prometheus metrics with bounded label sets: no device label, the
// promVersions most common versions, the refusal classes (a closed set).
type fleetCollector struct {
	fleet  *fleet.Service
	logger *slog.Logger
	now    func() time.Time // the server's clock, for the cache

	mu       sync.Mutex
	at       time.Time
	stats    api.FleetStats
	rollouts []api.Rollout // the open ones, with their stats
	err      error

	devices, byVersion, bySV, success, install, mttr, tamper *prometheus.Desc
	// Per open rollout (waiting for approval, running or paused), at most
	// promRollouts of them, newest first: a rollout label is bounded by
	// that, and leaves the series when the rollout ends.
	roInfo, roPhase, roDevices, roSuccess, roInstall, roMTTR, roTamper *prometheus.Desc
}

// promRollouts is how many open rollouts the metrics label.
const promRollouts = 20

func newFleetCollector(f *fleet.Service, logger *slog.Logger, now func() time.Time) *fleetCollector {
	return &fleetCollector{fleet: f, logger: logger, now: now,
		devices: prometheus.NewDesc("rampart_fleet_devices", "Unrevoked devices.", nil, nil),
		byVersion: prometheus.NewDesc("rampart_fleet_devices_by_version",
			"Unrevoked devices by the release they last confirmed (the 10 most common; \"none\" before any, \"other\" for the rest).", []string{"version"}, nil),
		bySV: prometheus.NewDesc("rampart_fleet_devices_by_security_version",
			"Unrevoked devices by the security version they last confirmed (the 10 most common, \"other\" for the rest).", []string{"security_version"}, nil),
		success: prometheus.NewDesc("rampart_fleet_update_success_ratio",
			"Confirmed installs over confirmed installs plus rollbacks and failed installs, in every rollout (absent before any).", nil, nil),
		install: prometheus.NewDesc("rampart_fleet_time_to_install_seconds",
			"Time from a release's hand-out to the device's confirmed boot, of the latest 10,000 installs in rollouts.", []string{"quantile"}, nil),
		mttr: prometheus.NewDesc("rampart_fleet_mttr_seconds",
			"Mean time from a device found on a failed deployment (a release signed with a revoked key) to its confirmed boot of a good release.", nil, nil),
		tamper: prometheus.NewDesc("rampart_fleet_tamper_detections_total",
			"Verification refusals devices reported, by refusal class (attacks the agent recognised; not failures).", []string{"class"}, nil),
		roInfo: prometheus.NewDesc("rampart_rollout_info",
			"An open rollout (the 20 newest waiting for approval, running or paused): always 1, with its release (target path) and state.", []string{"rollout", "release", "state"}, nil),
		roPhase: prometheus.NewDesc("rampart_rollout_phase",
			"An open rollout's current phase, from 1.", []string{"rollout"}, nil),
		roDevices: prometheus.NewDesc("rampart_rollout_devices",
			"An open rollout's devices by status (pending, downloading, installing, installed, rolled-back, failed, refused, policy-denied).", []string{"rollout", "status"}, nil),
		roSuccess: prometheus.NewDesc("rampart_rollout_update_success_ratio",
			"An open rollout's confirmed installs over confirmed installs plus rollbacks and failed installs (absent before any).", []string{"rollout"}, nil),
		roInstall: prometheus.NewDesc("rampart_rollout_time_to_install_seconds",
			"An open rollout's time from hand-out to confirmed boot.", []string{"rollout", "quantile"}, nil),
		roMTTR: prometheus.NewDesc("rampart_rollout_mttr_seconds",
			"An open rollout's mean time to recover, for the redeploy after an incident.", []string{"rollout"}, nil),
		roTamper: prometheus.NewDesc("rampart_rollout_tamper_detections",
			"Verification refusals an open rollout's devices reported, by refusal class.", []string{"rollout", "class"}, nil),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.byVersion, c.bySV, c.success, c.install, c.mttr, c.tamper,
		c.roInfo, c.roPhase, c.roDevices, c.roSuccess, c.roInstall, c.roMTTR, c.roTamper} {
		ch <- d
	}
}

func (c *fleetCollector) read() (api.FleetStats, []api.Rollout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.at) < statsEvery && now.Sub(c.at) >= 0 && !c.at.IsZero() {
		return c.stats, c.rollouts, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.stats, c.err = c.fleet.FleetStats(ctx)
	if c.err == nil {
		c.rollouts, c.err = c.openRollouts(ctx)
	}
	c.at = c.now()
	if c.err != nil {
		c.logger.Error("fleet statistics for /metrics", "err", c.err)
	}
	return c.stats, c.rollouts, c.err
}

// openRollouts returns the promRollouts newest open rollouts with their
// statistics.
func (c *fleetCollector) openRollouts(ctx context.Context) ([]api.Rollout, error) {
	list, err := c.fleet.ListRollouts(ctx)
	if err != nil {
		return nil, err
	}
	open := slices.DeleteFunc(list.Rollouts, func(r api.Rollout) bool {
		return r.State == api.RolloutCompleted || r.State == api.RolloutAborted
	})
	slices.SortStableFunc(open, func(a, b api.Rollout) int { return b.CreatedAt.Compare(a.CreatedAt) })
	var out []api.Rollout
	for _, r := range open[:min(len(open), promRollouts)] {
		full, err := c.fleet.ShowRollout(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, full)
	}
	return out, nil
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st, rollouts, err := c.read()
	if err != nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.devices, float64(st.Devices))
	for k, n := range bounded(st.ByVersion) {
		gauge(c.byVersion, float64(n), k)
	}
	for k, n := range bounded(st.BySecurityVersion) {
		gauge(c.bySV, float64(n), k)
	}
	if st.UpdateSuccessRate != nil {
		gauge(c.success, *st.UpdateSuccessRate)
	}
	if st.TimeToInstallP50 != nil {
		gauge(c.install, *st.TimeToInstallP50, "0.5")
		gauge(c.install, *st.TimeToInstallP95, "0.95")
	}
	if st.MTTR != nil {
		gauge(c.mttr, *st.MTTR)
	}
	for _, class := range api.RefusalClasses {
		ch <- prometheus.MustNewConstMetric(c.tamper, prometheus.CounterValue, float64(st.TamperDetections[string(class)]), string(class))
	}
	for _, r := range rollouts {
		gauge(c.roInfo, 1, r.ID, r.Release, r.State)
		gauge(c.roPhase, float64(r.Phase), r.ID)
		n := r.Counts
		for status, v := range map[string]int{"pending": n.Pending, "downloading": n.Downloading, "installing": n.Installing, "installed": n.Installed,
			"rolled-back": n.RolledBack, "failed": n.Failed, "refused": n.Refused, "policy-denied": n.PolicyDenied} {
			gauge(c.roDevices, float64(v), r.ID, status)
		}
		if r.Stats == nil {
			continue
		}
		if r.Stats.UpdateSuccessRate != nil {
			gauge(c.roSuccess, *r.Stats.UpdateSuccessRate, r.ID)
		}
		if r.Stats.TimeToInstallP50 != nil && r.Stats.TimeToInstallP95 != nil {
			gauge(c.roInstall, *r.Stats.TimeToInstallP50, r.ID, "0.5")
			gauge(c.roInstall, *r.Stats.TimeToInstallP95, r.ID, "0.95")
		}
		if r.Stats.MTTR != nil {
			gauge(c.roMTTR, *r.Stats.MTTR, r.ID)
		}
		for _, class := range api.RefusalClasses {
			gauge(c.roTamper, float64(r.Stats.TamperDetections[string(class)]), r.ID, string(class))
		}
	}
}

// bounded keeps the promVersions largest counts of m (ties by name) and
// sums the rest under "other".
func bounded(m map[string]int) map[string]int {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		if a < b {
			return -1
		}
		return 1
	})
	out := map[string]int{}
	for i, k := range keys {
		if i < promVersions && k != "other" {
			out[k] = m[k]
		} else {
			out["other"] += m[k]
		}
	}
	return out
}
