package server_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server"
)

// /readyz says not ready, and why, when the data directory cannot be
// written: on a real file system (a tmpfs) filled up, then with the data
// directory made read-only (a read-only bind mount over it). Mounting
// needs root (CAP_SYS_ADMIN); as root, permission bits would not stop a
// write, so there is no unprivileged way to test this for real.
func TestReadyzReportsAnUnwritableDataDirectory(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): this test needs root", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) }) // after the server stops
	dir := filepath.Join(mnt, "srv")
	e := serveLive(t, dir, server.Limits{})
	c := e.client(nil, false)
	wait := func(status int, reason string) {
		t.Helper()
		var last string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			resp, b := e.do(c, "GET", "/readyz", "", nil)
			var out struct {
				Ready  bool
				Reason string
				Error  struct{ Code string }
			}
			json.Unmarshal(b, &out)
			last = string(b)
			if resp.StatusCode == status && (status == 200 || !out.Ready && strings.Contains(out.Reason, reason) && out.Error.Code == "not-ready") {
				if strings.Contains(last, mnt) {
					t.Fatalf("the reason names the data directory's path: %s", last)
				}
				t.Logf("%d %s", resp.StatusCode, strings.TrimSpace(last))
				return
			}
		}
		t.Fatalf("/readyz did not become %d %q: last %s", status, reason, last)
	}
	wait(200, "")

	// Fill the file system.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 64<<10)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	wait(503, "no space left on device")
	os.Remove(filler)
	wait(200, "")

	// Make the data directory read-only. (A remount of the tmpfs itself
	// is refused while the server has files open for writing on it; a
	// bind mount over the directory affects new opens only.)
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	wait(503, "read-only file system")
	if err := syscall.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	wait(200, "")
	if resp, b := e.do(c, "GET", "/readyz", "", nil); string(b) != "{\"ready\":true}\n" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("ready: %q (%s)", b, resp.Header.Get("Content-Type"))
	}
}
