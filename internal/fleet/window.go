package fleet

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
)

// Maintenance windows. A window is "DAYS HH:MM-HH:MM ZONE":
//
//	Mon-Fri 01:00-05:00 Europe/Berlin
//	Sat,Sun 22:00-02:00 America/New_York   (crosses midnight)
//	daily 00:00-24:00 UTC
//
// DAYS is "daily" or a comma-separated list of days (Mon, Tue, Wed, Thu,
// Fri, Sat, Sun) and day ranges (Mon-Fri; Fri-Mon wraps over the
// week's end); they name the day the window opens on, so a window that
// crosses midnight ("Fri 22:00-02:00") closes on the next day (Saturday
// 02:00). The times are wall-clock times in ZONE, an IANA time zone
// name from the standard library's zone database ("UTC" when it is
// left out): on a day a daylight-saving change skips part of the
// window, that part does not exist and the window is shorter; a repeated
// hour is inside it twice. A window that opens for no time (start equal
// to end) or never in a year is refused.
//
// A rollout's window (--window) holds its phase outside the window: no
// device is newly offered the release and the phase is not promoted;
// devices in flight finish. A device's own window is its tag "window"
// (WindowTag), in the same syntax: outside it, the device is offered
// nothing either. Both must be open. A critical rollout ignores both.

// WindowTag is the device tag that holds a device's own maintenance
// window.
const WindowTag = "window"

// maxWindowBytes bounds a window's text.
const maxWindowBytes = 128

// Window is a parsed maintenance window.
type Window struct {
	src        string
	days       [7]bool // by time.Weekday: the days it opens on
	start, end int     // minutes after midnight; end may be 1440
	loc        *time.Location
}

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// ParseWindow reads a window; an error is a *Refusal (bad-window) that
// says which part is wrong. A window that never opens is refused.
func ParseWindow(s string) (*Window, error) {
	bad := func(format string, args ...any) error {
		return refuse(Invalid, api.BadWindow, "window %q: "+format, append([]any{s}, args...)...)
	}
	if len(s) > maxWindowBytes {
		return nil, refuse(Invalid, api.BadWindow, "the window is %d bytes, more than %d", len(s), maxWindowBytes)
	}
	f := strings.Fields(s)
	if len(f) != 2 && len(f) != 3 {
		return nil, bad("give DAYS HH:MM-HH:MM ZONE, such as Mon-Fri 01:00-05:00 Europe/Berlin")
	}
	w := &Window{src: strings.Join(f, " "), loc: time.UTC}
	if err := w.parseDays(f[0]); err != nil {
		return nil, bad("%v", err)
	}
	from, to, ok := strings.Cut(f[1], "-")
	if !ok {
		return nil, bad("%q is not HH:MM-HH:MM", f[1])
	}
	var err error
	if w.start, err = clock(from, false); err != nil {
		return nil, bad("the start %v", err)
	}
	if w.end, err = clock(to, true); err != nil {
		return nil, bad("the end %v", err)
	}
	if w.start == w.end {
		return nil, bad("it opens at %s and closes at the same time, so it never opens (00:00-24:00 is a whole day)", from)
	}
	if len(f) == 3 {
		if f[2] == "Local" {
			return nil, bad("time zone Local depends on the server's machine: name the zone (Europe/Berlin, UTC)")
		}
		if w.loc, err = time.LoadLocation(f[2]); err != nil {
			return nil, bad("unknown time zone %q: give an IANA zone name such as Europe/Berlin, America/New_York or UTC", f[2])
		}
	}
	// Every weekday-and-time window opens within a year unless the zone
	// skips it every time: check rather than reason about zones.
	if _, ok := w.NextOpen(time.Now(), 366*24*time.Hour); !ok {
		return nil, bad("it never opens in %s (the zone's clock skips it)", w.loc)
	}
	return w, nil
}

func (w *Window) parseDays(s string) error {
	if strings.EqualFold(s, "daily") || s == "*" {
		w.days = [7]bool{true, true, true, true, true, true, true}
		return nil
	}
	for part := range strings.SplitSeq(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, ok := dayNames[strings.ToLower(a)]
		if !ok {
			return fmt.Errorf("%q is not a day: use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges (Mon-Fri) or daily", a)
		}
		to := from
		if isRange {
			if to, ok = dayNames[strings.ToLower(b)]; !ok {
				return fmt.Errorf("%q is not a day: use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges (Mon-Fri) or daily", b)
			}
		}
		for d := from; ; d = (d + 1) % 7 {
			w.days[d] = true
			if d == to {
				break
			}
		}
	}
	return nil
}

// clock reads HH:MM as minutes after midnight; 24:00 only as an end.
func clock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(h) != 2 || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && (mm != 0 || !end)) {
		return 0, fmt.Errorf("%q is not a time from 00:00 to 23:59 (24:00 as an end)", s)
	}
	return hh*60 + mm, nil
}

// String is the window's text.
func (w *Window) String() string { return w.src }

// Open reports whether the window is open at t.
func (w *Window) Open(t time.Time) bool {
	lt := t.In(w.loc)
	min := lt.Hour()*60 + lt.Minute()
	wd := lt.Weekday()
	if w.start < w.end {
		return w.days[wd] && min >= w.start && min < w.end
	}
	// Crossing midnight: the evening of a listed day, or the morning
	// after one.
	return (w.days[wd] && min >= w.start) || (w.days[(wd+6)%7] && min < w.end)
}

// NextOpen returns when the window is next open at or after t, looking
// at most within; false when it does not open in that time.
func (w *Window) NextOpen(t time.Time, within time.Duration) (time.Time, bool) {
	if w.Open(t) {
		return t, true
	}
	lt := t.In(w.loc)
	for d := 0; d <= int(within/(24*time.Hour))+1; d++ {
		day := time.Date(lt.Year(), lt.Month(), lt.Day()+d, 0, 0, 0, 0, w.loc)
		// The start, or (when a zone change skipped it) the first
		// minute that exists after it.
		c := time.Date(day.Year(), day.Month(), day.Day(), w.start/60, w.start%60, 0, 0, w.loc)
		if c.Before(t) || c.Sub(t) > within {
			continue
		}
		if w.Open(c) {
			return c, true
		}
	}
	return time.Time{}, false
}

// windows caches parsed windows by their text (devices share a few),
// bounded: a zone's rules are read once, not per check-in.
type windows struct {
	mu sync.Mutex
	m  map[string]*Window
	// open is whether each windowed rollout's window was open at the
	// last check-in's decision: a change makes every device decide
	// again.
	open map[string]bool
}

const maxCachedWindows = 1024

func (s *Service) window(src string) (*Window, error) {
	s.win.mu.Lock()
	w, ok := s.win.m[src]
	s.win.mu.Unlock()
	if ok {
		return w, nil
	}
	w, err := ParseWindow(src)
	if err != nil {
		return nil, err
	}
	s.win.mu.Lock()
	if s.win.m == nil || len(s.win.m) >= maxCachedWindows {
		s.win.m = map[string]*Window{}
	}
	s.win.m[src] = w
	s.win.mu.Unlock()
	return w, nil
}

// rolloutOpen reports whether a rollout may offer now as far as its own
// window goes: critical rollouts and those without a window always may.
func (s *Service) rolloutOpen(a *active, now time.Time) bool {
	if a.spec.Critical || a.spec.Window == "" {
		return true
	}
	w, err := s.window(a.spec.Window)
	return err == nil && w.Open(now)
}

// deviceOpen reports whether a device's own window (its tag "window")
// lets a rollout offer to it now. A tag that does not parse (set before
// the tag was checked) keeps the device closed: the operator meant to
// restrict it.
func (s *Service) deviceOpen(a *active, d *store.Device, now time.Time) bool {
	src, ok := d.Tags[WindowTag]
	if !ok || a.spec.Critical {
		return true
	}
	w, err := s.window(src)
	return err == nil && w.Open(now)
}

// windowsMoved reports whether a windowed rollout's window opened or
// closed since the last call: then every device must decide again.
func (s *Service) windowsMoved(offer []*active, now time.Time) bool {
	moved := false
	s.win.mu.Lock()
	defer s.win.mu.Unlock()
	for _, a := range offer {
		if a.spec.Window == "" || a.spec.Critical {
			continue
		}
		w, ok := s.win.m[a.spec.Window]
		if !ok {
			var err error
			if w, err = ParseWindow(a.spec.Window); err != nil {
				continue
			}
			if s.win.m == nil || len(s.win.m) >= maxCachedWindows {
				s.win.m = map[string]*Window{}
			}
			s.win.m[a.spec.Window] = w
		}
		o := w.Open(now)
		if s.win.open == nil {
			s.win.open = map[string]bool{}
		}
		if prev, ok := s.win.open[a.r.ID]; !ok || prev != o {
			s.win.open[a.r.ID] = o
			moved = moved || ok
		}
	}
	return moved
}

// windowState describes a rollout's window for its view: whether it is
// open now and, when closed, when it next opens.
func (s *Service) windowState(sp Spec, now time.Time) (open bool, next *time.Time) {
	if sp.Window == "" || sp.Critical {
		return true, nil
	}
	w, err := s.window(sp.Window)
	if err != nil {
		return false, nil
	}
	if w.Open(now) {
		return true, nil
	}
	if t, ok := w.NextOpen(now, 8*24*time.Hour); ok {
		return false, &t
	}
	return false, nil
}

// generation is the rollouts' current generation.
func (s *Service) generation() uint64 {
	s.ro.mu.Lock()
	defer s.ro.mu.Unlock()
	return s.ro.gen
}
