package agent_test

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/tlog"
	"github.com/rampartfw/rampart/internal/verify"
)

// The recovery ceremonies of docs/incident-response.md, step by step, as
// the commands run them (rampart-server keys rotate, rampart repo rotate,
// rampart repo sign, rampart repo push, rampart director push-root,
// rampart repo set-log-key). Nothing is done on the device.

// rotateImageOnlineKeys: new snapshot and timestamp keys on the server,
// a root naming them signed by the root key holders, pushed.
func rotateImageOnlineKeys(t *testing.T, e *servertest.Env) {
	t.Helper()
	rot, err := datadir.RotateKeys(e.DataDir, datadir.ImageRoles)
	if err != nil {
		t.Fatal(err)
	}
	e.Restart()
	for _, r := range rot {
		pub, err := keys.ReadPublicFile(r.PublicFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Repo.Rotate(r.Role, offlinerepo.RotateOptions{Add: []crypto.PublicKey{pub}, Remove: []string{r.PreviousID}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Repo.Sign("root", e.RootKey); err != nil {
		t.Fatal(err)
	}
	if err := e.PushStaged(nil); err != nil {
		t.Fatal(err)
	}
}

// rotateDirectorOnlineKeys: new director keys on the server, a director
// root naming them signed by the director's root key holders, pushed.
func rotateDirectorOnlineKeys(t *testing.T, e *servertest.Env) {
	t.Helper()
	rot, err := datadir.RotateKeys(e.DataDir, datadir.DirectorRoles)
	if err != nil {
		t.Fatal(err)
	}
	e.Restart()
	dr, err := offlinerepo.Open(e.DirectorRepo)
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	for _, r := range rot {
		pub, err := keys.ReadPublicFile(r.PublicFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := dr.Rotate(strings.TrimPrefix(r.Role, "director-"), offlinerepo.RotateOptions{Add: []crypto.PublicKey{pub}, Remove: []string{r.PreviousID}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dr.Sign("root", e.DirectorRootKey); err != nil {
		t.Fatal(err)
	}
	var have map[string]int64
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/director/root", e.Admin, nil, 200), &have)
	roots, err := dr.RootsAfter(have["director"])
	if err != nil || len(roots) != 1 {
		t.Fatalf("director roots to push: %d, %v", len(roots), err)
	}
	e.Call(e.Pool, "POST", "/api/v1/director/root", e.Admin, map[string]any{"roots": roots}, 200)
	if err := dr.AdoptPushedRoots(roots); err != nil {
		t.Fatal(err)
	}
}

// rotateLogKey: a new log key on the (stopped) server, a root naming it
// signed by the root key holders, pushed.
func rotateLogKey(t *testing.T, e *servertest.Env) {
	t.Helper()
	var vkey string
	e.RestartWith(func() {
		var err error
		if vkey, err = datadir.RotateLogKey(e.DataDir, ""); err != nil {
			t.Fatal(err)
		}
	})
	if err := e.Repo.SetLogKey(vkey); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.Sign("root", e.RootKey); err != nil {
		t.Fatal(err)
	}
	if err := e.PushStaged(nil); err != nil {
		t.Fatal(err)
	}
}

// onlineSigners opens the server's current online keys, as their thief
// does.
func onlineSigners(t *testing.T, e *servertest.Env, names ...string) []keys.Signer {
	t.Helper()
	var out []keys.Signer
	for _, n := range names {
		s, err := keys.OpenFile(filepath.Join(e.DataDir, "keys", n), nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// evilImage signs an image snapshot and timestamp with the stolen online
// keys: the honest roles pinned (plus extra ones), at the given versions.
func evilImage(t *testing.T, e *servertest.Env, snapV, tsV int64, extra ...string) (snapFile string, snap, ts []byte) {
	t.Helper()
	cur, err := metadata.Timestamp().FromBytes(e.Call(e.Pool, "GET", "/repo/timestamp.json", "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	honest, err := metadata.Snapshot().FromBytes(e.Call(e.Pool, "GET", fmt.Sprintf("/repo/%d.snapshot.json", cur.Signed.Meta["snapshot.json"].Version), "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	var roles []onlineroles.Role
	for name, mf := range honest.Signed.Meta {
		role := strings.TrimSuffix(name, ".json")
		roles = append(roles, onlineroles.Role{Name: role, Version: mf.Version, Data: e.Call(e.Pool, "GET", fmt.Sprintf("/repo/%d.%s", mf.Version, name), "", nil, 200)})
	}
	for _, x := range extra {
		roles = append(roles, onlineroles.Role{Name: x, Version: 1, Data: []byte("{}")})
	}
	root, err := metadata.Root().FromBytes(e.ImageRoot)
	if err != nil {
		t.Fatal(err)
	}
	snap, ts, err = snapshotSignUnbounded(root, roles, snapV, tsV, onlineSigners(t, e, "snapshot.key", "timestamp.key"))
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(snapV, 10) + ".snapshot.json", snap, ts
}

// serveImage makes the device's client answer the image timestamp and
// snapshot with the attacker's.
func (d *device) serveImage(snapFile string, snap, ts []byte) {
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		switch req.URL.Path {
		case "/repo/timestamp.json":
			return replaceBody(resp, ts)
		case "/repo/" + snapFile:
			resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
			return replaceBody(resp, snap)
		}
		return resp
	})
}

// A device that accepted image metadata signed by the stolen online keys
// at version 2^63-1, or a snapshot naming one role more, refuses every
// honest check-in for good. After the image repository's online keys are
// rotated, it accepts the honest server at its next check-in.
func TestImageOnlineKeyCompromiseRecovery(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		snapV, tsV  func(honest int64) int64
		extra       []string
		wantRefusal verify.Class
	}{
		{"max-version", func(int64) int64 { return math.MaxInt64 }, func(int64) int64 { return math.MaxInt64 }, nil, verify.Rollback},
		{"extra-role", func(h int64) int64 { return h + 1 }, func(h int64) int64 { return h + 1 }, []string{"role-x"}, verify.Malformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := servertest.New(t)
			d := newDevice(t, e, "gw-image-"+c.name)
			d.firstBoot()
			e.Release("1.0.0", 2, hw)
			e.Deploy(servertest.Product+"/1.0.0", hw)
			honest := d.a.HTTP

			ts, err := metadata.Timestamp().FromBytes(e.Call(e.Pool, "GET", "/repo/timestamp.json", "", nil, 200))
			if err != nil {
				t.Fatal(err)
			}
			d.serveImage(evilImage(t, e, c.snapV(ts.Signed.Meta["snapshot.json"].Version), c.tsV(ts.Signed.Version), c.extra...))
			// The attacker pinned the honest roles: the device installs
			// the genuinely signed release, and keeps the metadata.
			if out, err := d.run(); err != nil || out.Action != "installed-pending-reboot" {
				t.Fatalf("check-in through the attacker: %+v, %v", out, err)
			}
			d.powerCycle()
			if out := d.boot(); out.Action != "committed" {
				t.Fatalf("boot: %+v", out)
			}

			// The compromise ends; the device is stranded, even once the
			// server has published past the attacker's +1.
			d.a.HTTP = honest
			e.Release("2.0.0", 3, hw)
			e.Release("2.0.1", 3, hw)
			e.Deploy(servertest.Product+"/2.0.0", hw)
			_, err = d.run()
			wantClass(t, err, c.wantRefusal)

			rotateImageOnlineKeys(t, e)
			out, err := d.run()
			if err != nil || out.Action != "installed-pending-reboot" || out.Target != servertest.Product+"/2.0.0/fw.img" {
				t.Fatalf("first check-in after the rotation: %+v, %v", out, err)
			}
		})
	}
}

// A device that accepted director metadata signed by the stolen online
// director keys at version 2^63-1, or an ordinary +20 bump, refuses its
// honest director as a rollback. After the director's online keys are
// rotated, it accepts it at its next check-in.
func TestDirectorOnlineKeyCompromiseRecovery(t *testing.T) {
	for _, c := range []struct {
		name    string
		version func(role string, honest int64) int64
	}{
		{"max-version", func(string, int64) int64 { return math.MaxInt64 }},
		{"timestamp-plus-20", func(role string, v int64) int64 {
			if role == "timestamp" {
				return v + 20
			}
			return v + 1
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := servertest.New(t)
			d := newDevice(t, e, "gw-director-"+c.name)
			d.firstBoot()
			e.Release("1.0.0", 2, hw)
			honest := d.a.HTTP
			if out, err := d.run(); err != nil || out.Action != "nothing" {
				t.Fatalf("first check-in: %+v, %v", out, err)
			}
			// Bound to this device and listing nothing: the device
			// accepts and stores it.
			d.serveDirector(d.evilDirector(func(*metadata.Metadata[metadata.TargetsType]) {}, c.version))
			if out, err := d.run(); err != nil || out.Action != "nothing" {
				t.Fatalf("check-in through the attacker: %+v, %v", out, err)
			}

			d.a.HTTP = honest
			e.Deploy(servertest.Product+"/1.0.0", hw)
			_, err := d.run()
			wantClass(t, err, verify.Rollback)

			rotateDirectorOnlineKeys(t, e)
			out, err := d.run()
			if err != nil || out.Action != "installed-pending-reboot" {
				t.Fatalf("first check-in after the rotation: %+v, %v", out, err)
			}
		})
	}
}

// forkedLog is the transparency log as the thief of the log key serves
// it: the honest tree, plus one made-up entry, with genuine proofs.
type forkedLog struct {
	lg  *tlog.Log
	idx map[string]uint64 // by statement
}

func newForkedLog(t *testing.T, e *servertest.Env, targets []string) *forkedLog {
	t.Helper()
	s, err := note.NewSigner(strings.TrimSpace(string(e.Read("keys/log.key"))))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := tlog.Open(context.Background(), filepath.Join(t.TempDir(), "fork"), s, s.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	f := &forkedLog{lg: lg, idx: map[string]uint64{}}
	for _, tp := range targets {
		var p struct{ Statement string }
		json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/log/proof/"+tp, "", nil, 200), &p)
		i, _, err := lg.Append(context.Background(), []byte(p.Statement))
		if err != nil {
			t.Fatal(err)
		}
		f.idx[p.Statement] = i
	}
	made, err := logproof.MarshalStatement(&logproof.Statement{Target: servertest.Product + "/6.6.6/fw.img", Length: 1,
		SHA256: strings.Repeat("66", 32), SecurityVersion: 99, Role: servertest.Product, RoleVersion: 1,
		SignerKeyIDs: []string{strings.Repeat("ab", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := lg.Append(context.Background(), made); err != nil {
		t.Fatal(err)
	}
	return f
}

// answer serves the log's proof and consistency requests from the fork.
func (f *forkedLog) answer(t *testing.T, e *servertest.Env, req *http.Request, resp *http.Response) *http.Response {
	ctx := context.Background()
	switch {
	case strings.HasPrefix(req.URL.Path, "/api/v1/log/proof/"):
		var p struct{ Statement string }
		json.Unmarshal(e.Call(e.Pool, "GET", req.URL.Path, "", nil, 200), &p)
		idx, ok := f.idx[p.Statement]
		if !ok {
			return resp
		}
		cp, err := f.lg.Checkpoint(ctx)
		if err != nil {
			t.Error(err)
			return resp
		}
		proof, err := f.lg.Prove(ctx, idx, cp)
		if err != nil {
			t.Error(err)
			return resp
		}
		b, _ := json.Marshal(map[string]any{"statement": p.Statement, "proof": proof})
		resp.StatusCode, resp.Status = 200, "200 OK"
		return replaceBody(resp, b)
	case req.URL.Path == "/api/v1/log/consistency":
		from, _ := strconv.ParseUint(req.URL.Query().Get("from"), 10, 64)
		to, _ := strconv.ParseUint(req.URL.Query().Get("to"), 10, 64)
		hashes, err := f.lg.ConsistencyProof(ctx, from, to)
		if err != nil {
			t.Error(err)
			return resp
		}
		b, _ := json.Marshal(map[string]any{"hashes": hashes})
		resp.StatusCode, resp.Status = 200, "200 OK"
		return replaceBody(resp, b)
	}
	return resp
}

// A stolen log key: the thief serves the honest tree plus a made-up entry
// with genuine proofs. A device that is up to date does not store that
// checkpoint, so the honest log is still accepted afterwards; one that
// installs under it stores it and is bound to the fork until the log key
// is rotated: then the checkpoint of the retired key is discarded and the
// honest log accepted, at the next check-in, with nothing done on the
// device.
func TestStolenLogKeyForkRecovery(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-fork")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	honest := d.a.HTTP
	d.commit("1.0.0")

	// Up to date: the forked checkpoint is verified and not stored.
	fork := newForkedLog(t, e, []string{servertest.Product + "/1.0.0/fw.img"})
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response { return fork.answer(t, e, req, resp) })
	if out, err := d.run(); err != nil || out.Action != "up-to-date" {
		t.Fatalf("up-to-date check-in through the fork: %+v, %v", out, err)
	}
	d.a.HTTP = honest
	if out, err := d.run(); err != nil || out.Action != "up-to-date" {
		t.Fatalf("honest check-in after the fork was shown to an up-to-date device: %+v, %v", out, err)
	}

	// Installing under the fork binds the device to it.
	e.Release("2.0.0", 3, hw)
	e.Deploy(servertest.Product+"/2.0.0", hw)
	fork = newForkedLog(t, e, []string{servertest.Product + "/1.0.0/fw.img", servertest.Product + "/2.0.0/fw.img"})
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response { return fork.answer(t, e, req, resp) })
	if out, err := d.run(); err != nil || out.Action != "installed-pending-reboot" {
		t.Fatalf("install under the fork: %+v, %v", out, err)
	}
	d.powerCycle()
	d.boot()
	d.a.HTTP = honest
	e.Release("3.0.0", 4, hw)
	e.Deploy(servertest.Product+"/3.0.0", hw)
	_, err := d.run()
	wantClass(t, err, verify.LogFork)

	rotateLogKey(t, e)
	out, err := d.run()
	if err != nil || out.Action != "installed-pending-reboot" || out.Target != servertest.Product+"/3.0.0/fw.img" {
		t.Fatalf("first check-in after the log key rotation: %+v, %v", out, err)
	}
}
