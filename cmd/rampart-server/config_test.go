package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Configuration precedence: a flag beats the environment, which beats the
// config file.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"data": "`+filepath.Join(dir, "from-file")+`", "log_origin": "file.example/log"}`), 0o644)
	initAt := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(t.Context(), append([]string{"init"}, args...), &out, &errb); code != 0 {
			t.Fatalf("init %v: %d %s", args, code, errb.String())
		}
		first := strings.SplitN(out.String(), "\n", 2)[0]
		return strings.TrimPrefix(first, "initialised ")
	}
	t.Setenv("RAMPART_CONFIG", cfg)
	t.Setenv("RAMPART_DATA", filepath.Join(dir, "from-env"))
	if got := initAt("--data", filepath.Join(dir, "from-flag")); got != filepath.Join(dir, "from-flag") {
		t.Fatalf("flag lost to %s", got)
	}
	if got := initAt(); got != filepath.Join(dir, "from-env") {
		t.Fatalf("environment lost to %s", got)
	}
	t.Setenv("RAMPART_DATA", "")
	if got := initAt(); got != filepath.Join(dir, "from-file") {
		t.Fatalf("config file ignored: %s", got)
	}
	// The file's log origin was used.
	b, err := os.ReadFile(filepath.Join(dir, "from-file", "online", "log.pub"))
	if err != nil || !strings.HasPrefix(string(b), "file.example/log+") {
		t.Fatalf("log origin from the file not used: %q %v", b, err)
	}
	// Initialising twice is refused with the usage exit code.
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"init", "--data", filepath.Join(dir, "from-flag")}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "already initialised") {
		t.Fatalf("second init: %d %s", code, errb.String())
	}
	// A malformed config file is an input error naming the file.
	os.WriteFile(cfg, []byte(`{"data": 1}`), 0o644)
	errb.Reset()
	if code := run(t.Context(), []string{"init"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), cfg) {
		t.Fatalf("bad config: %d %s", code, errb.String())
	}
}

// background_interval is a duration from a second to an hour; anything
// else is refused before the server starts, naming the member.
func TestBackgroundIntervalBounds(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "srv")
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"init", "--data", data}, &out, &errb); code != 0 {
		t.Fatalf("init: %d %s", code, errb.String())
	}
	cfg := filepath.Join(dir, "config.json")
	for _, v := range []string{"500ms", "2h", "soon", "-1m"} {
		os.WriteFile(cfg, []byte(`{"background_interval": "`+v+`"}`), 0o644)
		errb.Reset()
		code := run(t.Context(), []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--config", cfg}, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "background_interval") || !strings.Contains(errb.String(), "from 1s to 1h") {
			t.Errorf("background_interval %q: exit %d, %s", v, code, errb.String())
		}
	}
}
