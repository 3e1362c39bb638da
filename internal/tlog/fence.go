package tlog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/fsys"
)

// A shared log's writers are fenced by lease term, in the log directory
// itself. The repository's lease makes one replica at a time the writer,
// and its holder stops writing once its lease may have expired (fencing
// by time), but a holder paused between that check and its append (a
// long garbage collection, a virtual machine stopped and resumed) would
// append after another replica took the lease over: the new holder,
// finishing the same interrupted push, would not have found the
// statement and would log it a second time.
//
// So each writer claims the log for its term first: under a lock file of
// our own (fcntl, as tessera's; held for the whole write), it reads the
// last claimed term from termFile, refuses to write if that is later
// than its own (ErrFenced), and records its own otherwise. Settle claims
// too, before the caller searches the log: once a new term has settled,
// every write of an older term has either ended (the lock) or will be
// refused, so what the new holder reads of the log stays complete.
const (
	fenceLockFile = ".rampart-writer.lock"
	termFile      = ".rampart-term"
	// maxTermFile bounds what is read of termFile: a decimal int64.
	maxTermFile = 32
)

// ErrFenced is returned by a shared log's Append and Settle when a writer
// of a later lease term has claimed the log: the caller's term has
// ended, and another replica now writes the log.
var ErrFenced = errors.New("tlog: a later lease term has claimed the shared log; this replica's term has ended")

// lockPoll is how often claim retries a held lock file.
const lockPoll = 5 * time.Millisecond

// claimed, when set (by tests), is called once a writer holds the lock
// file and has claimed the log, before it writes.
var claimed atomic.Pointer[func(dir string, term int64)]

// claim takes the lock file and claims the log for the term ctx carries.
// The caller holds sharedWriters' mutex for the directory (fcntl locks
// do not exclude within a process) and calls release when its write is
// over. A context without a term may write only a log no term has
// claimed yet (a new log's first checkpoint, written as it is opened).
func (l *Log) claim(ctx context.Context) (release func(), err error) {
	term, hasTerm := l.term(ctx)
	if hasTerm && term <= 0 {
		return nil, fmt.Errorf("%w: the caller holds no lease term", ErrFenced)
	}
	unlock, err := lockFile(ctx, filepath.Join(l.dir, fenceLockFile))
	if err != nil {
		return nil, fmt.Errorf("tlog: locking %s: %w", fenceLockFile, err)
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	last, err := readTerm(filepath.Join(l.dir, termFile))
	if err != nil {
		return nil, err
	}
	switch {
	case !hasTerm && last != 0:
		return nil, fmt.Errorf("%w: a write without a lease term, after term %d claimed the log", ErrFenced, last)
	case hasTerm && term < last:
		return nil, fmt.Errorf("%w (this replica's term %d, the log's %d; if every replica is refused, the store was restored from a backup older than the log: stop every replica, then remove %s)", ErrFenced, term, last, filepath.Join(l.dir, termFile))
	case hasTerm && term > last:
		if err := atomicfile.WriteFile(filepath.Join(l.dir, termFile), []byte(strconv.FormatInt(term, 10)+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("tlog: claiming the log for term %d: %w", term, err)
		}
	}
	if f := claimed.Load(); f != nil {
		(*f)(l.dir, term)
	}
	return unlock, nil
}

// readTerm reads the last claimed term; 0 when none was.
func readTerm(path string) (int64, error) {
	b, err := fsys.ReadFile(fsys.OS, path, maxTermFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("tlog: reading the log's lease term: %w", err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	t, err := strconv.ParseInt(s, 10, 64)
	if err != nil || t <= 0 {
		return 0, fmt.Errorf("tlog: %s does not hold a lease term (%q): restore it from a backup of the log directory, or remove it only once no replica is serving", path, strings.ToValidUTF8(s, "?"))
	}
	return t, nil
}
