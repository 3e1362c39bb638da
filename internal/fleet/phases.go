package fleet

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/release"
)

// Buckets: a device's place in a rollout is a bucket from 0 to
// Buckets-1, a hash of the rollout's id and the device's id, so it is
// the same however often the rollout is recomputed, on any replica, and
// independent between rollouts. A phase of p percent holds the buckets
// below p*Buckets/100 (a resolution of 0.01%).
const Buckets = 10000

// Bucket is a device's bucket in a rollout.
func Bucket(rolloutID, deviceID string) int {
	var buf [128]byte
	h := sha256.Sum256(append(append(append(buf[:0], rolloutID...), 0), deviceID...))
	return int(binary.BigEndian.Uint64(h[:8]) % Buckets)
}

// Phase is one step of a rollout: a percentage of the selected devices,
// or a number of them.
type Phase struct {
	Percent float64 `json:"percent,omitempty"`
	Count   int     `json:"count,omitempty"`
}

func (p Phase) String() string {
	if p.Count > 0 {
		return strconv.Itoa(p.Count)
	}
	return strconv.FormatFloat(p.Percent, 'f', -1, 64) + "%"
}

// maxPhases bounds a rollout's phases.
const maxPhases = 20

// ParsePhases reads a comma-separated list of percentages ("1%,10%,100%")
// and device counts ("10,100,100%"), or "exp" (1%, 2%, 4%, ... 64%,
// 100%). Phases must grow, and the last must be 100%.
func ParsePhases(s string) ([]Phase, error) {
	bad := func(format string, args ...any) error {
		return refuse(Invalid, api.BadPhases, "phases %q: "+format, append([]any{s}, args...)...)
	}
	if strings.TrimSpace(s) == "exp" {
		var out []Phase
		for p := 1.0; p < 100; p *= 2 {
			out = append(out, Phase{Percent: p})
		}
		return append(out, Phase{Percent: 100}), nil
	}
	parts := strings.Split(s, ",")
	if s == "" || len(parts) > maxPhases {
		return nil, bad("give 1 to %d phases, comma-separated (1%%,10%%,100%%), or exp", maxPhases)
	}
	var out []Phase
	lastPct, lastCount := 0.0, 0
	for i, part := range parts {
		part = strings.TrimSpace(part)
		var ph Phase
		if num, ok := strings.CutSuffix(part, "%"); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil || math.IsNaN(f) || f <= 0 || f > 100 || math.Round(f*100) != f*100 {
				return nil, bad("%q is not a percentage above 0 and at most 100 (to 0.01%%)", part)
			}
			if f <= lastPct {
				return nil, bad("phase %d (%s) is not above the phase before it: phases must grow", i+1, part)
			}
			ph.Percent, lastPct = f, f
		} else {
			n, err := strconv.Atoi(part)
			if err != nil || n < 1 || n > 10_000_000 {
				return nil, bad("%q is neither a percentage (10%%) nor a device count (1 to 10000000)", part)
			}
			if n <= lastCount || lastPct > 0 {
				return nil, bad("phase %d (%s) is not above the phase before it: phases must grow (counts first, then percentages)", i+1, part)
			}
			ph.Count, lastCount = n, n
		}
		out = append(out, ph)
	}
	if out[len(out)-1].Percent != 100 {
		return nil, bad("the last phase must be 100%%, so that every selected device is reached")
	}
	return out, nil
}

// ParseRate reads a percentage ("2%", "0.5%") as a fraction.
func ParseRate(s string) (float64, error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || math.IsNaN(f) || f < 0 || f > 100 {
		return 0, refuse(Invalid, api.BadRollout, "max_failure_rate %q is not a percentage from 0%% to 100%%", s)
	}
	return f / 100, nil
}

// Spec is how a rollout advances, fixed when it is created.
type Spec struct {
	Phases         []Phase       `json:"phases"`
	Soak           time.Duration `json:"soak"`
	MaxFailureRate float64       `json:"max_failure_rate"`
	MinSuccess     int           `json:"min_success"`
	MaxConcurrent  int           `json:"max_concurrent"`
	// ApproveAfter is the number of phases after which promotion needs
	// approval (0: never).
	ApproveAfter int  `json:"approve_after"`
	Critical     bool `json:"critical"`
	// Window is the rollout's maintenance window (window.go); "" when
	// none.
	Window string `json:"window,omitempty"`
}

func (s Spec) phaseNames() []string {
	out := make([]string, len(s.Phases))
	for i, p := range s.Phases {
		out[i] = p.String()
	}
	return out
}

// Defaults of a rollout's gates.
const (
	DefaultSoak           = 30 * time.Minute
	DefaultMaxFailureRate = 0.02
	DefaultMinSuccess     = 1
	maxSoak               = 30 * 24 * time.Hour
	// Cooldown is how long a device that failed twice in a rollout is
	// not offered its release again (and holds no concurrency slot).
	Cooldown = 24 * time.Hour
	// maxFailures is how many failures put a device in the cool-down.
	maxFailures = 2
)

// ParseSpec reads and checks a rollout request's phases and gates.
func ParseSpec(req api.RolloutRequest) (Spec, error) {
	phases, err := ParsePhases(req.Phases)
	if err != nil {
		return Spec{}, err
	}
	sp := Spec{Phases: phases, Soak: DefaultSoak, MaxFailureRate: DefaultMaxFailureRate, MinSuccess: DefaultMinSuccess,
		MaxConcurrent: req.MaxConcurrent, Critical: req.Critical}
	if req.Soak != "" {
		d, err := time.ParseDuration(req.Soak)
		if err != nil || d < 0 || d > maxSoak {
			return Spec{}, refuse(Invalid, api.BadRollout, "soak %q is not a duration from 0s to %s (30m, 2h)", req.Soak, maxSoak)
		}
		sp.Soak = d
	}
	if req.MaxFailureRate != "" {
		if sp.MaxFailureRate, err = ParseRate(req.MaxFailureRate); err != nil {
			return Spec{}, err
		}
	}
	if req.MinSuccess != 0 {
		if req.MinSuccess < 0 || req.MinSuccess > 10_000_000 {
			return Spec{}, refuse(Invalid, api.BadRollout, "min_success %d is not from 1 to 10000000", req.MinSuccess)
		}
		sp.MinSuccess = req.MinSuccess
	}
	if req.MaxConcurrent < 0 || req.MaxConcurrent > 10_000_000 {
		return Spec{}, refuse(Invalid, api.BadRollout, "max_concurrent %d is not from 0 (no limit) to 10000000", req.MaxConcurrent)
	}
	if req.Window != "" {
		w, err := ParseWindow(req.Window)
		if err != nil {
			return Spec{}, err
		}
		sp.Window = w.String()
	}
	if req.ApproveAfter != "" {
		for i, p := range phases {
			if p.String() == strings.TrimSpace(req.ApproveAfter) {
				sp.ApproveAfter = i + 1
			}
		}
		if sp.ApproveAfter == 0 || sp.ApproveAfter == len(phases) {
			return Spec{}, refuse(Invalid, api.BadRollout, "approve_after %q must name a phase before the last (%s)", req.ApproveAfter, strings.Join(sp.phaseNames()[:len(phases)-1], ", "))
		}
	}
	return sp, nil
}

// threshold is the bucket bound of a percentage phase.
func (p Phase) threshold() int {
	return int(math.Round(p.Percent * Buckets / 100))
}

// countThreshold is the bucket bound that holds the n devices of the
// lowest buckets (sorted).
func countThreshold(sorted []int, n int) int {
	if n >= len(sorted) {
		return Buckets
	}
	return sorted[n-1] + 1
}

func (s Spec) String() string { return fmt.Sprintf("%v", s.phaseNames()) }

func parseTarget(target string) (product, version, file string, err error) {
	return release.ParseTargetPath(target)
}
