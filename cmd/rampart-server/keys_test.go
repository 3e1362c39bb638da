package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
