package agent_test

import (
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/agent/agenttest"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

// frontEnd puts a hostile front end between the device and its server.
func (d *device) frontEnd() *agenttest.FrontEnd {
	d.t.Helper()
	f := agenttest.New(d.t, d.e, d.cert)
	d.a.Config.Server.URL = f.URL
	return f
}

// on applies fault to the requests of one URL class (urlClass).
func on(class string, fault agenttest.Fault) func(*http.Request) agenttest.Fault {
	return func(r *http.Request) agenttest.Fault {
		if urlClass(r.URL.Path) == class {
			return fault
		}
		return agenttest.Pass
	}
}

// A transfer cut part way is the network's doing, never an attack: a
// connection closed or reset halfway through any answer the agent
// verifies is a failed check-in (metadata, log) or a failed download
// (index, image), reported as neither a refusal nor with a class, and the
// next check-in with a working network installs the update.
func TestCutTransferIsNotAnAttack(t *testing.T) {
	// Not parallel, nor the other tests of this file: their transfers run
	// against short client timeouts, which a concurrent test's load made
	// expire before the stall (TestStalledTransferIsNotAnAttack, once).
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	for _, c := range []string{"director timestamp", "director snapshot", "director targets", "image timestamp",
		"image snapshot", "image targets", "image product role", "log proof", "index", "image"} {
		for _, fault := range []agenttest.Fault{agenttest.Cut, agenttest.Reset} {
			name := strings.ReplaceAll(c, " ", "-") + map[agenttest.Fault]string{agenttest.Cut: "/cut", agenttest.Reset: "/reset"}[fault]
			t.Run(name, func(t *testing.T) {
				d := newDevice(t, e, "gw-"+strings.ReplaceAll(name, "/", "-"))
				d.firstBoot()
				e.Deploy(servertest.Product+"/1.0.0", hw) // the new device too
				f := d.frontEnd()
				f.Set(on(c, fault))
				_, err := d.run()
				if f.Hits(fault) == 0 {
					t.Fatalf("no %s answer was cut; requested %v", c, f.Paths())
				}
				var ve *verify.Error
				if err == nil || errors.As(err, &ve) {
					t.Fatalf("got %v, want a failed transfer, not a refusal", err)
				}
				download := c == "index" || c == "image"
				if download {
					if !errors.Is(err, agent.ErrInstall) {
						t.Fatalf("got %v, want an install (download) failure", err)
					}
				} else if !errors.Is(err, agent.ErrUnavailable) || !strings.Contains(failure.HintOf(err), "not a refusal") {
					t.Fatalf("got %v (hint %q), want a failed check-in with its hint", err, failure.HintOf(err))
				}
				if st := d.status(); st.LastError == nil || st.LastError.Class != "" {
					t.Fatalf("status: last error %+v, want one without a class", st.LastError)
				}
				srv := d.server()
				if srv["last_status"] == "verification-refused" || download && srv["last_status"] != "failed" {
					t.Fatalf("server record %v", srv)
				}
				d.assertUntouched()

				f.Set(nil) // the network is back
				if out, err := d.run(); err != nil || out.Action != "installed-pending-reboot" {
					t.Fatalf("after the cut: %+v, %v", out, err)
				}
			})
		}
	}
}

// A transfer that stalls until the client's time limit is a failed
// transfer too, for metadata as for the image.
func TestStalledTransferIsNotAnAttack(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	for _, c := range []string{"director timestamp", "image snapshot", "image"} {
		t.Run(strings.ReplaceAll(c, " ", "-"), func(t *testing.T) {
			d := newDevice(t, e, "gw-stall-"+strings.ReplaceAll(c, " ", "-"))
			d.firstBoot()
			e.Deploy(servertest.Product+"/1.0.0", hw)
			d.a.Config.Download.Retries = -1 // no retry (0 would be the default, 4)
			f := d.frontEnd()
			f.Set(on(c, agenttest.Stall))
			d.a.HTTP.Timeout = time.Second
			_, err := d.run()
			var ve *verify.Error
			if f.Hits(agenttest.Stall) == 0 || err == nil || errors.As(err, &ve) {
				t.Fatalf("got %v after %d stalls, want a failed transfer", err, f.Hits(agenttest.Stall))
			}
			if !errors.Is(err, agent.ErrUnavailable) && !errors.Is(err, agent.ErrInstall) {
				t.Fatalf("got %v, want a failed check-in or download", err)
			}
			d.assertUntouched()
		})
	}
}

// A payload whose answers carry more bytes than were asked for is endless
// data: refused at once (never retried), reported as endless-data, and no
// byte of it reaches the slot.
func TestPayloadLongerThanAskedIsEndlessData(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	f := d.frontEnd()
	f.Set(on("image", agenttest.Append))
	_, err := d.run()
	wantClass(t, err, verify.EndlessData)
	if n := f.Hits(agenttest.Append); n != 1 {
		t.Errorf("%d over-long answers read: endless data was retried", n)
	}
	if !d.slotZeroFrom(bootloader.B, 0) {
		t.Error("bytes of an over-long answer reached the slot")
	}
	if st := d.status(); st.LastError == nil || st.LastError.Class != string(verify.EndlessData) {
		t.Fatalf("status: last error %+v", st.LastError)
	}
	if srv := d.server(); srv["last_status"] != "verification-refused" {
		t.Fatalf("server record: %v", srv)
	}
	d.assertUntouched()
}

// A mirror that ignores Range answers each request with the whole file:
// the agent reads it once, in order, verifying each chunk before it is
// written, and the update installs and commits.
func TestMirrorIgnoringRange(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := make([]byte, 5<<20+321) // several spans with 2 workers
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	f := d.frontEnd()
	f.Set(on("image", agenttest.IgnoreRange))
	out, err := d.run()
	if err != nil {
		t.Fatal(err)
	}
	if out.Action != "installed-pending-reboot" || out.Install.Fetched != out.Install.Chunks {
		t.Fatalf("run: %+v %+v", out, out.Install)
	}
	if !d.slotHas(bootloader.B, img) {
		t.Fatal("slot B does not hold the image")
	}
	// One refused request per worker at most, then one pass.
	if n := f.Hits(agenttest.IgnoreRange); n > d.cfg.Download.Workers+1 {
		t.Errorf("%d requests for the image", n)
	}
	d.powerCycle()
	if out := d.boot(); out.Action != "committed" {
		t.Fatalf("boot: %+v", out)
	}
}
