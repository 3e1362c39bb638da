package hostedrepo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/store"
)

// A push is logged and published in steps that cannot share one
// transaction: the transparency log is not the store. So that the log and
// the repository agree after a crash at any step, an accepted push is
// first stored as pending (pendingPush: every document, chunk, statement
// and audit detail it will commit), then its statements are appended to
// the log and recorded, then its metadata commits together with its audit
// entry and the removal of the pending record. Whoever finds a pending
// push finishes it before changing the repository (finishPendingPush: at
// start-up, before a push, before a refresh): a statement that reached
// the log before the crash is found there and recorded, one that did not
// is appended, so every release the log names is published and none is
// logged twice. Nothing that can refuse a push happens after it is
// pending.
//
// A release name's content is fixed by its first statement: a push that
// gives a logged name other content is refused (checkLogged), whether or
// not the push that logged it completed.

// finishTimeout bounds finishing a pending push for its request: logging
// waits for checkpoints, which the log publishes every 100 ms.
const finishTimeout = 2 * time.Minute

// pendingPush is what finishing a push needs, stored as JSON in the store.
type pendingPush struct {
	// RequestID and Actor are the pushing request's, for its audit entry;
	// Detail is the entry's detail.
	RequestID string
	Actor     string
	Detail    map[string]string
	Docs      []store.Doc
	Chunks    []store.ChunkRef
	// Statements are the new releases' log statements, in order.
	Statements []pendingStatement
	// LogSize is the log's published size before the push: its
	// statements, if logged, are at this index or later.
	LogSize  uint64
	Response PushResult
}

type pendingStatement struct {
	Target string
	SHA256 string
	Length int64
	Leaf   []byte
}

// pushStepHook, when set (by tests), is called at each step of a push;
// an error stops the push there as a crash would, leaving what was made
// durable so far.
var pushStepHook atomic.Pointer[func(step string) error]

// SetPushStep installs f as the hook called at each step of a push (the
// crash tests'): an error from it stops the push there as a crash would.
// nil removes it.
func SetPushStep(f func(step string) error) {
	if f == nil {
		pushStepHook.Store(nil)
		return
	}
	pushStepHook.Store(&f)
}

func pushStep(step string) error {
	if f := pushStepHook.Load(); f != nil {
		return (*f)(step)
	}
	return nil
}

// startPush stores p as the pending push. The caller holds mu and has
// finished any earlier pending push.
func (s *Service) startPush(ctx context.Context, p *pendingPush) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := s.store.PutPendingPush(ctx, b); errors.Is(err, store.ErrExists) {
		// Another server process started a push meanwhile.
		return refuse(Conflict, "another push is in progress on another server process; fetch the current state and retry")
	} else if err != nil {
		return wrapf(err, "recording the pending push")
	}
	return pushStep("pending")
}

// finishPendingPush finishes the pending push, if there is one. The
// caller holds mu.
func (s *Service) finishPendingPush(ctx context.Context) error {
	b, err := s.store.PendingPush(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrapf(err, "reading the pending push")
	}
	var p pendingPush
	if err := json.Unmarshal(b, &p); err != nil {
		return wrapf(err, "decoding the pending push")
	}
	s.logger.Warn("finishing an interrupted push", "request_id", p.RequestID, "actor", p.Actor, "releases", p.Detail["releases"])
	if err := s.finishPush(ctx, &p, true); err != nil {
		return wrapf(err, "finishing the push of request %s, interrupted after it was accepted", p.RequestID)
	}
	s.logger.Info("finished an interrupted push", "request_id", p.RequestID, "releases", p.Detail["releases"])
	return nil
}

// finishPush logs p's statements that are not logged yet and commits p.
// resumed says that p was read back from the store: an earlier attempt
// may have appended statements without recording them, so the log is
// searched for them first.
func (s *Service) finishPush(ctx context.Context, p *pendingPush, resumed bool) error {
	var inLog map[string]uint64 // leaf -> index, of p's statements found in the log
	if resumed {
		var err error
		if inLog, err = s.findStatements(ctx, p); err != nil {
			return err
		}
	}
	for _, st := range p.Statements {
		e, err := s.store.LogEntry(ctx, st.Target)
		if err == nil {
			// Logged already: by an earlier attempt, or by an earlier
			// push of the same content (checkLogged refused any other).
			if err := sameContent(e, st); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		idx, found := inLog[string(st.Leaf)]
		if !found {
			if err := s.fenced(); err != nil {
				return err
			}
			// A replica paused here, past its check of the lease, may
			// wake after another took the lease over: the shared log
			// refuses its append then (tlog.ErrFenced).
			if err := pushStep("appending " + st.Target); err != nil {
				return err
			}
			if idx, _, err = s.log.Append(ctx, st.Leaf); err != nil {
				return wrapf(err, "logging %s", st.Target)
			}
			if err := pushStep("appended " + st.Target); err != nil {
				return err
			}
		}
		if err := s.store.PutLogEntry(ctx, store.LogEntry{Target: st.Target, Index: idx, Leaf: st.Leaf}); err != nil {
			return wrapf(err, "recording the log entry of %s", st.Target)
		}
		if err := pushStep("recorded " + st.Target); err != nil {
			return err
		}
	}
	detail := p.Detail
	if resumed {
		detail = map[string]string{"finished": "after an interruption"}
		for k, v := range p.Detail {
			detail[k] = v
		}
	}
	if err := s.fenced(); err != nil {
		return err
	}
	err := s.store.Atomic(ctx, func(tx store.Tx) error {
		if err := tx.PutChunks(ctx, p.Chunks); err != nil {
			return err
		}
		if err := tx.PutDocs(ctx, p.Docs...); err != nil {
			return err
		}
		if err := tx.DeletePendingPush(ctx); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Entry{Time: s.now(), Actor: p.Actor, Action: "push", Subject: "image",
			RequestID: p.RequestID, Outcome: "accepted", Detail: detail})
		return err
	})
	if err != nil {
		return wrapf(err, "committing the push")
	}
	return pushStep("committed")
}

// findStatements returns where p's statements are in the log, searching
// from where the log ended when p was accepted. It first waits until
// everything the log sequenced is published, so a statement appended just
// before a crash is seen.
func (s *Service) findStatements(ctx context.Context, p *pendingPush) (map[string]uint64, error) {
	size, err := s.log.Settle(ctx)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, st := range p.Statements {
		want[string(st.Leaf)] = true
	}
	found := map[string]uint64{}
	if size <= p.LogSize || len(want) == 0 {
		return found, nil
	}
	err = s.log.Scan(ctx, p.LogSize, size, func(i uint64, leaf []byte) error {
		if _, dup := found[string(leaf)]; want[string(leaf)] && !dup {
			found[string(leaf)] = i
		}
		return nil
	})
	if err != nil {
		return nil, wrapf(err, "searching the log for the pending push's statements")
	}
	return found, nil
}

// sameContent checks that a recorded log entry gives st's target st's
// content.
func sameContent(e store.LogEntry, st pendingStatement) error {
	if bytes.Equal(e.Leaf, st.Leaf) {
		return nil
	}
	logged, err := logproof.ParseStatement(e.Leaf)
	if err != nil {
		return wrapf(err, "log entry %d of %s", e.Index, e.Target)
	}
	if logged.SHA256 != st.SHA256 || logged.Length != st.Length {
		return fmt.Errorf("%s is logged (entry %d) with sha256 %s, %d bytes; the pending push gives it sha256 %s, %d bytes", st.Target, e.Index, logged.SHA256, logged.Length, st.SHA256, st.Length)
	}
	return nil
}

// checkLogged refuses a push that gives a release name in the log other
// content (409 release-logged): the first statement of a name fixes its
// content, whether or not the push that logged it completed, so the log
// never holds two statements that disagree about one release. The pushed
// roles are not verified yet; what this reveals (the logged digest) is
// public in the log.
func (s *Service) checkLogged(ctx context.Context, req Push) error {
	for role, raw := range req.Roles {
		m, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			continue // pushaccept refuses it as malformed
		}
		for name, tf := range m.Signed.Targets {
			e, err := s.store.LogEntry(ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			logged, err := logproof.ParseStatement(e.Leaf)
			if err != nil {
				return wrapf(err, "log entry %d of %s", e.Index, name)
			}
			sum := tf.Hashes["sha256"].String()
			if sum != logged.SHA256 || tf.Length != logged.Length {
				return &Refusal{Code: ReleaseLogged, Role: role,
					Msg: fmt.Sprintf("release %s is in the transparency log (entry %d) with sha256 %s, %d bytes; this push gives it sha256 %s, %d bytes. A release's content is fixed by its first log statement: publish the new content under a new version",
						name, e.Index, logged.SHA256, logged.Length, sum, tf.Length)}
			}
		}
	}
	return nil
}

// Recover finishes, as the server starts, a push that a crash
// interrupted after it was accepted, so that the log and the repository
// agree before anything is served.
//
// With replicas it finishes the push only when it gets the repository's
// lease: a pending push while another replica holds it is that replica's
// push in progress, which it finishes, or, if it dies, the next replica
// to take the lease does (a push, or the background work's refresh).
func (s *Service) Recover(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, release, err := s.hold(ctx)
	if errors.Is(err, errBusy) {
		return nil
	}
	if err != nil {
		return err
	}
	defer release()
	return s.finishPendingPush(ctx)
}
