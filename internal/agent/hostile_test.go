package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

// redirect answers req with a 302 to location, as anything holding the
// server's TLS key can.
func redirect(req *http.Request, resp *http.Response, location string) *http.Response {
	if resp != nil {
		resp.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusFound, Status: "302 Found", Header: http.Header{"Location": {location}},
		Body: io.NopCloser(strings.NewReader("")), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

// hostileLocation is a redirect target whose 1.2 MiB the net/http error
// for a followed redirect quotes in full.
var hostileLocation = "https://127.0.0.1:1/" + strings.Repeat("%1b[2J", 200<<10)

// assertNotLockedOut checks what a hostile answer must never take from a
// device: a small state file, a status that reads, a boot that health-
// checks, and the active slot untouched.
func (d *device) assertNotLockedOut() {
	d.t.Helper()
	if n := d.stateSize(); n > maxSmallState {
		d.t.Fatalf("state.json is %d bytes after the hostile answer, want at most %d", n, maxSmallState)
	}
	st := d.status()
	if st.LastError != nil && (len(st.LastError.Msg) > 4<<10 || strings.Contains(st.LastError.Msg, "\x1b")) {
		d.t.Fatalf("last error of %d bytes, want a bounded, printable message", len(st.LastError.Msg))
	}
	if !d.factorySlot(bootloader.A) {
		d.t.Fatal("the active slot changed")
	}
	if s := d.powerCycle(); s != bootloader.A {
		d.t.Fatalf("after the hostile answer the device booted %s", s)
	}
	if out := d.boot(); out.Action != "booted" {
		d.t.Fatalf("boot after the hostile answer: %+v", out)
	}
}

// tufFootprint is the size of the largest file under the device's TUF
// state, for asserting that refused metadata was not kept.
func (d *device) tufFootprint() (largest int64, name string) {
	d.t.Helper()
	filepath.WalkDir(d.a.TUFDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		if fi, err := de.Info(); err == nil && fi.Size() > largest {
			largest, name = fi.Size(), p
		}
		return nil
	})
	return largest, name
}

// The 302-with-a-huge-Location lock-out, through each request of an
// install after the director: the chunk index, the payload and the log
// proof. The agent follows no redirect, so the answer is a failed
// transfer quoting nothing of the Location; status and boot keep working,
// and the next honest check-in installs.
func TestRedirectLockOutOnEveryRequest(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	for _, c := range []string{"index", "image", "log proof"} {
		t.Run(strings.ReplaceAll(c, " ", "-"), func(t *testing.T) {
			d := newDevice(t, e, "gw-redirect-"+strings.ReplaceAll(c, " ", "-"))
			d.firstBoot()
			e.Deploy(servertest.Product+"/1.0.0", hw)
			honest := d.a.HTTP
			hit := 0
			d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
				if urlClass(req.URL.Path) == c {
					hit++
					return redirect(req, resp, hostileLocation)
				}
				return resp
			})
			if _, err := d.run(); err == nil {
				t.Fatal("check-in through the hostile redirect succeeded")
			}
			if hit == 0 {
				t.Fatalf("no %s request was redirected", c)
			}
			d.assertNotLockedOut()
			d.a.HTTP = honest
			out, err := d.run()
			if err != nil || out.Action != "installed-pending-reboot" {
				t.Fatalf("honest check-in after the attack: %+v, %v", out, err)
			}
		})
	}
}

// A device talks only to its configured server over TLS: a redirect to
// another origin, or from https to plain http, is never followed, on any
// request (director and image metadata, log, index, payload, report).
func TestRedirectsAreNeverFollowed(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		http.Error(w, "not here", http.StatusTeapot)
	}))
	defer other.Close()
	for _, c := range []string{"director timestamp", "image timestamp", "image snapshot", "log proof", "index", "image"} {
		t.Run(strings.ReplaceAll(c, " ", "-"), func(t *testing.T) {
			d := newDevice(t, e, "gw-follow-"+strings.ReplaceAll(c, " ", "-"))
			d.firstBoot()
			e.Deploy(servertest.Product+"/1.0.0", hw)
			d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
				if urlClass(req.URL.Path) == c || req.URL.Path == "/api/v1/device/report" {
					return redirect(req, resp, other.URL+req.URL.Path) // https → http, another origin
				}
				return resp
			})
			_, err := d.run()
			if err == nil {
				t.Fatal("check-in succeeded although an answer was a redirect")
			}
			var ve *verify.Error
			if errorsAs(err, &ve) {
				t.Fatalf("a redirect was refused as %s; it is a failed transfer: %v", ve.Class, err)
			}
			if n := elsewhere.Load(); n != 0 {
				t.Fatalf("the device followed %d redirect(s) to %s", n, other.URL)
			}
			d.assertNotLockedOut()
		})
	}
}

func errorsAs(err error, ve **verify.Error) bool {
	for err != nil {
		if v, ok := err.(*verify.Error); ok {
			*ve = v
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				if errorsAs(x, ve) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// evilDirector signs a director repository for the device with the
// server's online director keys, as whoever stole them can: the device's
// current targets changed by mutate, at the given versions.
type evilDirector struct {
	files map[string][]byte // by the file name the device asks for
}

func (d *device) evilDirector(mutate func(t *metadata.Metadata[metadata.TargetsType]), version func(role string, honest int64) int64) *evilDirector {
	d.t.Helper()
	t := d.t
	e := d.e
	get := func(p string) []byte { return e.Call(d.client, "GET", p, "", nil, 200) }
	ts, err := metadata.Timestamp().FromBytes(get("/director/timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	snapV := ts.Signed.Meta["snapshot.json"].Version
	snap, err := metadata.Snapshot().FromBytes(get(fmt.Sprintf("/director/%d.snapshot.json", snapV)))
	if err != nil {
		t.Fatal(err)
	}
	tv := snap.Signed.Meta["targets.json"].Version
	targets, err := metadata.Targets().FromBytes(get(fmt.Sprintf("/director/%d.targets.json", tv)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := metadata.Root().FromBytes(d.currentDirectorRoot())
	if err != nil {
		t.Fatal(err)
	}
	signer := func(name string) []keys.Signer {
		s, err := keys.OpenFile(filepath.Join(e.DataDir, "keys", name), nil)
		if err != nil {
			t.Fatal(err)
		}
		return []keys.Signer{s}
	}
	targets.ClearSignatures()
	mutate(targets)
	targets.Signed.Version = version("targets", targets.Signed.Version)
	targets.Signed.Expires = time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	if err := onlineroles.SignRole(root, "targets", targets, signer("director-targets.key")); err != nil {
		t.Fatal(err)
	}
	tb, err := targets.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	sb, tsb, err := snapshotSignUnbounded(root, []onlineroles.Role{{Name: "targets", Version: targets.Signed.Version, Data: tb}},
		version("snapshot", snap.Signed.Version), version("timestamp", ts.Signed.Version),
		append(signer("director-snapshot.key"), signer("director-timestamp.key")...))
	if err != nil {
		t.Fatal(err)
	}
	return &evilDirector{files: map[string][]byte{
		"timestamp.json": tsb,
		fmt.Sprintf("%d.snapshot.json", version("snapshot", snap.Signed.Version)): sb,
		fmt.Sprintf("%d.targets.json", targets.Signed.Version):                    tb,
	}}
}

// currentDirectorRoot is the newest director root the server has.
func (d *device) currentDirectorRoot() []byte {
	var last []byte
	for v := 1; ; v++ {
		resp, err := d.client.Get(fmt.Sprintf("%s/director/%d.root.json", d.e.TS.URL, v))
		if err != nil {
			d.t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return last
		}
		last = b
	}
}

// snapshotSignUnbounded signs a snapshot and a timestamp at any version,
// as an attacker's own code would (onlineroles.Sign refuses versions past
// onlineroles.MaxVersion).
func snapshotSignUnbounded(root *metadata.Metadata[metadata.RootType], roles []onlineroles.Role, snapV, tsV int64, signers []keys.Signer) ([]byte, []byte, error) {
	s := metadata.Snapshot(time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second))
	s.Signed.Version = snapV
	s.Signed.Meta = map[string]*metadata.MetaFiles{}
	for _, r := range roles {
		s.Signed.Meta[r.Name+".json"] = onlineroles.MetaFile(r.Version, r.Data)
	}
	if err := onlineroles.SignRole(root, "snapshot", s, signers); err != nil {
		return nil, nil, err
	}
	sb, err := s.ToBytes(true)
	if err != nil {
		return nil, nil, err
	}
	ts := metadata.Timestamp(time.Now().Add(time.Hour).UTC().Truncate(time.Second))
	ts.Signed.Version = tsV
	ts.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": onlineroles.MetaFile(snapV, sb)}
	if err := onlineroles.SignRole(root, "timestamp", ts, signers); err != nil {
		return nil, nil, err
	}
	tsb, err := ts.ToBytes(true)
	return sb, tsb, err
}

// serve makes the device's client answer director requests from ev.
func (d *device) serveDirector(ev *evilDirector) {
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		if f, ok := strings.CutPrefix(req.URL.Path, "/director/"); ok {
			if b, ok := ev.files[f]; ok {
				resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
				return replaceBody(resp, b)
			}
		}
		return resp
	})
}

// With the online director key, a 1.2 MiB target name or a 1.2 MiB
// device id in the target's custom fields, both validly signed: refused
// before parsing (the director's targets is bounded by the agent), with a
// bounded message; status and boot keep working; the next honest
// check-in installs.
func TestHostileDirectorFieldsCannotLockOut(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	huge := strings.Repeat("%1b[2J", 200<<10) // 1.2 MiB
	for name, mutate := range map[string]func(*metadata.Metadata[metadata.TargetsType]){
		"target-name": func(tm *metadata.Metadata[metadata.TargetsType]) {
			for p, tf := range tm.Signed.Targets {
				delete(tm.Signed.Targets, p)
				tf.Path = p + huge
				tm.Signed.Targets[tf.Path] = tf
			}
		},
		"device-id": func(tm *metadata.Metadata[metadata.TargetsType]) {
			for _, tf := range tm.Signed.Targets {
				var c map[string]map[string]any
				json.Unmarshal(*tf.Custom, &c)
				c["rampart"]["device_id"] = huge
				b, _ := json.Marshal(c)
				raw := json.RawMessage(b)
				tf.Custom = &raw
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := newDevice(t, e, "gw-fields-"+name)
			d.firstBoot()
			e.Deploy(servertest.Product+"/1.0.0", hw)
			honest := d.a.HTTP
			ev := d.evilDirector(mutate, func(_ string, v int64) int64 { return v + 1 })
			d.serveDirector(ev)
			_, err := d.run()
			wantClass(t, err, verify.EndlessData)
			if len(err.Error()) > 4<<10 {
				t.Fatalf("the refusal is %d bytes long", len(err.Error()))
			}
			d.assertNotLockedOut()
			if n, f := d.tufFootprint(); n > 64<<10 {
				t.Fatalf("refused metadata kept on disk: %s is %d bytes", f, n)
			}
			d.a.HTTP = honest
			out, err := d.run()
			if err != nil || out.Action != "installed-pending-reboot" {
				t.Fatalf("honest check-in after the attack: %+v, %v", out, err)
			}
		})
	}
}

// The same fields, small enough to pass the size bound, are refused at
// verification with a bounded message.
func TestAbsurdDirectorFieldsRefusedAtVerification(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	d := newDevice(t, e, "gw-absurd")
	d.firstBoot()
	e.Deploy(servertest.Product+"/1.0.0", hw)
	long := strings.Repeat("x", 20<<10)
	ev := d.evilDirector(func(tm *metadata.Metadata[metadata.TargetsType]) {
		for p, tf := range tm.Signed.Targets {
			delete(tm.Signed.Targets, p)
			tf.Path = p + long
			tm.Signed.Targets[tf.Path] = tf
		}
	}, func(_ string, v int64) int64 { return v + 1 })
	d.serveDirector(ev)
	_, err := d.run()
	wantClass(t, err, verify.Malformed)
	if len(err.Error()) > 1<<10 {
		t.Fatalf("refusal of %d bytes: %.200s", len(err.Error()), err)
	}
	d.assertNotLockedOut()
}

// pattern is an endless reader of one repeated pattern: the body of a
// hostile metadata file, made as it is read (the attacker's memory is not
// the device's).
type pattern struct {
	p   []byte
	off int
	n   int64 // bytes left
}

func (r *pattern) Read(b []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > r.n {
		b = b[:r.n]
	}
	for i := range b {
		b[i] = r.p[r.off]
		r.off = (r.off + 1) % len(r.p)
	}
	r.n -= int64(len(b))
	return len(b), nil
}

// allocated runs f and returns the bytes allocated meanwhile (by the whole
// process: the agent, and the in-process server it talks to).
func allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// memorySlack is how much more than an honest check-in a check-in
// against hostile metadata may allocate.
const memorySlack = 4 << 20

// The online director snapshot key signs the length of the director's
// targets: 65 MB of targets (100,001 entries' worth) cost a device a GB
// and stayed on its disk. The agent's own bound refuses it before a
// byte is read when the signed length is too long, and cuts the body
// when none is signed; either way the check-in allocates within a few MiB
// of an honest one and nothing large is left under the TUF directory.
func TestHugeDirectorTargetsBoundedMemory(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	d := newDevice(t, e, "gw-huge-targets")
	d.firstBoot()
	honest := d.a.HTTP
	// Baseline: an honest check-in that finds nothing to do, then one
	// that finds the release deployed, measured the same way.
	baseline := allocated(func() {
		if _, err := d.run(); err != nil {
			t.Fatal(err)
		}
	})
	const size = 65 << 20
	entry := []byte(`"acme-gw/9.9.9/fw-000000.img":{"length":1,"hashes":{"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}},`)
	root, err := metadata.Root().FromBytes(d.currentDirectorRoot())
	if err != nil {
		t.Fatal(err)
	}
	var sk []keys.Signer
	for _, n := range []string{"director-snapshot.key", "director-timestamp.key"} {
		s, err := keys.OpenFile(filepath.Join(e.DataDir, "keys", n), nil)
		if err != nil {
			t.Fatal(err)
		}
		sk = append(sk, s)
	}
	for _, signedLength := range []bool{true, false} {
		t.Run(fmt.Sprintf("signed-length=%v", signedLength), func(t *testing.T) {
			const tv, sv, tsv = 1 << 30, 1 << 30, 1 << 30
			s := metadata.Snapshot(time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second))
			s.Signed.Version = sv
			mf := metadata.MetaFile(tv)
			if signedLength {
				mf.Length = size
			}
			s.Signed.Meta = map[string]*metadata.MetaFiles{"targets.json": mf}
			if err := onlineroles.SignRole(root, "snapshot", s, sk); err != nil {
				t.Fatal(err)
			}
			sb, _ := s.ToBytes(true)
			tsb, err := onlineroles.SignTimestamp(root, sb, sv, tsv, time.Now().Add(time.Hour), sk)
			if err != nil {
				t.Fatal(err)
			}
			var served atomic.Int64
			d.a.HTTP = honest
			d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
				switch req.URL.Path {
				case "/director/timestamp.json":
					return replaceBody(resp, tsb)
				case fmt.Sprintf("/director/%d.snapshot.json", sv):
					resp.StatusCode, resp.Status = 200, "200 OK"
					return replaceBody(resp, sb)
				case fmt.Sprintf("/director/%d.targets.json", tv):
					resp.Body.Close()
					resp.StatusCode, resp.Status = 200, "200 OK"
					body := &countingReader{r: &pattern{p: entry, n: size}, n: &served}
					resp.Body, resp.ContentLength = io.NopCloser(body), size
					if !signedLength {
						resp.ContentLength = -1 // no declared length either
					}
					return resp
				}
				return resp
			})
			var runErr error
			got := allocated(func() { _, runErr = d.run() })
			wantClass(t, runErr, verify.EndlessData)
			t.Logf("hostile check-in allocated %d KiB (honest %d KiB); %d bytes of the %d MB body read", got>>10, baseline>>10, served.Load(), size>>20)
			if got > baseline+memorySlack {
				t.Fatalf("hostile check-in allocated %d bytes, an honest one %d: more than %d above", got, baseline, memorySlack)
			}
			if served.Load() > 128<<10 {
				t.Fatalf("%d bytes of the hostile targets were read", served.Load())
			}
			if n, f := d.tufFootprint(); n > 64<<10 {
				t.Fatalf("refused metadata kept on disk: %s is %d bytes", f, n)
			}
			d.assertNotLockedOut()
		})
	}
	d.a.HTTP = honest
	e.Deploy(servertest.Product+"/1.0.0", hw)
	if out, err := d.run(); err != nil || out.Action != "installed-pending-reboot" {
		t.Fatalf("honest check-in after the attack: %+v, %v", out, err)
	}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// The online image snapshot key: a snapshot naming 100,000 roles cost a
// device 200-250 MB. Validly signed and pinned by a validly signed
// timestamp, it is refused before it is fetched when its signed length is
// over the agent's bound, and cut at the bound when no length is signed;
// either way within a few MiB of an honest check-in, and nothing of it is
// kept.
func TestHugeImageSnapshotBoundedMemory(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	d := newDevice(t, e, "gw-huge-snapshot")
	d.firstBoot()
	e.Deploy(servertest.Product+"/1.0.0", hw)
	honest := d.a.HTTP
	// An honest check-in that installs, so the device trusts the
	// repository's current metadata; the baseline is the next one.
	if out, err := d.run(); err != nil || out.Action != "installed-pending-reboot" {
		t.Fatalf("first check-in: %+v, %v", out, err)
	}
	d.powerCycle()
	d.boot()
	baseline := allocated(func() {
		if out, err := d.run(); err != nil || out.Action != "up-to-date" {
			t.Fatalf("baseline check-in: %+v, %v", out, err)
		}
	})

	// 100,000 roles is the attack as reported (4.6 MiB); 25,000 (1.2 MiB)
	// is as far past the bound and four times faster to sign.
	const roles = 25_000
	root, err := metadata.Root().FromBytes(e.ImageRoot)
	if err != nil {
		t.Fatal(err)
	}
	var online []keys.Signer
	for _, name := range []string{"snapshot.key", "timestamp.key"} {
		s, err := keys.OpenFile(filepath.Join(e.DataDir, "keys", name), nil)
		if err != nil {
			t.Fatal(err)
		}
		online = append(online, s)
	}
	ts, err := metadata.Timestamp().FromBytes(e.Call(e.Pool, "GET", "/repo/timestamp.json", "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	snapV, tsV := ts.Signed.Meta["snapshot.json"].Version+1, ts.Signed.Version+1
	s := metadata.Snapshot(time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second))
	s.Signed.Version = snapV
	s.Signed.Meta = make(map[string]*metadata.MetaFiles, roles+1)
	for i := range roles {
		s.Signed.Meta[fmt.Sprintf("role-%06d.json", i)] = metadata.MetaFile(1)
	}
	s.Signed.Meta["targets.json"] = metadata.MetaFile(1)
	if err := onlineroles.SignRole(root, "snapshot", s, online); err != nil {
		t.Fatal(err)
	}
	sb, err := s.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, signedLength := range []bool{true, false} {
		t.Run(fmt.Sprintf("signed-length=%v", signedLength), func(t *testing.T) {
			mf := onlineroles.MetaFile(snapV, sb)
			if !signedLength {
				mf = metadata.MetaFile(snapV) // nothing signed: the agent's bound alone
			}
			tm := metadata.Timestamp(time.Now().Add(time.Hour).UTC().Truncate(time.Second))
			tm.Signed.Version = tsV
			if !signedLength {
				tm.Signed.Version++ // past the first subtest's, which the device stored
			}
			tm.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": mf}
			if err := onlineroles.SignRole(root, "timestamp", tm, online); err != nil {
				t.Fatal(err)
			}
			tsb, _ := tm.ToBytes(true)
			var served atomic.Int64
			d.a.HTTP = honest
			d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
				switch req.URL.Path {
				case "/repo/timestamp.json":
					return replaceBody(resp, tsb)
				case fmt.Sprintf("/repo/%d.snapshot.json", snapV):
					resp.Body.Close()
					resp.StatusCode, resp.Status = 200, "200 OK"
					resp.Body, resp.ContentLength = io.NopCloser(&countingReader{r: bytes.NewReader(sb), n: &served}), -1
					return resp
				}
				return resp
			})
			var runErr error
			got := allocated(func() { _, runErr = d.run() })
			wantClass(t, runErr, verify.EndlessData)
			t.Logf("snapshot of %d roles, %d KiB; hostile check-in allocated %d KiB, honest %d KiB; %d bytes read", roles, len(sb)>>10, got>>10, baseline>>10, served.Load())
			if got > baseline+memorySlack {
				t.Fatalf("hostile check-in allocated %d bytes, an honest one %d: more than %d above", got, baseline, memorySlack)
			}
			if signedLength && served.Load() != 0 || served.Load() > 1<<20 {
				t.Fatalf("%d bytes of the snapshot were read", served.Load())
			}
			if n, f := d.tufFootprint(); n > 64<<10 {
				t.Fatalf("refused metadata kept on disk: %s is %d bytes", f, n)
			}
		})
	}
	// Status and boot work; with the honest server back, the device
	// follows it (the attacker's timestamp was one version ahead).
	if st := d.status(); st.LastError == nil || st.LastError.Class != string(verify.EndlessData) {
		t.Fatalf("status after the attack: %+v", st.LastError)
	}
	d.a.HTTP = honest
	for _, v := range []string{"1.0.1", "1.0.2", "1.0.3"} {
		e.Release(v, 2, hw)
	}
	if out, err := d.run(); err != nil || out.Action != "up-to-date" {
		t.Fatalf("honest check-in after the attack: %+v, %v", out, err)
	}
}

// A 4xx with a body over the log proof's 160 KiB bound is a failed
// transfer, not a mismatch: the status decides, the body is not read.
func TestLogProofErrorWithLargeBodyIsTransferError(t *testing.T) {
	e := servertest.New(t)
	e.Release("1.0.0", 2, hw)
	for _, code := range []int{400, 403, 429} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			d := newDevice(t, e, fmt.Sprintf("gw-proof-%d", code))
			d.firstBoot()
			e.Deploy(servertest.Product+"/1.0.0", hw)
			f := d.frontEnd()
			f.Rewrite(func(r *http.Request, body []byte) []byte {
				if urlClass(r.URL.Path) == "log proof" {
					return bytes.Repeat([]byte("x"), 200<<10)
				}
				return body
			})
			d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
				if urlClass(req.URL.Path) == "log proof" {
					resp.StatusCode, resp.Status = code, http.StatusText(code)
				}
				return resp
			})
			_, err := d.run()
			var ve *verify.Error
			if err == nil || errorsAs(err, &ve) || !errors.Is(err, agent.ErrUnavailable) {
				t.Fatalf("HTTP %d with 200 KiB on the log proof: %v; want a failed transfer, no refusal", code, err)
			}
			d.assertNotLockedOut()
		})
	}
}
