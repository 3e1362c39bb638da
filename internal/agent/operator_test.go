package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/powercut"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// Status names the release in the other slot only while the slot holds
// it: not while an install is overwriting it, and not after that install
// was rolled back (the slot then holds the failed release).
func TestStatusOtherSlot(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	d.commit("1.0.0") // into B
	e.Release("1.1.0", 3, hw)
	e.Deploy(servertest.Product+"/1.1.0", hw)
	d.commit("1.1.0") // into A
	if st := d.status(); st.Other == nil || st.Other.Version != "1.0.0" {
		t.Fatalf("after two commits, other slot %+v, want 1.0.0", st.Other)
	}

	e.Release("1.2.0", 4, hw)
	e.Deploy(servertest.Product+"/1.2.0", hw)
	if _, err := d.run(); err != nil { // into B, over 1.0.0
		t.Fatal(err)
	}
	if st := d.status(); st.Pending == nil || st.Other != nil {
		t.Fatalf("while 1.2.0 is pending in B, other slot %+v, want none", st.Other)
	}
	d.powerCycle()
	d.health = func() error { return errors.New("unhealthy") }
	if out := d.boot(); out.Action != "rolled-back" {
		t.Fatalf("boot: %+v", out)
	}
	d.health = func() error { return nil }
	d.powerCycle()
	d.boot()
	if st := d.status(); st.Running == nil || st.Running.Version != "1.1.0" || st.Other != nil {
		t.Fatalf("after the rollback: running %+v, other %+v; want 1.1.0 and none", st.Running, st.Other)
	}
}

// A relative health.command (and reboot.command) is relative to the
// configuration file's directory, as every path in it is, wherever the
// agent is started; a bare name is looked up in PATH.
func TestRelativeCommandsFromConfigDir(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"bin/health": "#!/bin/sh\necho ok > \"$1\"\n", "agent.toml": `
[device]
id = "gw-1"
hardware_id = "hw"
key = "k"
certificate = "c"
[trust]
image_root = "i"
director_root = "d"
log_key = "l"
[slots]
a = "a"
b = "b"
[bootloader]
backend = "sim"
env = "boot.json"
[health]
command = ["bin/health", "healthy"]
[reboot]
command = ["true"]
[state]
dir = "state"
`} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(t.TempDir()) // anywhere but the configuration's directory
	cfg, err := agent.LoadConfig(filepath.Join(dir, "agent.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Health.Command[0]; got != filepath.Join(dir, "bin/health") {
		t.Fatalf("health command %q", got)
	}
	if got := cfg.Reboot.Command[0]; got != "true" {
		t.Fatalf("reboot command %q: a bare name must stay a PATH lookup", got)
	}
	if err := agent.RunCommand(context.Background(), cfg.Health.Command, cfg.Health.Timeout.Duration); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("healthy"); err != nil {
		t.Fatal("the health command did not run where the agent runs")
	}
}

// Without a [server] section, run says so, as a configuration error;
// enrolling would not help.
func TestRunWithoutServer(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.a.Config.Server = agent.ServerConfig{}
	d.a.HTTP = nil // as agent.New leaves it without server.url
	_, err := d.run()
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || errors.Is(err, agent.ErrNotEnrolled) || !strings.Contains(err.Error(), "[server]") {
		t.Fatalf("got %v, want a configuration error naming [server]", err)
	}
	if strings.HasPrefix(err.Error(), ":") {
		t.Errorf("message %q starts with an empty path", err)
	}
}

// A release larger than the slot is refused before anything is
// downloaded or written, for a file slot (its size is the partition's;
// it is never grown) and for a block device; the report is failed with
// reason too-large and the error carries a hint.
func TestImageLargerThanSlot(t *testing.T) {
	e := servertest.New(t)
	img := make([]byte, 2<<20+4321)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)

	t.Run("file", func(t *testing.T) {
		d := newDevice(t, e, "gw-file")
		if err := os.Truncate(d.cfg.Slots.B, 1<<20); err != nil {
			t.Fatal(err)
		}
		d.firstBoot()
		e.Deploy(servertest.Product+"/1.0.0", hw) // the new device too
		f := d.frontEnd()
		_, err := d.run()
		if !errors.Is(err, agent.ErrInstall) || !strings.Contains(failure.HintOf(err), "does not fit") {
			t.Fatalf("got %v (hint %q), want a too-large install failure with a hint", err, failure.HintOf(err))
		}
		for _, p := range f.Paths() {
			if strings.HasPrefix(p, "/repo/targets/") {
				t.Fatalf("%s was downloaded for a release that cannot fit", p)
			}
		}
		if fi, err := os.Stat(d.cfg.Slots.B); err != nil || fi.Size() != 1<<20 {
			t.Fatalf("slot B is now %v bytes (%v), want it left at 1 MiB", fi.Size(), err)
		}
		if !d.slotZeroFrom(bootloader.B, 0) {
			t.Fatal("slot B was written")
		}
		if srv := d.server(); srv["last_status"] != "failed" {
			t.Fatalf("server record %v", srv)
		}
		d.assertUntouched()
	})

	t.Run("block-device", func(t *testing.T) {
		cert := e.Enroll("gw-pl", hw)
		e.Deploy(servertest.Product+"/1.0.0", hw)
		h := &harness{t: t, e: e, id: "gw-pl", cert: e.Client(cert), img: img, factory: make([]byte, 4096), healthy: true}
		m := powercut.New()
		m.Put(slotA, h.factory)
		m.PutDevice(slotB, 1<<20)
		if err := m.MkdirAll("/boot", 0o755); err != nil {
			t.Fatal(err)
		}
		s := h.newSim(m, t.TempDir(), &reportLog{})
		if err := s.powerOn(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.a.Boot(context.Background()); err != nil {
			t.Fatal(err)
		}
		_, err := s.a.Run(context.Background())
		if !errors.Is(err, agent.ErrInstall) || !strings.Contains(err.Error(), "holds 1048576") {
			t.Fatalf("got %v, want a too-large install failure", err)
		}
		if b, _ := m.Get(slotB); len(b) != 1<<20 || bytes.Count(b, []byte{0}) != len(b) {
			t.Fatal("the block device was written")
		}
		if got := s.reports.sent[len(s.reports.sent)-1]; got.Status != "failed" || got.Reason != "too-large" {
			t.Fatalf("last report %+v, want failed/too-large", got)
		}
	})
}
