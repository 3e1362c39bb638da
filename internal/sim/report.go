package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/termsafe"
)

// Report is what a run of the simulator did, at the end or so far.
type Report struct {
	Devices int
	// ByState counts devices by the state of their last check-in
	// (StateEnrolling, StateIdle, ...).
	ByState map[string]int
	// ByRelease counts devices by the version they run ("factory" for the
	// image they were made with).
	ByRelease map[string]int
	Checkins  int64
	// CheckinP50 and CheckinP99 are of the check-in proper: Agent.Run
	// up to its verified decision (settling, queued reports, both
	// repositories and the log), all of it when it installed nothing.
	// A check-in that failed counts whole.
	CheckinP50, CheckinP99 time.Duration
	// Installs counts the check-ins that went on to install; InstallP50
	// and InstallP99 are of that part (the chunk index, the image, the
	// slot, the boot request), which grows with the image.
	Installs               int64
	InstallP50, InstallP99 time.Duration
	// Errors counts what went wrong that no fault knob explains.
	Errors int64
	// ErrorSamples are the first few distinct error messages.
	ErrorSamples []string
	// TamperRefusals counts check-ins that refused a tampered chunk with
	// the refusal class "mismatch", the running slot untouched.
	TamperRefusals int64
	// PowerCuts counts cuts made; PowerCutsSurvived the devices that came
	// back from one into a settled state booting a verified image.
	PowerCuts, PowerCutsSurvived int64
	// Drops counts image transfers cut halfway; RolledBack the trial
	// boots that failed their health check and were rolled back.
	Drops, RolledBack int64
	// PerDevice is every device's summary, in id order.
	PerDevice []DeviceReport
	Elapsed   time.Duration
}

// DeviceReport is one device's summary.
type DeviceReport struct {
	ID             string
	Fault          Fault
	State, Release string
	// Reason is the reason of the last rollback, or the last error.
	Reason         string
	TamperRefusals int
	PowerCuts      int
	Survived       bool
}

// jsonReport is the --json interface: exactly these members.
type jsonReport struct {
	Devices           int            `json:"devices"`
	ByState           map[string]int `json:"by_state"`
	ByRelease         map[string]int `json:"by_release"`
	Checkins          int64          `json:"checkins"`
	CheckinP50ms      float64        `json:"checkin_p50_ms"`
	CheckinP99ms      float64        `json:"checkin_p99_ms"`
	Installs          int64          `json:"installs"`
	InstallP50ms      float64        `json:"install_p50_ms"`
	InstallP99ms      float64        `json:"install_p99_ms"`
	Errors            int64          `json:"errors"`
	TamperRefusals    int64          `json:"tamper_refusals"`
	PowerCutsSurvived int64          `json:"power_cuts_survived"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*100) / 100 }

// WriteJSON writes the report as the --json object.
func (r *Report) WriteJSON(w io.Writer) error {
	j := jsonReport{Devices: r.Devices, ByState: r.ByState, ByRelease: r.ByRelease, Checkins: r.Checkins,
		CheckinP50ms: ms(r.CheckinP50), CheckinP99ms: ms(r.CheckinP99),
		Installs: r.Installs, InstallP50ms: ms(r.InstallP50), InstallP99ms: ms(r.InstallP99), Errors: r.Errors,
		TamperRefusals: r.TamperRefusals, PowerCutsSurvived: r.PowerCutsSurvived}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}

// WriteText writes the final human report. Versions and error messages
// came from the server or the network: they are made safe to print.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%d devices, %s, %d check-ins (%.0f/s), check-in p50 %s, p99 %s\n",
		r.Devices, r.Elapsed.Round(time.Second), r.Checkins, rate(r.Checkins, r.Elapsed), round(r.CheckinP50), round(r.CheckinP99))
	fmt.Fprintf(w, "installs:   %d, install p50 %s, p99 %s (after the check-in's decision)\n", r.Installs, round(r.InstallP50), round(r.InstallP99))
	fmt.Fprintf(w, "by state:   %s\n", counts(r.ByState))
	fmt.Fprintf(w, "by release: %s\n", counts(r.ByRelease))
	fmt.Fprintf(w, "faults:     %d tampered chunks refused, %d power cuts (%d survived), %d downloads dropped, %d health checks failed and rolled back\n",
		r.TamperRefusals, r.PowerCuts, r.PowerCutsSurvived, r.Drops, r.RolledBack)
	fmt.Fprintf(w, "errors:     %d\n", r.Errors)
	for _, s := range r.ErrorSamples {
		fmt.Fprintf(w, "  %s\n", termsafe.Bounded(s, 300))
	}
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(10 * time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", termsafe.Bounded(k, 64), m[k])
	}
	return strings.Join(parts, ", ")
}

// liveLine is the one-line terminal view, redrawn in place.
func liveLine(r *Report, perSecond float64) string {
	return fmt.Sprintf("\r\033[K%s | %.0f check-ins/s | p50 %s p99 %s | errors %d",
		counts(r.ByState), perSecond, round(r.CheckinP50), round(r.CheckinP99), r.Errors)
}

// histogram records durations in logarithmic buckets (about 2 % wide, from
// 10 µs to about 20 minutes), so percentiles cost fixed memory however
// many check-ins a run makes. It is safe for concurrent use.
type histogram struct {
	mu     sync.Mutex
	counts [histBuckets]int64
	n      int64
}

const (
	histBuckets = 1000
	histMin     = 10 * time.Microsecond
	histGrowth  = 1.02
)

func bucketOf(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(histMin))/math.Log(histGrowth)) + 1
	return min(i, histBuckets-1)
}

func bucketValue(i int) time.Duration {
	if i == 0 {
		return histMin
	}
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
}

// total is the number of recorded values.
func (h *histogram) total() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func (h *histogram) add(d time.Duration) {
	h.mu.Lock()
	h.counts[bucketOf(d)]++
	h.n++
	h.mu.Unlock()
}

// quantiles returns the durations below which the fractions qs of the
// recorded values fall (the upper edge of the bucket).
func (h *histogram) quantiles(qs ...float64) []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]time.Duration, len(qs))
	if h.n == 0 {
		return out
	}
	for j, q := range qs {
		want := int64(math.Ceil(q * float64(h.n)))
		var seen int64
		i := 0
		for ; i < histBuckets; i++ {
			seen += h.counts[i]
			if seen >= want {
				break
			}
		}
		out[j] = bucketValue(min(i, histBuckets-1))
	}
	return out
}
