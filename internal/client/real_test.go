package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// realClient returns a client of a real server with the given token.
func realClient(t *testing.T, e *servertest.Env, token string) *Client {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, e.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(e.TS.URL, ca, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAuditPagesOfARealLog(t *testing.T) {
	e := servertest.New(t)
	c := realClient(t, e, e.Admin)
	ctx := context.Background()
	for i := range 7 {
		if _, err := c.CreateToken(ctx, fmt.Sprintf("t%d", i), "auditor"); err != nil {
			t.Fatal(err)
		}
	}
	c.AuditPageSize = 3
	var prev *audit.Entry
	var sizes []int
	total := 0
	err := c.AuditPages(ctx, func(page []audit.Entry) error {
		if err := audit.Verify(prev, page); err != nil {
			return err
		}
		sizes = append(sizes, len(page))
		total += len(page)
		last := page[len(page)-1]
		prev = &last
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sizes) < 3 || total < 7 {
		t.Fatalf("pages of %v entries; want at least 3 pages and 7 entries", sizes)
	}
	for _, n := range sizes[:len(sizes)-1] {
		if n != 3 {
			t.Fatalf("pages of %v entries; every page but the last must be full", sizes)
		}
	}
	all, err := c.Audit(ctx)
	if err != nil || len(all) != total || all[len(all)-1].Hash != prev.Hash || audit.Verify(nil, all) != nil {
		t.Fatalf("Audit: %d entries (pages held %d), %v", len(all), total, err)
	}
}
