package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
)

// dirState is what serve makes of a data directory: "absent", "complete"
// (it opens and has an operator token) or "incomplete: ..." (refused with
// a way to recover). Anything else fails the test.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "absent"
	}
	in, err := datadir.Open(context.Background(), dir, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		if strings.Contains(err.Error(), "rampart-server init --data "+dir) {
			return "incomplete: " + err.Error()
		}
		t.Fatalf("%s neither opens nor says how to recover: %v", dir, err)
	}
	defer in.Close()
	toks, err := in.Store.OperatorTokens(context.Background())
	if err != nil || len(toks) == 0 {
		t.Fatalf("%s opens with %d operator tokens (%v)", dir, len(toks), err)
	}
	return "complete"
}

// TestInitKilledAtAnyMoment kills "rampart-server init" at moments spread
// over its run. A new data directory is then absent or complete; an
// existing (empty) one, which cannot be swapped in by a rename, is
// complete or refused by serve with a way to recover. Either way, init
// run again ends with a complete directory (or says it is initialised).
func TestInitKilledAtAnyMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	t.Parallel()
	bin := buildServer(t)
	var full time.Duration // the longest of three runs
	for range 3 {
		start := time.Now()
		initBinary(t, bin, filepath.Join(t.TempDir(), "srv"))
		full = max(full, time.Since(start))
	}
	const kills = 16
	seen := map[string]int{}
	for _, existing := range []bool{false, true} {
		for i := range kills {
			parent := t.TempDir()
			dir := filepath.Join(parent, "srv")
			if existing {
				os.Mkdir(dir, 0o700)
			}
			cmd := exec.Command(bin, "init", "--data", dir)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(full * time.Duration(i) / kills)
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			state := dirState(t, dir)
			kind, _, _ := strings.Cut(state, ":")
			seen[fmt.Sprintf("existing=%v %s", existing, kind)]++
			if !existing && strings.HasPrefix(state, "incomplete") {
				t.Fatalf("kill %d: a new data directory was left half made: %s", i, state)
			}
			// Recovery.
			out, err := exec.Command(bin, "init", "--data", dir).CombinedOutput()
			switch {
			case state == "complete":
				if err == nil || !strings.Contains(string(out), "already initialised") {
					t.Fatalf("kill %d: init on a complete directory: %v %s", i, err, out)
				}
			case err != nil:
				t.Fatalf("kill %d: init did not recover %s (%s): %v %s", i, dir, state, err, out)
			}
			if got := dirState(t, dir); got != "complete" {
				t.Fatalf("kill %d: after init: %s", i, got)
			}
			if names := dirNames(t, parent); names != "srv" {
				t.Fatalf("kill %d: left beside the data directory: %s", i, names)
			}
		}
	}
	t.Logf("init takes %s; after a kill: %v", full.Round(time.Millisecond), seen)
}

func dirNames(t *testing.T, dir string) string {
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

// An upload cut by kill -9 leaves its temporary file; the server removes
// it when it starts again.
func TestKilledUploadLeavesNoTemporaryFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	t.Parallel()
	bin := buildServer(t)
	data := filepath.Join(t.TempDir(), "srv")
	admin := initBinary(t, bin, data)
	srv := startBinary(t, bin, "serve", "--data", data, "--listen", "127.0.0.1:0")
	caPEM, _ := os.ReadFile(filepath.Join(data, "ca.pem"))
	pool, _ := pki.CertPoolFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil)}}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", fmt.Sprintf("https://%s/api/v1/blobs/%s?length=%d", srv.addr, strings.Repeat("ab", 32), 8<<20), pr)
	req.ContentLength = 8 << 20
	req.Header.Set("Authorization", "Bearer "+admin)
	go func() {
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write(make([]byte, 4<<20))
	tmp := filepath.Join(data, "blobs", "tmp")
	deadline := time.Now().Add(10 * time.Second)
	for dirNames(t, tmp) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the upload made no temporary file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	left := dirNames(t, tmp)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	srv.cmd.Wait()
	pw.CloseWithError(io.ErrClosedPipe)
	if dirNames(t, tmp) != left {
		t.Fatal("the killed upload's file is gone before the restart; the test shows nothing")
	}
	srv = startBinary(t, bin, "serve", "--data", data, "--listen", "127.0.0.1:0")
	if names := dirNames(t, tmp); names != "" {
		t.Fatalf("after a restart, blobs/tmp holds %s", names)
	}
	if !strings.Contains(srv.logs.String(), `"msg":"removed temporary files of unfinished uploads","files":1`) {
		t.Fatalf("the removal was not logged:\n%s", srv.logs.String())
	}
}
