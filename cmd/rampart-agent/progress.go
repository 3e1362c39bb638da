package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// isTerminal reports whether w is a character device (a terminal; the
// standard library's test, so the agent needs no terminal package).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressLine draws an install's progress on one line of w, at most
// five times a second, and clear erases it. Nothing is drawn unless w is
// a terminal: logs and scripts see only the outcome lines.
func progressLine(w io.Writer, now func() time.Time) (draw func(agent.InstallProgress), clear func()) {
	if !isTerminal(w) {
		return nil, func() {}
	}
	var start, last time.Time
	var startBytes int64
	drawn := false
	draw = func(p agent.InstallProgress) {
		t := now()
		if start.IsZero() {
			start, startBytes = t, p.Bytes
		}
		if p.Done < p.Chunks && t.Sub(last) < 200*time.Millisecond {
			return
		}
		last, drawn = t, true
		fmt.Fprintf(w, "\r\033[K%s", progressText(p, t.Sub(start), p.Bytes-startBytes))
	}
	clear = func() {
		if drawn {
			fmt.Fprint(w, "\r\033[K")
		}
	}
	return draw, clear
}

// progressText is the line progressLine draws: what is installed from
// where, how much of it is verified and written, and how fast this run
// moves (resumed chunks were written by an earlier attempt).
func progressText(p agent.InstallProgress, elapsed time.Duration, moved int64) string {
	verb := "downloading"
	if p.Source == "bundle" {
		verb = "installing from bundle"
	}
	pct := 100.0
	if p.Size > 0 {
		pct = 100 * float64(p.Bytes) / float64(p.Size)
	}
	line := fmt.Sprintf("%s %s: %3.0f%% (%s of %s), %d of %d chunks verified and written",
		verb, termsafe.Bounded(p.Target, 80), pct, mib(p.Bytes), mib(p.Size), p.Done, p.Chunks)
	if p.Resumed > 0 {
		line += fmt.Sprintf(" (%d resumed)", p.Resumed)
	}
	if s := elapsed.Seconds(); s >= 0.5 {
		line += fmt.Sprintf(", %s/s", mib(int64(float64(moved)/s)))
	}
	return line
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
