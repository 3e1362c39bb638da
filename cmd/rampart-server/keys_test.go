package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/keys"
)

// TestServeLogsOnlineKeyIDs: at startup the server logs the id of each
// online key and the log's verifier key, which operators compare with
// what rampart server keys prints.
func TestServeLogsOnlineKeyIDs(t *testing.T) {
	data := filepath.Join(t.TempDir(), "srv")
	if code := run(t.Context(), []string{"init", "--data", data}, io.Discard, io.Discard); code != 0 {
		t.Fatal("init failed")
	}
	_, logs := serveInProcess(t, "--data", data)
	var line map[string]string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"online keys"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no online keys line in %s", logs.String())
	}
	for _, role := range []string{"snapshot", "timestamp", "director-targets", "director-snapshot", "director-timestamp"} {
		pub, err := keys.ReadPublicFile(filepath.Join(data, "online", role+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := keys.ID(pub)
		if line[role] != id {
			t.Errorf("%s: logged %q, want %s", role, line[role], id)
		}
	}
	vkey, _ := os.ReadFile(filepath.Join(data, "online", "log.pub"))
	if line["log_key"] != strings.TrimSpace(string(vkey)) {
		t.Errorf("log_key: logged %q, want %q", line["log_key"], vkey)
	}
}

// rotate-keys --log re-signs the log where serve keeps it: with a log_dir
// in the configuration (replicas' shared storage), that directory's
// checkpoint, not DATA/log's.
func TestRotateLogKeyInLogDir(t *testing.T) {
	dir := t.TempDir()
	data, shared := filepath.Join(dir, "srv"), filepath.Join(dir, "shared-log")
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"log_dir": "`+shared+`"}`), 0o644)
	if code := run(t.Context(), []string{"init", "--data", data, "--config", cfg}, io.Discard, io.Discard); code != 0 {
		t.Fatal("init failed")
	}
	t.Run("serve", func(t *testing.T) { serveInProcess(t, "--data", data, "--config", cfg) }) // writes the log's first checkpoint
	verifier := func() note.Verifier {
		b, err := os.ReadFile(filepath.Join(data, "online", "log.pub"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := note.NewVerifier(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	signedBy := func(v note.Verifier) bool {
		raw, err := os.ReadFile(filepath.Join(shared, "checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = note.Open(raw, note.VerifierList(v))
		return err == nil
	}
	old := verifier()
	if !signedBy(old) {
		t.Fatal("the shared log's checkpoint is not signed by the log key before the rotation")
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"rotate-keys", "--data", data, "--log", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("rotate-keys --log: %d %s", code, errb.String())
	}
	if cur := verifier(); cur.KeyHash() == old.KeyHash() || !signedBy(cur) || signedBy(old) {
		t.Fatalf("after the rotation the shared checkpoint is not signed by the new key alone (%s)", out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "log", "checkpoint")); !os.IsNotExist(err) {
		t.Fatalf("a checkpoint appeared in the data directory's log: %v", err)
	}
	// The server starts on the rotated log.
	t.Run("serve again", func(t *testing.T) { serveInProcess(t, "--data", data, "--config", cfg) })
}
