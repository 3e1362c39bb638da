package fleet

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
)

func TestPercentileNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Second)
	}
	if p := percentile(d, 50); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(d, 95); p != 95 {
		t.Errorf("p95 = %v", p)
	}
	if p := percentile(d[:1], 95); p != 1 {
		t.Errorf("p95 of one = %v", p)
	}
}

// Versions come from devices: however many there are, at most
// MaxStatsVersions are named, the rest counted as "other".
func TestTopNBoundsTheVersions(t *testing.T) {
	m := map[string]int{}
	for i := range 500 {
		m[fmt.Sprintf("1.0.%d", i)] = i + 1
	}
	out := topN(m, func(s string) string { return s })
	if len(out) != 51 || out["1.0.499"] != 500 || out["1.0.449"] != 0 && out["1.0.450"] != 451 {
		t.Fatalf("%d keys: %v", len(out), out["other"])
	}
	sum := 0
	for _, n := range out {
		sum += n
	}
	if sum != 500*501/2 {
		t.Fatalf("counts lost: %d", sum)
	}
}

func TestKnownClassesNamesEveryClass(t *testing.T) {
	out := knownClasses(map[string]int{"rollback": 2, "made-up": 1})
	if out["rollback"] != 2 || out["bad-signature"] != 0 || out["other"] != 1 || len(out) != len(api.RefusalClasses)+1 {
		t.Fatalf("%v", out)
	}
}

func TestRotationStepsPerKind(t *testing.T) {
	for kind, want := range map[string]string{
		KindReleaseSigner: "rampart repo rotate repo acme-gw --remove-key ab",
		KindProductKey:    "rampart repo stage repo acme-gw",
		KindTargets:       "rampart repo rotate repo targets --remove-key ab",
		KindRoot:          "rampart repo sign repo root",
	} {
		role := "acme-gw"
		if kind == KindTargets || kind == KindRoot {
			role = kind
		}
		steps := fmt.Sprint(RotationSteps(kind, role, "ab"))
		if !contains(steps, want) {
			t.Errorf("%s: %s lacks %q", kind, steps, want)
		}
	}
	if s := fmt.Sprint(RotationSteps(KindOnline, "director-targets", "ab")); !contains(s, "rotate-keys --data DATA --director") || !contains(s, "rampart repo rotate director targets --remove-key ab") {
		t.Error(s)
	}
	if s := fmt.Sprint(RotationSteps(KindOnline, "timestamp", "ab")); !contains(s, "rotate-keys --data DATA --image") {
		t.Error(s)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
