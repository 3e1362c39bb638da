package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// maxSmallState is far below the agent's 1 MiB read limit: a state file
// that an attacker's text made bigger than this is the lock-out class.
const maxSmallState = 64 << 10

func (d *device) statePath() string { return filepath.Join(d.a.Config.State.Dir, "state.json") }

func (d *device) stateSize() int64 {
	d.t.Helper()
	fi, err := os.Stat(d.statePath())
	if err != nil {
		d.t.Fatal(err)
	}
	return fi.Size()
}

// A front end holding only the server's TLS key answers the director's
// timestamp with a redirect whose 1.2 MiB location the transport error
// quotes in full. Before the bound, the agent stored that text as its last
// error, the state file outgrew the agent's own read limit, and status,
// boot, run and install failed for good. Now the error is kept bounded,
// every command keeps working, and the next honest check-in succeeds.
func TestHostileErrorTextCannotLockTheStateOut(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-lockout")
	d.firstBoot()
	honest := d.a.HTTP
	long := "https://127.0.0.1:1/" + strings.Repeat("%1b[2J", 200<<10)
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		if strings.HasSuffix(req.URL.Path, "/timestamp.json") {
			resp.Body.Close()
			return &http.Response{StatusCode: http.StatusFound, Header: http.Header{"Location": {long}},
				Body: io.NopCloser(strings.NewReader("")), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		}
		return resp
	})
	if _, err := d.run(); err == nil {
		t.Fatal("check-in through the hostile redirect succeeded")
	}
	if n := d.stateSize(); n > maxSmallState {
		t.Fatalf("state.json is %d bytes after one hostile answer, want at most %d", n, maxSmallState)
	}
	st := d.status()
	if st.LastError == nil || len(st.LastError.Msg) > 4<<10 || strings.Contains(st.LastError.Msg, "\x1b") {
		t.Fatalf("last error %+v, want a bounded, printable message", st.LastError)
	}
	d.powerCycle()
	d.boot()
	d.a.HTTP = honest
	out, err := d.run()
	if err != nil {
		t.Fatalf("honest check-in after the attack: %v", err)
	}
	t.Logf("after the attack: %s, state.json %d bytes", out.Action, d.stateSize())
}

// An agent before the bound could have written a state file over its own
// read limit. This agent salvages it: the counters, the committed slot and
// the releases survive, and the file is written back bounded.
func TestOversizedStateIsSalvaged(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-salvage")
	d.firstBoot()
	var st map[string]any
	b, err := os.ReadFile(d.statePath())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	st["security_counter"], st["report_counter"] = 7, 4000
	st["last_error"] = map[string]any{"time": "2026-01-01T00:00:00Z", "class": "malformed", "msg": strings.Repeat("\x1b", 1<<20)}
	b, _ = json.Marshal(st)
	if len(b) <= 1<<20 {
		t.Fatalf("test state is only %d bytes", len(b))
	}
	if err := os.WriteFile(d.statePath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := d.status()
	if s.SecurityCounter != 7 || s.ReportCounter < 4000 || s.CommittedSlot != "A" {
		t.Fatalf("status of the salvaged state: %+v", s)
	}
	d.powerCycle()
	d.boot()
	if n := d.stateSize(); n > maxSmallState {
		t.Fatalf("the salvaged state was written back with %d bytes", n)
	}
	if s := d.status(); s.SecurityCounter != 7 || s.ReportCounter < 4000 {
		t.Fatalf("counters after the salvage: %+v", s)
	}
}

// A state file damaged on the medium is set aside and the agent starts over
// from its counters file: the anti-rollback and report counters never go
// back. With the counters file damaged too, nothing is guessed.
func TestDamagedStateKeepsItsCounters(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-damaged")
	d.firstBoot()
	dir := d.a.Config.State.Dir
	counters := filepath.Join(dir, "counters.json")
	if err := os.WriteFile(counters, []byte(`{"security_counter":9,"report_counter":5000}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// A counters file ahead of the state (a power cut between the two
	// writes) raises the state's counters.
	if s := d.status(); s.SecurityCounter != 9 || s.ReportCounter != 5000 {
		t.Fatalf("counters file ahead of the state: status %+v", s)
	}
	if err := os.WriteFile(d.statePath(), []byte("{\"format\":1,\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := d.status()
	if s.SecurityCounter != 9 || s.LastError == nil || !strings.Contains(s.LastError.Msg, "corrupt") {
		t.Fatalf("status of a damaged state: %+v", s)
	}
	if d.powerCycle() != bootloader.A {
		t.Fatal("the factory slot did not boot")
	}
	d.boot()
	if _, err := os.Stat(d.statePath() + ".damaged"); err != nil {
		t.Fatalf("the damaged state was not set aside: %v", err)
	}
	if s := d.status(); s.SecurityCounter != 9 || s.ReportCounter < 5000 || s.CommittedSlot != "A" {
		t.Fatalf("after recovery: %+v", s)
	}
	if _, err := d.run(); err != nil {
		t.Fatalf("check-in after recovery: %v", err)
	}

	// Both files damaged: refuse, with a way out.
	for _, p := range []string{d.statePath(), counters} {
		if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := d.a.Boot(t.Context())
	if !errors.Is(err, agent.ErrStateDamaged) || !strings.Contains(err.Error(), "re-provision") {
		t.Fatalf("boot with state and counters damaged: %v", err)
	}
	if b, _ := os.ReadFile(d.statePath()); !bytes.Equal(b, []byte("garbage")) {
		t.Fatal("the damaged state was changed although nothing could be recovered")
	}
}
