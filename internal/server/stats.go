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

	mu    sync.Mutex
	at    time.Time
	stats api.FleetStats
	err   error

	devices, byVersion, bySV, success, install, mttr, tamper *prometheus.Desc
}

func newFleetCollector(f *fleet.Service, logger *slog.Logger) *fleetCollector {
	return &fleetCollector{fleet: f, logger: logger,
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
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.byVersion, c.bySV, c.success, c.install, c.mttr, c.tamper} {
		ch <- d
	}
}

func (c *fleetCollector) read() (api.FleetStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < statsEvery && !c.at.IsZero() {
		return c.stats, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.stats, c.err = c.fleet.FleetStats(ctx)
	c.at = time.Now()
	if c.err != nil {
		c.logger.Error("fleet statistics for /metrics", "err", c.err)
	}
	return c.stats, c.err
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.read()
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
