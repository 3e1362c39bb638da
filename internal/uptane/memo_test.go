package uptane_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

// requested counts the requests h saw for each path, from the index from.
func requested(h *servertest.Hostile, from int) map[string]int {
	n := map[string]int{}
	for _, p := range h.Paths()[from:] {
		n[p]++
	}
	return n
}

// A check-in whose repositories did not change verifies nothing again,
// and still asks each repository for its next root and its timestamp.
func TestMemoReusesUnchangedRepositories(t *testing.T) {
	e, certs := deployed(t)
	cfg := e.device("gw-1", hwRev2, certs.gw1)
	h := servertest.Intercept(&cfg.HTTPClient, nil)
	first := check(t, cfg)
	if n := cfg.Memo.Hits(); n != 0 {
		t.Fatalf("first check-in reused %d repositories", n)
	}
	before := len(h.Paths())
	second := check(t, cfg)
	if n := cfg.Memo.Hits(); n != 2 {
		t.Fatalf("second check-in reused %d repositories, want both", n)
	}
	if !reflect.DeepEqual(first.Result, second.Result) || first.ImageURL != second.ImageURL || !bytes.Equal(first.Checkpoint, second.Checkpoint) {
		t.Fatalf("decisions differ:\n%+v\n%+v", first, second)
	}
	got := requested(h, before)
	want := map[string]int{
		"/director/2.root.json": 1, "/director/timestamp.json": 1,
		"/repo/2.root.json": 1, "/repo/timestamp.json": 1,
		"/api/v1/log/proof/" + product + "/1.0.0/fw.img": 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("second check-in requested %v, want %v", got, want)
	}
}

// Whatever makes a full refresh end differently goes through one: a new
// timestamp, a changed file, expired metadata, a next root. Each case
// gets the outcome a device without a Memo gets.
func TestMemoRefreshesInFullOnChange(t *testing.T) {
	e, certs := deployed(t)
	ctx := context.Background()

	// remembered is a device whose Memo holds both repositories.
	remembered := func(t *testing.T) uptane.Config {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		check(t, cfg)
		check(t, cfg)
		if cfg.Memo.Hits() != 2 {
			t.Fatalf("set-up: %d hits", cfg.Memo.Hits())
		}
		return cfg
	}

	t.Run("new timestamps", func(t *testing.T) {
		cfg := remembered(t)
		h := servertest.Intercept(&cfg.HTTPClient, nil)
		e.Release("1.0.1", 2, hwRev2)
		e.Deploy(product+"/1.0.1", hwRev2)
		d := check(t, cfg)
		if d.Target != product+"/1.0.1/fw.img" {
			t.Fatalf("decision %+v", d)
		}
		if n := cfg.Memo.Hits(); n != 2 {
			t.Fatalf("reused %d repositories after both changed", n-2)
		}
		// The answers fetched to compare are replayed, not asked again.
		for p, n := range requested(h, 0) {
			if n != 1 {
				t.Errorf("%s requested %d times", p, n)
			}
		}
		// And the new state is remembered in turn.
		check(t, cfg)
		if n := cfg.Memo.Hits(); n != 4 {
			t.Fatalf("the refreshed state was not remembered: %d hits", n)
		}
	})

	t.Run("a file changed on disk", func(t *testing.T) {
		cfg := remembered(t)
		// Another writer (a second process, a person) puts the trusted
		// targets of an older director state back: it no longer matches
		// the snapshot, so go-tuf fetches it again, as without a Memo.
		name := filepath.Join(cfg.StateDir, "director", "targets.json")
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, append(b, ' '), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, cfg)
		if n := cfg.Memo.Hits(); n != 3 {
			t.Fatalf("hits %d, want the image repository's alone", n-2)
		}
		if after, _ := os.ReadFile(name); !bytes.Equal(after, b) {
			t.Fatal("the changed targets were not refreshed")
		}
	})

	t.Run("expired", func(t *testing.T) {
		cfg := remembered(t)
		frozen := time.Now().Add(48 * time.Hour)
		cfg.Now = func() time.Time { return frozen }
		d, err := uptane.Check(ctx, cfg)
		if ve := wantClass(t, d, err, verify.Expired); ve.Role != "director" || !strings.Contains(err.Error(), "timestamp") {
			t.Fatalf("want the director's timestamp expired, got %v", err)
		}
		// The refusal forgot the director; the next check-in, back in
		// time, refreshes it in full.
		cfg.Now = nil
		check(t, cfg)
		if n := cfg.Memo.Hits(); n != 3 {
			t.Fatalf("hits %d after the refusal, want the image repository's alone", n-2)
		}
	})

	t.Run("a next root", func(t *testing.T) {
		// A root version 2 the device's root did not sign: refused in
		// full by go-tuf, with or without a Memo.
		forged := selfSignedRoot(t)
		serve := func(r *http.Request) *http.Response {
			if r.URL.Path == "/director/2.root.json" {
				return servertest.Respond(r, 200, forged)
			}
			return nil
		}
		cfg := remembered(t)
		servertest.Intercept(&cfg.HTTPClient, serve)
		d, err := uptane.Check(ctx, cfg)
		fresh := e.device("gw-1", hwRev2, certs.gw1)
		servertest.Intercept(&fresh.HTTPClient, serve)
		d2, err2 := uptane.Check(ctx, fresh)
		ve := wantClass(t, d, err, verify.BadSignature)
		if ve2 := wantClass(t, d2, err2, verify.BadSignature); ve.Role != ve2.Role {
			t.Fatalf("refused as %v with a Memo, %v without", err, err2)
		}
		if cfg.Memo.Hits() != 2 {
			t.Fatal("a repository with a next root was reused")
		}
	})

	t.Run("another device's director", func(t *testing.T) {
		// What the server serves gw-2, validly signed: a timestamp that
		// differs, so the full refresh refuses it as before.
		cfg := remembered(t)
		asDevice(t, e, &cfg, e.Client(certs.gw2))
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.WrongDevice)
	})
}

// BenchmarkCheck is a device's check-in when nothing changed: as the
// agent makes it when it runs the release the director names (Memo, no
// log proof), with the Memo alone, and with neither (go-tuf verifying
// every cached role again); against the real server in this process (its
// share is in each).
//
//	go test -run XXX -bench Check ./internal/uptane
func BenchmarkCheck(b *testing.B) {
	e := &env{servertest.New(b)}
	e.Release("1.0.0", 2, hwRev2)
	cert := e.Enroll("gw-1", hwRev2)
	e.Deploy(product+"/1.0.0", hwRev2)
	for _, c := range []struct {
		name          string
		memo, running bool
	}{{"memo-running", true, true}, {"memo", true, false}, {"no-memo", false, false}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := e.device("gw-1", hwRev2, cert)
			if !c.memo {
				cfg.Memo = nil
			}
			if c.running {
				// The device runs what the director names: no log proof.
				cfg.Running = check(b, cfg).File.Hashes["sha256"].String()
			}
			for b.Loop() {
				if _, err := uptane.Check(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A device that runs the release the director names downloads nothing,
// so it is not asked for the log's proof; the log gates the next
// download as before.
func TestRunningReleaseNeedsNoLogProof(t *testing.T) {
	e, certs := deployed(t)
	cfg := e.device("gw-1", hwRev2, certs.gw1)
	first := check(t, cfg)
	if first.Running || first.Checkpoint == nil {
		t.Fatalf("first decision %+v", first)
	}
	cfg.Running = first.File.Hashes["sha256"].String()
	notLogged := func(r *http.Request) *http.Response {
		if strings.HasPrefix(r.URL.Path, "/api/v1/log/") {
			return servertest.Respond(r, 404, []byte(`{"code":"not-found"}`))
		}
		return nil
	}
	h := servertest.Intercept(&cfg.HTTPClient, notLogged)
	d := check(t, cfg)
	if !d.Running || d.Checkpoint != nil || d.Target != first.Target || h.Requested("/api/v1/log/") {
		t.Fatalf("running the named release: %+v, requests %v", d, h.Paths())
	}

	// Another release named: the log is asked, and its refusal stands.
	e.Release("1.0.1", 2, hwRev2)
	e.Deploy(product+"/1.0.1", hwRev2)
	d, err := uptane.Check(context.Background(), cfg)
	wantClass(t, d, err, verify.NotLogged)

	// A device running something else is asked too.
	other := e.device("gw-1", hwRev2, certs.gw1)
	other.Running = strings.Repeat("0", 64)
	servertest.Intercept(&other.HTTPClient, notLogged)
	d, err = uptane.Check(context.Background(), other)
	wantClass(t, d, err, verify.NotLogged)
}
