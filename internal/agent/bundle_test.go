package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/bundle/bundletest"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

// deviceView is everything a refused bundle must leave as it was: both
// slots byte for byte, the boot state, and what status says of slots,
// releases, the counter and a pending install.
type deviceView struct {
	slotA, slotB [32]byte
	boot         bootloader.State
	committed    string
	running      string
	other        string
	counter      uint64
	pending      bool
}

func (d *device) view() deviceView {
	d.t.Helper()
	st := d.status()
	bs, err := d.sim.State()
	if err != nil {
		d.t.Fatal(err)
	}
	v := deviceView{slotA: d.slotHash(d.cfg.Slots.A), slotB: d.slotHash(d.cfg.Slots.B),
		boot: bs, committed: st.CommittedSlot, counter: st.SecurityCounter, pending: st.Pending != nil}
	if st.Running != nil {
		v.running = st.Running.Target
	}
	if st.Other != nil {
		v.other = st.Other.Target
	}
	return v
}

// slotHash is the SHA-256 of a slot file, streamed (copying 8 MiB slices
// is slow under the race detector).
func (d *device) slotHash(path string) (sum [32]byte) {
	d.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		d.t.Fatal(err)
	}
	copy(sum[:], h.Sum(nil))
	return sum
}

func sameView(a, b deviceView) bool {
	return a.slotA == b.slotA && a.slotB == b.slotB && a.committed == b.committed && a.running == b.running &&
		a.other == b.other && a.counter == b.counter && a.pending == b.pending &&
		strings.Join(slotNames(a.boot.Order), ",") == strings.Join(slotNames(b.boot.Order), ",") &&
		a.boot.Attempts[bootloader.A] == b.boot.Attempts[bootloader.A] && a.boot.Attempts[bootloader.B] == b.boot.Attempts[bootloader.B]
}

func slotNames(ss []bootloader.Slot) (out []string) {
	for _, s := range ss {
		out = append(out, string(s))
	}
	return out
}

// fallbackDevice is the device of the issue: running 2.0.1 in slot A, with
// a verified 2.0.0 in slot B as its fallback, and a genuine bundle of a
// newer 2.1.0 (three chunks and a bit) at hand.
func fallbackDevice(t *testing.T) (*device, *servertest.Env, []byte) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-usb")
	d.firstBoot()
	e.Release("2.0.0", 2, hw)
	e.Deploy(servertest.Product+"/2.0.0", hw)
	d.commit("2.0.0") // into B
	e.Release("2.0.1", 2, hw)
	e.Deploy(servertest.Product+"/2.0.1", hw)
	d.commit("2.0.1") // into A
	img := make([]byte, 3<<20+5)
	rand.Read(img)
	e.ReleaseImage("2.1.0", 3, img, hw)
	good, err := os.ReadFile(bundleOf(t, e, "2.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	v := d.view()
	if v.running != servertest.Product+"/2.0.1/fw.img" || v.other != servertest.Product+"/2.0.0/fw.img" || !v.boot.InOrder(bootloader.B) {
		t.Fatalf("setup: %+v", v)
	}
	return d, e, good
}

// TestHostileBundleChangesNothing tries each hostile bundle on a device
// with a fallback: each is refused with its exact class, before anything
// is marked or written, and the device is exactly as it was. The genuine
// bundle then installs, so the refusals are the bundles' doing.
func TestHostileBundleChangesNothing(t *testing.T) {
	t.Parallel()
	d, e, good := fallbackDevice(t)
	ms, err := bundletest.Split(good)
	if err != nil {
		t.Fatal(err)
	}
	members := bundletest.Members(ms)
	image := ms[len(ms)-1].Body
	end := len(good) - 1024
	write := func(f func(w *bundletest.Writer)) []byte {
		var buf bytes.Buffer
		f(&bundletest.Writer{W: &buf})
		return buf.Bytes()
	}
	old, err := os.ReadFile(bundleOf(t, e, "2.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	oldMs, _ := bundletest.Split(old)

	cases := []struct {
		name  string
		data  []byte
		class verify.Class
		msg   string
	}{
		{"last image byte changed", func() []byte {
			b := bytes.Clone(good)
			b[end-1-(512-len(image)%512)%512] ^= 1
			return b
		}(), verify.Mismatch, "image chunk 3 at offset 3145728 does not match its signed hash"},
		{"1 MiB GNU long name before the index", write(func(w *bundletest.Writer) {
			members.Before(w, "index")
			w.GNULongName(strings.Repeat("\x1b[2J", 256<<10))
			members.From(w, "index")
			w.End()
		}), verify.Malformed, "a member name of 1048577 bytes"},
		{"byte after the end", append(bytes.Clone(good), 'x'), verify.Malformed, "non-zero bytes after the end-of-archive blocks"},
		{"member after the image", write(func(w *bundletest.Writer) {
			members.From(w, "rampart-bundle.json")
			w.File("payload.sh", []byte("#!/bin/sh\n"))
			w.End()
		}), verify.Malformed, `unexpected member "payload.sh" after the image`},
		{"second image", write(func(w *bundletest.Writer) {
			members.From(w, "rampart-bundle.json")
			w.File("image", image)
			w.End()
		}), verify.Malformed, `unexpected member "image" after the image`},
		{"a thousand members after the image", write(func(w *bundletest.Writer) {
			members.From(w, "rampart-bundle.json")
			for range 1000 {
				w.File("x", nil)
			}
			w.End()
		}), verify.Malformed, `unexpected member "x" after the image`},
		{"70 KiB after the end", append(bytes.Clone(good), bytes.Repeat([]byte{7}, 70<<10)...), verify.Malformed, "after the end-of-archive blocks"},
		{"garbage in the end-of-archive blocks", func() []byte {
			b := bytes.Clone(good)
			b[end+1000] = 1
			return b
		}(), verify.Malformed, "non-zero bytes in the end-of-archive blocks"},
		{"no end-of-archive blocks", good[:end], verify.Malformed, "(0 of 1024 bytes)"},
		{"half the end-of-archive blocks", good[:end+512], verify.Malformed, "(512 of 1024 bytes)"},
		{"cut inside the image", good[:end-(1<<20)], verify.Malformed, "truncated bundle"},
		{"swapped index", write(func(w *bundletest.Writer) {
			members.Before(w, "index")
			w.File("index", oldMs[bundletest.Index(oldMs, "index")].Body)
			members.From(w, "image")
			w.End()
		}), verify.Mismatch, "chunk index is"},
		{"swapped image", write(func(w *bundletest.Writer) {
			members.Before(w, "image")
			w.File("image", oldMs[len(oldMs)-1].Body)
			w.End()
		}), verify.Mismatch, "the signed length is"},
		{"manifest with case-variant keys", write(func(w *bundletest.Writer) {
			w.File("rampart-bundle.json", bytes.Replace(ms[0].Body, []byte(`"target"`), []byte(`"TARGET"`), 1))
			members[1:].From(w, ms[1].Name)
			w.End()
		}), verify.Malformed, "rampart-bundle.json"},
		{"manifest with trailing data", write(func(w *bundletest.Writer) {
			w.File("rampart-bundle.json", append(bytes.Clone(ms[0].Body), []byte(`{"format":1} garbage`)...))
			members[1:].From(w, ms[1].Name)
			w.End()
		}), verify.Malformed, "rampart-bundle.json"},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		before := d.view()
		path := filepath.Join(dir, "hostile.rbundle")
		if err := os.WriteFile(path, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := d.a.InstallBundle(context.Background(), path)
		var ve *verify.Error
		if !errors.As(err, &ve) || ve.Class != tc.class || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%s: got %+v, %v; want a %s refusal containing %q", tc.name, out, err, tc.class, tc.msg)
		}
		var sc *agent.SlotChangedError
		if errors.As(err, &sc) {
			t.Fatalf("%s: refused after the install began", tc.name)
		}
		if after := d.view(); !sameView(before, after) {
			t.Fatalf("%s: the device changed:\nbefore %+v\nafter  %+v", tc.name, before, after)
		}
		st := d.status()
		if st.LastError == nil || st.LastError.Class != string(tc.class) || len(st.LastError.Msg) > 4<<10 {
			t.Fatalf("%s: last error %+v", tc.name, st.LastError)
		}
		if n := d.stateSize(); n > maxSmallState {
			t.Fatalf("%s: state.json is %d bytes", tc.name, n)
		}
	}

	// The genuine bundle installs; the device boots and commits it.
	path := filepath.Join(dir, "good.rbundle")
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := d.a.InstallBundle(context.Background(), path)
	if err != nil || out.Action != "installed-pending-reboot" || out.Slot != "B" {
		t.Fatalf("the genuine bundle: %+v, %v", out, err)
	}
	d.powerCycle()
	if b := d.boot(); b.Action != "committed" {
		t.Fatalf("boot: %+v", b)
	}
}

// Something that is not a bundle file is a usage error: nothing was
// judged, nothing is recorded, and a pipe is refused before a byte of it
// is read.
func TestBundleThatIsNotAFile(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-usage")
	d.firstBoot()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	before := d.view()
	for name, path := range map[string]string{"missing": filepath.Join(t.TempDir(), "none.rbundle"), "directory": t.TempDir(), "pipe": fifo} {
		_, err := d.a.InstallBundle(context.Background(), path)
		var ue *agent.UsageError
		var ve *verify.Error
		if !errors.As(err, &ue) || errors.As(err, &ve) {
			t.Fatalf("%s: got %v, want a usage error", name, err)
		}
		if name == "pipe" && !strings.Contains(err.Error(), "is not a regular file (a pipe)") {
			t.Fatalf("pipe: %v", err)
		}
		if after := d.view(); !sameView(before, after) || d.status().LastError != nil {
			t.Fatalf("%s: the device changed", name)
		}
	}
}

// eio is a medium that fails with EIO from byte from on.
type eio struct {
	r    io.ReaderAt
	from int64
}

func (m eio) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= m.from {
		return m.r.ReadAt(p, off)
	}
	n := 0
	if off < m.from {
		n, _ = m.r.ReadAt(p[:m.from-off], off)
	}
	return n, &os.PathError{Op: "read", Path: "/media/usb/fw.rbundle", Err: syscall.EIO}
}

// A failing medium is an environment error, not an attack: no class, no
// refusal report, and the device is as it was.
func TestBundleOnFailingMedium(t *testing.T) {
	d, _, good := fallbackDevice(t)
	path := filepath.Join(t.TempDir(), "b.rbundle")
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, from := range []int64{0, 3000, int64(len(good)) - 2<<20, int64(len(good)) - 700} {
		restore := agent.SetBundleMedium(func(r io.ReaderAt) io.ReaderAt { return eio{r, from} })
		before := d.view()
		_, err := d.a.InstallBundle(context.Background(), path)
		restore()
		var re *bundle.ReadError
		var ve *verify.Error
		if !errors.As(err, &re) || !errors.Is(err, syscall.EIO) || errors.As(err, &ve) {
			t.Fatalf("EIO from byte %d: got %v, want a read error", from, err)
		}
		if after := d.view(); !sameView(before, after) {
			t.Fatalf("EIO from byte %d: the device changed", from)
		}
		if st := d.status(); st.LastError == nil || st.LastError.Class != "" {
			t.Fatalf("EIO from byte %d: last error %+v", from, st.LastError)
		}
	}
}

// A medium that passes the check and then answers differently (the
// stick's controller is hostile) makes the install refuse after it began:
// no unverified byte is written, the pending record goes, and the error
// does not claim nothing was installed.
func TestBundleChangingBetweenPasses(t *testing.T) {
	d, _, good := fallbackDevice(t)
	path := filepath.Join(t.TempDir(), "b.rbundle")
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	restore := agent.SetBundleMedium(func(r io.ReaderAt) io.ReaderAt {
		return &changing{r: r, at: int64(len(good)) - 1024 - 2<<20}
	})
	defer restore()
	_, err := d.a.InstallBundle(context.Background(), path)
	var sc *agent.SlotChangedError
	wantClass(t, err, verify.Mismatch)
	if !errors.As(err, &sc) || sc.Slot != "B" {
		t.Fatalf("got %v, want a refusal after the install into B began", err)
	}
	st := d.status()
	if st.Pending != nil || st.Other != nil || st.Running == nil || st.Running.Version != "2.0.1" {
		t.Fatalf("status after the refusal: pending %+v, other %+v, running %+v", st.Pending, st.Other, st.Running)
	}
	if bs, _ := d.sim.State(); bs.InOrder(bootloader.B) {
		t.Fatalf("slot B is bootable: %v", bs)
	}
}

// changing flips the byte at at every time but the first that it is read:
// the check sees the genuine byte, the install another.
type changing struct {
	r      io.ReaderAt
	at     int64
	seenAt atomic.Bool
}

func (c *changing) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	if off <= c.at && c.at < off+int64(n) && c.seenAt.Swap(true) {
		p[c.at-off] ^= 1
	}
	return n, err
}
