package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// auditEnv is a real server with a few dozen audit entries and a client
// that fetches them three at a time.
func auditEnv(t *testing.T) (*servertest.Env, *client.Client) {
	t.Helper()
	srv := servertest.New(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.TS.URL, ca, srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.CreateToken(context.Background(), fmt.Sprintf("t%d", i), "auditor"); err != nil {
			t.Fatal(err)
		}
	}
	c.AuditPageSize = 3
	return srv, c
}

func TestAuditVerifyPageByPage(t *testing.T) {
	_, c := auditEnv(t)
	ctx := context.Background()
	all, err := c.Audit(ctx)
	if err != nil || len(all) < 10 {
		t.Fatalf("%d entries, %v", len(all), err)
	}
	n, last, err := verifyAuditLog(ctx, c, nil)
	if err != nil || n != len(all) || last.Hash != all[len(all)-1].Hash {
		t.Fatalf("verified %d entries up to %+v, %v; want %d", n, last, err, len(all))
	}
	// A head recorded earlier, in a page before the last, is found.
	mid := all[4]
	if _, _, err := verifyAuditLog(ctx, c, &auditHead{mid.Seq, mid.Hash}); err != nil {
		t.Fatalf("head %d: %v", mid.Seq, err)
	}
	for _, tc := range []struct {
		head auditHead
		want string
	}{
		{auditHead{mid.Seq, strings.Repeat("0", 64)}, fmt.Sprintf("audit chain broken at entry 4 (seq %d): it differs from the recorded head", mid.Seq)},
		{auditHead{last.Seq + 1, mid.Hash}, fmt.Sprintf("recorded head seq %d is missing; the log ends at seq %d (truncated)", last.Seq+1, last.Seq)},
	} {
		_, _, err := verifyAuditLog(ctx, c, &tc.head)
		if !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("head %v: %v, want %q", tc.head, err, tc.want)
		}
		var buf bytes.Buffer
		if code := report(&buf, err); code != exitRefused {
			t.Errorf("head %v: exit %d, want %d", tc.head, code, exitRefused)
		}
	}
}

func TestAuditVerifyNamesTamperingAcrossPages(t *testing.T) {
	for _, tc := range []struct {
		name, sql string
		want      string
	}{
		{"edited", `UPDATE audit SET entry = replace(entry, '"t5"', '"tX"') WHERE entry LIKE '%"t5"%'`, "audit chain broken at entry %d (seq %d): its content does not match its hash (edited)"},
		{"deleted", `DELETE FROM audit WHERE entry LIKE '%"t5"%'`, "audit export: entry %d of the page after seq %d has seq %d, not %d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, c := auditEnv(t)
			ctx := context.Background()
			all, err := c.Audit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := -1
			for j, e := range all {
				if e.Subject == "t5" || strings.Contains(fmt.Sprint(e.Detail), "t5") {
					i = j
				}
			}
			if i < 3 {
				t.Fatalf("no entry for token t5 after the first page: %+v", all)
			}
			db, err := sql.Open("sqlite", "file:"+filepath.Join(srv.DataDir, "rampart.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if res, err := db.Exec(tc.sql); err != nil {
				t.Fatal(err)
			} else if n, _ := res.RowsAffected(); n != 1 {
				t.Fatalf("%d rows changed", n)
			}
			_, _, err = verifyAuditLog(ctx, c, nil)
			want := fmt.Sprintf(tc.want, i, all[i].Seq)
			if tc.name == "deleted" {
				want = fmt.Sprintf(tc.want, i%3, i/3*3, all[i].Seq+1, all[i].Seq)
			}
			if !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), want) {
				t.Fatalf("%v, want %q", err, want)
			}
			var buf bytes.Buffer
			if code := report(&buf, err); code != exitRefused || !strings.Contains(buf.String(), "rampart: hint: ") {
				t.Errorf("exit %d, %q; want exit %d with a hint", code, buf.String(), exitRefused)
			}
		})
	}
}
