package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// A log whose start the server's retention pruned still verifies: from
// the anchor, which a chained prune-audit entry records. A head recorded
// before the anchor cannot be checked and is refused, as is a log whose
// start was deleted without such a record.
func TestAuditVerifyAcrossAPrunedPrefix(t *testing.T) {
	srv := servertest.New(t, servertest.WithRetention(server.Retention{Audit: time.Millisecond}))
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, srv.CAPEM, 0o644)
	c, err := client.New(srv.TS.URL, ca, srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	c.AuditPageSize = 3
	ctx := context.Background()
	for i := range 8 {
		if _, err := c.CreateToken(ctx, fmt.Sprintf("t%d", i), "auditor"); err != nil {
			t.Fatal(err)
		}
	}
	before, err := c.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := before[2]
	time.Sleep(5 * time.Millisecond)
	n, err := srv.Server.PruneAudit(ctx)
	if err != nil || n != len(before)-1 {
		t.Fatalf("pruned %d of %d, %v; want all but the head", n, len(before), err)
	}
	// Reading from the start is refused, naming the anchor.
	if _, err := c.Audit(ctx); err == nil || !strings.Contains(err.Error(), "audit-pruned") {
		t.Fatalf("reading a pruned start: %v", err)
	}
	anchor, err := c.AuditAnchor(ctx)
	if err != nil || anchor.Seq != uint64(len(before)-1) || anchor.Hash != before[len(before)-2].Hash {
		t.Fatalf("anchor %+v, %v", anchor, err)
	}
	for i := range 4 {
		c.CreateToken(ctx, fmt.Sprintf("u%d", i), "auditor")
	}
	n2, last, err := verifyAuditLog(ctx, c, nil)
	if err != nil || n2 != 1+1+4 || last == nil {
		t.Fatalf("verified %d (head, prune record, 4 more), %v", n2, err)
	}
	// The last pruned entry can still serve as a head; older ones not.
	if _, _, err := verifyAuditLog(ctx, c, &auditHead{anchor.Seq, anchor.Hash}); err != nil {
		t.Fatalf("the anchor as head: %v", err)
	}
	_, _, err = verifyAuditLog(ctx, c, &auditHead{old.Seq, old.Hash})
	if !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), "was pruned") {
		t.Fatalf("a pruned head: %v", err)
	}
	var out, errb strings.Builder
	code := run([]string{"audit", "verify", "--server", srv.TS.URL, "--ca", ca, "--token", srv.Admin}, &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }})
	if code != 0 || !strings.Contains(out.String(), "were pruned by the server's retention") || !strings.Contains(out.String(), "verified 6 audit entries") {
		t.Fatalf("audit verify: %d\n%s%s", code, out.String(), errb.String())
	}
}

// A server that drops the start of its audit log without a chained
// prune-audit entry recording the anchor (a compromised or buggy one: the
// honest server writes both in one transaction) is refused: the anchor
// alone would let it erase any prefix unseen.
func TestAuditVerifyRefusesAnUnrecordedPrune(t *testing.T) {
	srv := servertest.New(t, servertest.WithRetention(server.Retention{Audit: time.Millisecond}))
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, srv.CAPEM, 0o644)
	c, err := client.New(srv.TS.URL, ca, srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if _, err := c.CreateToken(ctx, fmt.Sprintf("t%d", i), "auditor"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	// Prune through a second connection to the server's own database,
	// without the record PruneAudit appends.
	db, err := sqlite.Open(filepath.Join(srv.DataDir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Atomic(ctx, func(tx store.Tx) error {
		n, _, err := tx.PruneAudit(ctx, time.Now(), 1000)
		if err == nil && n == 0 {
			err = errors.New("nothing pruned")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = verifyAuditLog(ctx, c, nil)
	if !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), "prune-audit") {
		t.Fatalf("a prefix dropped without a record: %v, want a refusal naming the missing prune-audit entry", err)
	}
	var out, errb strings.Builder
	code := run([]string{"audit", "verify", "--server", srv.TS.URL, "--ca", ca, "--token", srv.Admin}, &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }})
	if code != 1 {
		t.Fatalf("audit verify exit %d, want 1\n%s%s", code, out.String(), errb.String())
	}
}
