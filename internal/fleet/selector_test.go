package fleet

import (
	"errors"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/store"
)

func TestSelector(t *testing.T) {
	dev := &store.Device{ID: "gw-1", HardwareID: "acme-gw-rev2", Version: "2.4.1", SecurityVersion: 7, Tags: map[string]string{"site": "berlin", "risk": "high"}}
	bare := &store.Device{ID: "gw-2", HardwareID: "acme-gw-rev2"}
	for _, c := range []struct {
		expr      string
		dev, bare bool
	}{
		{``, true, true},
		{`hardware == "acme-gw-rev2" && tags.site != "lab"`, true, true},
		{`tags.site == "berlin"`, true, false},
		{`tags["site"] == ""`, false, true},
		{`has(tags.site)`, true, false},
		{`risk == "high"`, true, false},
		{`security_version >= 7 && version == "2.4.1"`, true, false},
		{`id in ["gw-2", "gw-3"]`, false, true},
		{`size(tags) == 0`, false, true},
	} {
		sel, err := CompileSelector(c.expr)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		if got := sel.Match(dev); got != c.dev {
			t.Errorf("%q on the tagged device: %v", c.expr, got)
		}
		if got := sel.Match(bare); got != c.bare {
			t.Errorf("%q on the bare device: %v", c.expr, got)
		}
	}
}

func TestSelectorErrorsHavePositions(t *testing.T) {
	for expr, want := range map[string]string{
		`hardware ==`:                       "selector 1:12: ",
		"hardware == \"x\" &&\n   tag == 1": "selector 2:4: undeclared reference to 'tag'",
		`hardware`:                          "selector 1:1: the expression gives string, not a bool",
		`version > 1`:                       "selector 1:9: found no matching overload for '_>_'",
	} {
		_, err := CompileSelector(expr)
		var r *Refusal
		if !errors.As(err, &r) || r.Kind != Invalid || r.Code != "bad-selector" || !strings.HasPrefix(r.Msg, want) {
			t.Errorf("%q: %v, want %q", expr, err, want)
		}
	}
}

// An expression whose evaluation is too costly selects nothing, rather
// than holding a check-in or a scan.
func TestSelectorCostIsBounded(t *testing.T) {
	sel, err := CompileSelector(`[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, a+b+c+d > 0))))`)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Match(&store.Device{ID: "x"}) {
		t.Fatal("an expression over the cost limit selected a device")
	}
}

// FuzzSelector: any text is refused with a position or compiles, and a
// compiled selector evaluates on any device without panicking.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{
		``, `hardware == "acme-gw-rev2" && tags.site != "lab"`, `has(tags.x) || risk == "high"`, `security_version > 3`,
		`id.matches("^gw-[0-9]+$")`, `tags[id] == version`, `(((`, `"\u0000"`, "a\n\nb", `size(tags) > 1 ? true : false`,
	} {
		f.Add(s, "k", "v")
	}
	f.Fuzz(func(t *testing.T, expr, k, v string) {
		sel, err := CompileSelector(expr)
		if err != nil {
			var r *Refusal
			if !errors.As(err, &r) || r.Code != "bad-selector" {
				t.Fatalf("%q: %v", expr, err)
			}
			return
		}
		sel.Match(&store.Device{ID: k, HardwareID: v, Tags: map[string]string{k: v}})
	})
}

// A fleet scan evaluates a selector once per distinct set of facts,
// unless it reads the id: then devices with equal facts may differ.
func TestScanMatcher(t *testing.T) {
	lab := map[string]string{"site": "lab"}
	facts := []store.DeviceFacts{
		{ID: "a", HardwareID: "hw", Version: "1.0.0", SecurityVersion: 1, Tags: lab, TagsKey: `{"site":"lab"}`},
		{ID: "b", HardwareID: "hw", Version: "1.0.0", SecurityVersion: 1, Tags: lab, TagsKey: `{"site":"lab"}`},
		{ID: "c", HardwareID: "hw", Version: "1.0.0", SecurityVersion: 1, TagsKey: `{}`},
		{ID: "d", HardwareID: "hw", Version: "1.0.0", SecurityVersion: 2, TagsKey: `{}`},
	}
	for _, c := range []struct {
		expr    string
		readsID bool
		want    string
	}{
		{`tags.site != "lab"`, false, "cd"},
		{`security_version > 1 || risk == "high"`, false, "d"},
		{`id == "b" || id == "c"`, true, "bc"},
		{`tags.site == "lab" && id != "a"`, true, "b"},
		{`["x"].exists(id, id == "x") && security_version == 1`, true, "abc"}, // a variable of its own named id: still not memoised
		{``, false, "abcd"},
	} {
		sel, err := CompileSelector(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		if sel.readsID != c.readsID {
			t.Errorf("%s: reads the id %v, want %v", c.expr, sel.readsID, c.readsID)
		}
		m := newScanMatcher(sel)
		got := ""
		for i := range facts {
			if m.match(&facts[i]) {
				got += facts[i].ID
			}
		}
		if got != c.want {
			t.Errorf("%s: selected %q, want %q", c.expr, got, c.want)
		}
		if !c.readsID && c.expr != "" && len(m.memo) != 3 {
			t.Errorf("%s: %d sets of facts remembered, want 3", c.expr, len(m.memo))
		}
	}
}
