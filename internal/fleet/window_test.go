package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones, whatever the test machine has

	"github.com/rampartfw/rampart/internal/api"
)

func TestParseWindowRefusals(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Mon-Fri 01:00-01:00 Europe/Berlin", "never opens"},
		{"Mon-Fri 01:00-05:00 Europe/Berln", `unknown time zone "Europe/Berln"`},
		{"Mon-Fri 01:00-05:00 Local", "time zone Local depends on the server"},
		{"Mon-Fry 01:00-05:00 UTC", `"Fry" is not a day`},
		{"Mon-Fri 1:00-05:00 UTC", `the start "1:00" is not a time`},
		{"Mon-Fri 01:00-24:30 UTC", `the end "24:30" is not a time`},
		{"Mon-Fri 24:00-05:00 UTC", `the start "24:00" is not a time`},
		{"Mon-Fri 01:00 UTC", `"01:00" is not HH:MM-HH:MM`},
		{"Mon-Fri", "give DAYS HH:MM-HH:MM ZONE"},
		{"Mon 01:00-02:00 UTC extra", "give DAYS HH:MM-HH:MM ZONE"},
		{strings.Repeat("x", 200), "more than 128"},
	} {
		_, err := ParseWindow(tc.in)
		var r *Refusal
		if !errors.As(err, &r) || r.Code != api.BadWindow || r.Kind != Invalid || !strings.Contains(r.Msg, tc.want) {
			t.Errorf("ParseWindow(%q) = %v, want bad-window with %q", tc.in, err, tc.want)
		}
	}
}

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWindowOpen(t *testing.T) {
	for _, tc := range []struct {
		window string
		at     string
		open   bool
	}{
		// 2026-12-07 is a Monday; Berlin is UTC+1 in winter.
		{"Mon-Fri 01:00-05:00 Europe/Berlin", "2026-12-07T00:00:00Z", true},  // 01:00 Berlin
		{"Mon-Fri 01:00-05:00 Europe/Berlin", "2026-12-06T23:59:00Z", false}, // 00:59 Berlin
		{"Mon-Fri 01:00-05:00 Europe/Berlin", "2026-12-07T04:00:00Z", false}, // 05:00 Berlin: closed
		{"Mon-Fri 01:00-05:00 Europe/Berlin", "2026-12-12T01:00:00Z", false}, // Saturday
		{"Mon-Fri 01:00-05:00 UTC", "2026-12-07T03:00:00Z", true},
		// Across midnight: opens on Friday evening, closes Saturday.
		{"Fri 22:00-02:00 UTC", "2026-12-11T23:30:00Z", true},
		{"Fri 22:00-02:00 UTC", "2026-12-12T01:59:00Z", true},
		{"Fri 22:00-02:00 UTC", "2026-12-12T02:00:00Z", false},
		{"Fri 22:00-02:00 UTC", "2026-12-11T01:00:00Z", false}, // Friday morning: Thursday is not listed
		{"Fri 22:00-02:00 UTC", "2026-12-12T23:00:00Z", false}, // Saturday evening
		// A week-wrapping range.
		{"Sat-Mon 10:00-11:00 UTC", "2026-12-13T10:30:00Z", true}, // Sunday
		{"Sat-Mon 10:00-11:00 UTC", "2026-12-09T10:30:00Z", false},
		{"daily 00:00-24:00 America/New_York", "2026-12-09T10:30:00Z", true},
		// DST: 2026-03-29 02:00 CET jumps to 03:00 CEST in Berlin.
		{"Sun 01:00-04:00 Europe/Berlin", "2026-03-29T00:30:00Z", true},  // 01:30 CET
		{"Sun 01:00-04:00 Europe/Berlin", "2026-03-29T01:30:00Z", true},  // 03:30 CEST
		{"Sun 01:00-04:00 Europe/Berlin", "2026-03-29T02:00:00Z", false}, // 04:00 CEST
		// 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice.
		{"Sun 02:00-03:00 Europe/Berlin", "2026-10-25T00:30:00Z", true}, // 02:30 CEST
		{"Sun 02:00-03:00 Europe/Berlin", "2026-10-25T01:30:00Z", true}, // 02:30 CET
		{"Sun 02:00-03:00 Europe/Berlin", "2026-10-25T02:00:00Z", false},
	} {
		w, err := ParseWindow(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Open(at(t, tc.at)); got != tc.open {
			t.Errorf("%q at %s: open %v, want %v", tc.window, tc.at, got, tc.open)
		}
	}
}

func TestWindowNextOpen(t *testing.T) {
	w, err := ParseWindow("Mon-Fri 01:00-05:00 Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// Saturday noon: next Monday 01:00 Berlin (00:00 UTC).
	got, ok := w.NextOpen(at(t, "2026-12-12T12:00:00Z"), 8*24*time.Hour)
	if !ok || !got.Equal(at(t, "2026-12-14T00:00:00Z")) {
		t.Errorf("next open = %v %v, want 2026-12-14T00:00:00Z", got, ok)
	}
	// The DST day skips 02:00-03:00 in Berlin: a window inside the gap
	// opens the next week.
	w, err = ParseWindow("Sun 02:00-03:00 Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	got, ok = w.NextOpen(at(t, "2026-03-28T12:00:00Z"), 8*24*time.Hour)
	if !ok || !got.Equal(at(t, "2026-04-05T00:00:00Z")) {
		t.Errorf("next open across the DST gap = %v %v, want 2026-04-05T00:00:00Z", got, ok)
	}
	if w.String() != "Sun 02:00-03:00 Europe/Berlin" {
		t.Errorf("String = %q", w)
	}
}
