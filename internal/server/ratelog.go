package server

import (
	"log/slog"
	"sync"
	"time"
)

// rateLogInterval is the least time between two lines of one rateLog.
const rateLogInterval = 10 * time.Second

// rateLog writes at most one log line per rateLogInterval for events that
// anyone who can reach the server can cause (refused enrollments), so
// they cannot flood the log; a line says how many were left out since the
// previous one. Its zero value is ready to use; it is safe for concurrent
// use.
type rateLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *rateLog) log(logger *slog.Logger, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if !l.last.IsZero() && now.Sub(l.last) < rateLogInterval {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	logger.Warn(msg, append(args, "left_out_since_last_line", n)...)
}
