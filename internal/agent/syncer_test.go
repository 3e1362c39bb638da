package agent_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"math/bits"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// doneChunks counts the chunks the progress file records as written and
// synced.
func doneChunks(t *testing.T, d *device) int {
	b, err := os.ReadFile(filepath.Join(d.dir, "state", "progress"))
	if err != nil {
		return 0
	}
	var p struct{ Done []byte }
	if err := json.Unmarshal(b, &p); err != nil {
		t.Errorf("progress file: %v", err)
		return 0
	}
	n := 0
	for _, b := range p.Done {
		n += bits.OnesCount8(b)
	}
	return n
}

// The slot is synced and progress saved in batches while the download goes
// on: the response for the last chunk is held back until the progress file
// records earlier chunks, which can only happen if the batches are
// persisted while chunks are still being fetched.
func TestProgressPersistedDuringDownload(t *testing.T) {
	defer agent.SetProgressEvery(2)()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := make([]byte, 6<<20+77) // seven chunks
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	var sawProgress atomic.Int32
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		if !strings.HasPrefix(req.Header.Get("Range"), "bytes=6291456-") {
			return resp
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if n := doneChunks(t, d); n >= 4 {
				sawProgress.Store(int32(n))
				break
			}
		}
		return resp
	})
	out, err := d.run()
	if err != nil {
		t.Fatal(err)
	}
	if n := sawProgress.Load(); n < 4 {
		t.Fatalf("no progress was persisted while the last chunk was held back (want >= 4 chunks, saw %d)", n)
	}
	if out.Action != "installed-pending-reboot" {
		t.Fatalf("outcome %+v", out)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "state", "progress")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the progress file outlived a finished install: %v", err)
	}
}

// failingSync is the real filesystem, except that Sync of the slot file
// fails with EIO once it has succeeded ok times.
type failingSync struct {
	fsys.FS
	slot string
	ok   int32
	n    atomic.Int32
}

func (f *failingSync) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || name != f.slot {
		return file, err
	}
	return &failingFile{File: file, fs: f}, nil
}

type failingFile struct {
	fsys.File
	fs *failingSync
}

func (f *failingFile) Sync() error {
	if f.fs.n.Add(1) > f.fs.ok {
		return &fs.PathError{Op: "fsync", Path: f.fs.slot, Err: syscall.EIO}
	}
	return f.File.Sync()
}

// A slot that cannot be synced ends the install with that error, reported
// as a failed install; the running slot stays as it was and the new one
// never becomes bootable.
func TestSlotSyncFailureStopsInstall(t *testing.T) {
	defer agent.SetProgressEvery(2)()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := make([]byte, 6<<20+77)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	d.a.FS = &failingSync{FS: fsys.OS, slot: d.a.Config.Slots.B}
	_, err := d.run()
	if !errors.Is(err, agent.ErrInstall) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("err = %v, want an install error wrapping EIO", err)
	}
	if st := d.status(); st.LastError == nil || !strings.Contains(st.LastError.Msg, "syncing the slot") {
		t.Errorf("last error = %+v, want the sync failure", st.LastError)
	}
	d.assertUntouched()
	if got := d.powerCycle(); got != bootloader.A {
		t.Fatalf("booted %s", got)
	}
}
