package fleet

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

func mustPolicy(t *testing.T, file string) *Policy {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return p
}

func TestPolicyErrorsHavePositions(t *testing.T) {
	for _, tc := range []struct {
		name, src  string
		line, col  int
		msgContain string
	}{
		{"unknown field", "rules:\n  - name: typo\n    deny: device.hardwre == \"x\"\n", 3, 17, "undeclared reference to 'device.hardwre'"},
		{"unknown input", "rules:\n  - name: typo\n    allow: devices.risk == \"high\"\n", 3, 19, "undeclared reference"},
		{"syntax", "rules:\n  - name: bad\n    allow: device.risk == \n", 3, 26, "Syntax error"},
		{"quoted", "rules:\n  - name: q\n    allow: 'release.age_dayz > 3'\n", 3, 20, "undeclared reference to 'release.age_dayz'"},
		{"not a bool", "rules:\n  - name: n\n    allow: release.signer_count\n", 3, 12, "gives int, not a bool"},
		{"unknown key", "rules:\n  - name: k\n    alow: true\n", 3, 5, `unknown key "alow" in a rule`},
		{"unknown top key", "rule:\n  - name: k\n", 1, 1, `unknown key "rule"`},
		{"duplicate key", "rules:\n  - name: a\n    deny: true\n    deny: false\n", 4, 5, `key "deny" is given twice in a rule (first on line 3)`},
		{"duplicate top key", "default: allow\ndefault: deny\n", 2, 1, `key "default" is given twice`},
		{"both effects", "rules:\n  - name: a\n    deny: true\n    allow: true\n", 4, 12, "one of allow and deny, not both"},
		{"no effect", "rules:\n  - name: a\n", 2, 5, "rule a needs allow: EXPR or deny: EXPR"},
		{"no name", "rules:\n  - deny: true\n", 2, 5, "a rule needs a name"},
		{"bad name", "rules:\n  - name: Bad Name\n    deny: true\n", 2, 11, "a rule's name is"},
		{"same name", "rules:\n  - name: a\n    deny: true\n  - name: a\n    allow: true\n", 4, 5, "rule a is named twice (first on line 2)"},
		{"bad default", "default: maybe\n", 1, 10, "default must be allow or deny"},
		{"yaml syntax", "default: allow\n rules: d: e\n", 2, 1, "does not parse as YAML"},
		{"two documents", "rules: []\n---\nrules: []\n", 2, 1, "one YAML document"},
		{"alias", "x: &a\n  - 1\nrules: *a\n", 1, 1, ""},
		{"rules not a list", "rules: yes\n", 1, 8, "rules must be a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tc.src))
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *PolicyError", err)
			}
			if tc.name == "alias" {
				return // refused; where depends on which key is read first
			}
			if pe.Line != tc.line || pe.Column != tc.col || !strings.Contains(pe.Msg, tc.msgContain) {
				t.Errorf("got %d:%d: %s, want %d:%d: ...%s...", pe.Line, pe.Column, pe.Msg, tc.line, tc.col, tc.msgContain)
			}
		})
	}
}

func TestPolicyFilePositions(t *testing.T) {
	for _, tc := range []struct {
		file      string
		line, col int
	}{
		{"testdata/policy/unknown-field.yaml", 3, 17},
		{"testdata/policy/literal-block.yaml", 5, 16},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParsePolicy(b)
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Line != tc.line || pe.Column != tc.col {
			t.Errorf("%s: %v, want %d:%d", tc.file, err, tc.line, tc.col)
		}
	}
}

func TestPolicyEmptyAllows(t *testing.T) {
	for _, src := range []string{"", "  \n", "# nothing\n", "rules: []\n", "~\n"} {
		p, err := ParsePolicy([]byte(src))
		if err != nil || !p.DefaultAllow || len(p.Rules) != 0 {
			t.Errorf("%q: %+v %v", src, p, err)
		}
	}
	p, err := ParsePolicy([]byte("default: deny\n"))
	if err != nil || p.DefaultAllow {
		t.Fatalf("%+v %v", p, err)
	}
	if d := p.Decide(Inputs(&store.Device{ID: "d"}, ReleaseFacts{}, false, time.Now())); d.Allowed || d.Rule != "" || !strings.Contains(d.Reason, "default (deny)") {
		t.Errorf("%+v", d)
	}
}

// The three shipped examples (docs/policy.md).
func TestPolicyExamples(t *testing.T) {
	p := mustPolicy(t, "testdata/policy/examples.yaml")
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	fresh := ReleaseFacts{Target: "acme-gw/2.0.0/fw.img", Product: "acme-gw", Version: "2.0.0", SecurityVersion: 2,
		Signers: []string{"k1", "k2"}, Threshold: 2, Created: now.Add(-24 * time.Hour)}
	three := fresh
	three.Signers = []string{"k1", "k2", "k3"}
	stale := three
	stale.Created = now.Add(-31 * 24 * time.Hour)
	highRisk := &store.Device{ID: "hr", HardwareID: "hw", Tags: map[string]string{"risk": "high"}}
	lab := &store.Device{ID: "lab", HardwareID: "hw", Tags: map[string]string{"site": "lab", "risk": "high"}}
	plain := &store.Device{ID: "plain", HardwareID: "hw"}
	for _, tc := range []struct {
		name     string
		d        *store.Device
		rel      ReleaseFacts
		critical bool
		allowed  bool
		rule     string
	}{
		{"high risk, two signers", highRisk, fresh, false, false, "high-risk-needs-three-signers"},
		{"high risk, three signers", highRisk, three, false, true, ""},
		{"plain device, two signers", plain, fresh, false, true, ""},
		{"lab takes two signers", lab, fresh, false, true, "lab-takes-anything"},
		{"lab takes a stale release", lab, stale, false, true, "lab-takes-anything"},
		{"stale release refused", plain, stale, false, false, "no-stale-releases"},
		{"stale critical release taken", plain, stale, true, true, ""},
		{"high risk stale critical", highRisk, stale, true, true, ""},
	} {
		d := p.Decide(Inputs(tc.d, tc.rel, tc.critical, now))
		if d.Allowed != tc.allowed || d.Rule != tc.rule {
			t.Errorf("%s: allowed %v by %q (%s), want %v by %q", tc.name, d.Allowed, d.Rule, d.Reason, tc.allowed, tc.rule)
		}
	}
	// 30 days exactly is not older than 30 days.
	edge := three
	edge.Created = now.Add(-720 * time.Hour)
	if d := p.Decide(Inputs(plain, edge, false, now)); !d.Allowed {
		t.Errorf("a release of exactly 30 days is refused: %s", d.Reason)
	}
}

func TestPolicyTraceAndReason(t *testing.T) {
	p := mustPolicy(t, "testdata/policy/examples.yaml")
	now := time.Now()
	d := p.Decide(Inputs(&store.Device{ID: "x", Tags: map[string]string{"risk": "high"}}, ReleaseFacts{Signers: []string{"a"}, Created: now}, false, now))
	if d.Allowed || d.Rule != "high-risk-needs-three-signers" || len(d.Trace) != 2 || d.Trace[0].Matched || !d.Trace[1].Matched {
		t.Fatalf("%+v", d)
	}
	if !strings.Contains(d.Reason, "deny rule high-risk-needs-three-signers (line 9) matched: device.risk == \"high\" && release.signer_count < 3") {
		t.Errorf("reason %q", d.Reason)
	}
}

func TestPolicyEvalErrorDenies(t *testing.T) {
	// Indexing past a list's end fails at evaluation: a deny rule that
	// fails denies, an allow rule that fails does not allow.
	p, err := ParsePolicy([]byte("default: deny\nrules:\n  - name: a\n    allow: release.signers[5] == \"k\"\n  - name: d\n    deny: release.signers[5] == \"k\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide(Inputs(&store.Device{ID: "x"}, ReleaseFacts{}, false, time.Now()))
	if d.Allowed || d.Rule != "d" || d.Trace[0].Error == "" || d.Trace[0].Matched || !strings.Contains(d.Reason, "could not be evaluated") {
		t.Errorf("%+v", d)
	}
}

func TestPolicyTooLarge(t *testing.T) {
	_, err := ParsePolicy([]byte(strings.Repeat("#", MaxPolicyBytes+1)))
	var pe *PolicyError
	if !errors.As(err, &pe) || !strings.Contains(pe.Msg, "more than") {
		t.Errorf("%v", err)
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range MaxPolicyRules + 1 {
		b.WriteString("  - name: r" + itoa(i) + "\n    deny: false\n")
	}
	_, err = ParsePolicy([]byte(b.String()))
	if !errors.As(err, &pe) || !strings.Contains(pe.Msg, "more than 100 rules") {
		t.Errorf("%v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func FuzzParsePolicy(f *testing.F) {
	for _, file := range []string{"testdata/policy/examples.yaml", "testdata/policy/unknown-field.yaml", "testdata/policy/literal-block.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := ParsePolicy(src)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) || pe.Line < 1 || pe.Column < 1 {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		if len(p.Rules) > MaxPolicyRules {
			t.Fatalf("%d rules", len(p.Rules))
		}
		// Whatever compiled evaluates without panicking.
		p.Decide(Inputs(&store.Device{ID: "d", Tags: map[string]string{"site": "lab"}}, ReleaseFacts{Signers: []string{"a"}}, false, time.Now()))
	})
}
