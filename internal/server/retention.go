package server

import (
	"context"
	"strconv"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/store"
)

// Retention bounds what the server keeps of what clients make it write.
// (A device's reports are bounded by the store: its latest
// store.ReportHistory and counts per status.)
type Retention struct {
	// Audit is how long audit entries are kept, counted from when they
	// were written; negative keeps them for ever. The log is pruned from
	// its start, and the last entry pruned is kept as its anchor, so
	// that rampart audit verify still proves the chain from there (and
	// a chained prune-audit entry records every pruning).
	Audit time.Duration
	// BlobGrace is how long a blob that no published release references
	// is kept after it was uploaded: room for the push that will name
	// it.
	BlobGrace time.Duration
}

// DefaultRetention keeps the audit log a year and unreferenced blobs a
// day.
func DefaultRetention() Retention {
	return Retention{Audit: 365 * 24 * time.Hour, BlobGrace: 24 * time.Hour}
}

func (r Retention) withDefaults() Retention {
	d := DefaultRetention()
	if r.Audit == 0 {
		r.Audit = d.Audit
	}
	if r.BlobGrace <= 0 {
		r.BlobGrace = d.BlobGrace
	}
	return r
}

// Retention returns the retention in force.
func (s *Server) Retention() Retention { return s.retention }

func (r Retention) auditText() string {
	if r.Audit < 0 {
		return "audit entries are kept for ever"
	}
	return "audit entries are kept " + r.Audit.String()
}

// BlobLimits returns the blob store's limits, when it has any.
func (s *Server) BlobLimits() (blob.Limits, bool) {
	l, ok := s.blobs.(interface{ Limits() blob.Limits })
	if !ok {
		return blob.Limits{}, false
	}
	return l.Limits(), true
}

// DefaultBlobLimits are the blob store's limits when none are
// configured: no quota, and a disk reserve of 1 GiB, or a twentieth of
// the file system when that is less, so that the database and the logs
// can still be written when uploads are refused.
func DefaultBlobLimits(dir string) blob.Limits {
	reserve := int64(1 << 30)
	if size, ok := fsSize(dir); ok {
		reserve = min(reserve, size/20)
	}
	return blob.Limits{Reserve: reserve}
}

// blobSweepEvery is the least time between two sweeps of the blob store
// from Run: each lists every blob.
const blobSweepEvery = 10 * time.Minute

// pruneBatch is how many audit entries one transaction prunes.
const pruneBatch = 10000

// enforceRetention prunes the audit log and, at most every
// blobSweepEvery, expires unreferenced blobs; Run calls it.
func (s *Server) enforceRetention(ctx context.Context) {
	if _, err := s.PruneAudit(ctx); err != nil && ctx.Err() == nil {
		s.logger.Error("pruning the audit log", "err", err)
	}
	if time.Since(s.lastBlobSweep) < blobSweepEvery {
		return
	}
	s.lastBlobSweep = time.Now()
	if n, err := s.ExpireBlobs(ctx); err != nil && ctx.Err() == nil {
		s.logger.Error("expiring unreferenced blobs", "err", err)
	} else if n > 0 {
		s.logger.Info("expired unreferenced blobs", "blobs", n, "grace", s.retention.BlobGrace.String())
	}
}

// PruneAudit removes the audit entries older than the retention, in
// batches, each in one transaction with a prune-audit entry that records
// the new anchor (the seq and hash of the last entry removed) in the
// chain. It returns how many it removed.
func (s *Server) PruneAudit(ctx context.Context) (int, error) {
	if s.retention.Audit < 0 {
		return 0, nil
	}
	before := s.now().Add(-s.retention.Audit)
	total := 0
	for {
		var n int
		err := s.store.Atomic(ctx, func(tx store.Tx) error {
			var a store.AuditAnchor
			var err error
			if n, a, err = tx.PruneAudit(ctx, before, pruneBatch); err != nil || n == 0 {
				return err
			}
			_, err = tx.AppendAudit(ctx, audit.Entry{Time: s.now(), Actor: "server", Action: "prune-audit", Outcome: "ok", Detail: map[string]string{
				"through_seq": strconv.FormatUint(a.Seq, 10), "through_hash": a.Hash, "entries": strconv.Itoa(n),
				"retention": s.retention.Audit.String(),
			}})
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		s.metrics.auditPruned.Add(float64(n))
		if n < pruneBatch {
			return total, nil
		}
	}
}

// ExpireBlobs removes the blobs that no published release references and
// that were uploaded more than the grace period ago
// (hostedrepo.Service.ExpireBlobs), counts them, and returns how many it
// removed.
func (s *Server) ExpireBlobs(ctx context.Context) (int, error) {
	n, err := s.images.ExpireBlobs(ctx, s.retention.BlobGrace)
	s.metrics.blobsExpired.Add(float64(n))
	return n, err
}
