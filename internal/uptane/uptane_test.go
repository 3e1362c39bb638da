package uptane_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/directormeta"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

func wantClass(t *testing.T, d *uptane.Decision, err error, c verify.Class) *verify.Error {
	t.Helper()
	var ve *verify.Error
	if !errors.As(err, &ve) {
		t.Fatalf("got decision %+v, error %v; want a %s refusal", d, err, c)
	}
	if ve.Class != c {
		t.Fatalf("refusal class %s (%v), want %s", ve.Class, err, c)
	}
	if d != nil {
		t.Fatalf("refusal came with a decision %+v", d)
	}
	t.Logf("refused (%s, role %s): %v", ve.Class, ve.Role, err)
	return ve
}

// check runs Check and keeps its checkpoint, as the agent does when it
// installs the release.
func check(t testing.TB, cfg uptane.Config) *uptane.Decision {
	t.Helper()
	d, err := uptane.Check(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := d.KeepCheckpoint(); err != nil {
		t.Fatalf("KeepCheckpoint: %v", err)
	}
	return d
}

func TestCheckHappyPathAndLogConsistency(t *testing.T) {
	e := newEnv(t)
	img1 := e.Release("1.0.0", 2, hwRev2)
	cert := e.Enroll("gw-1", hwRev2)
	cfg := e.device("gw-1", hwRev2, cert)
	cfg.MinSecurityVersion = 2

	// Nothing deployed yet.
	if d := check(t, cfg); !d.Nothing || d.Target != "" {
		t.Fatalf("before deploy: %+v", d)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "log", "checkpoint")); !os.IsNotExist(err) {
		t.Fatalf("checkpoint stored without a release: %v", err)
	}

	e.Deploy(product+"/1.0.0", hwRev2)
	d := check(t, cfg)
	if d.Nothing || d.Target != product+"/1.0.0/fw.img" || d.Release.Version != "1.0.0" || d.Release.SecurityVersion != 2 || d.File.Length != int64(len(img1)) {
		t.Fatalf("decision %+v", d)
	}
	sum := sha256.Sum256(img1)
	if d.File.Hashes["sha256"].String() != hex.EncodeToString(sum[:]) {
		t.Fatal("decision hash is not the image's")
	}
	// The URLs are the server's consistent-snapshot names.
	if !strings.HasPrefix(d.ImageURL, e.TS.URL+"/repo/targets/") || !strings.HasSuffix(d.IndexURL, ".fw.img.rpidx") {
		t.Fatalf("urls %s %s", d.ImageURL, d.IndexURL)
	}
	if got := e.Call(e.Pool, "GET", strings.TrimPrefix(d.ImageURL, e.TS.URL), "", nil, 200); !bytes.Equal(got, img1) {
		t.Fatal("ImageURL does not serve the image")
	}
	ix := e.Call(e.Pool, "GET", strings.TrimPrefix(d.IndexURL, e.TS.URL), "", nil, 200)
	if ixSum := sha256.Sum256(ix); hex.EncodeToString(ixSum[:]) != d.Release.Index.SHA256 {
		t.Fatal("IndexURL does not serve the signed chunk index")
	}
	stored, err := os.ReadFile(filepath.Join(cfg.StateDir, "log", "checkpoint"))
	if err != nil || !bytes.Equal(stored, d.Checkpoint) {
		t.Fatalf("stored checkpoint %q, %v; decision has %q", stored, err, d.Checkpoint)
	}
	// The trusted roots are cached.
	for _, r := range []string{"director", "image"} {
		if _, err := os.Stat(filepath.Join(cfg.StateDir, r, "root.json")); err != nil {
			t.Fatal(err)
		}
	}

	// Same log size: the stored checkpoint is reused; no consistency fetch.
	h := servertest.Intercept(&cfg.HTTPClient, nil)
	if d2 := check(t, cfg); d2.Target != d.Target || !bytes.Equal(d2.Checkpoint, stored) {
		t.Fatalf("second check %+v", d2)
	}
	if h.Requested("/api/v1/log/consistency") {
		t.Fatal("consistency fetched for an unchanged log")
	}

	// The cached roots take precedence over the shipped ones: with garbage
	// shipped roots the device still verifies.
	cfg.ImageRoot, cfg.DirectorRoot = []byte("{}"), []byte("{}")
	check(t, cfg)

	// A newer release grows the log: consistency is proven from the stored
	// checkpoint to the new one, which replaces it.
	e.Release("1.1.0", 3, hwRev2)
	e.Deploy(product+"/1.1.0", hwRev2)
	d3 := check(t, cfg)
	if d3.Target != product+"/1.1.0/fw.img" || d3.Release.SecurityVersion != 3 {
		t.Fatalf("third check %+v", d3)
	}
	if !h.Requested("/api/v1/log/consistency?from=1&to=2") {
		t.Fatalf("no consistency proof fetched: %v", h.Paths())
	}
	stored2, _ := os.ReadFile(filepath.Join(cfg.StateDir, "log", "checkpoint"))
	if bytes.Equal(stored2, stored) || !bytes.Equal(stored2, d3.Checkpoint) {
		t.Fatal("the newer checkpoint was not stored")
	}
	if ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "log")); len(ents) != 2 { // checkpoint, checkpoint.key
		t.Fatalf("leftover files in the log state dir: %v", ents)
	}

	// Rolling the device's minimum up refuses the older release the
	// director might still name (here: a fresh device with a high counter).
	cfg4 := e.device("gw-1", hwRev2, cert)
	cfg4.MinSecurityVersion = 4
	d4, err := uptane.Check(context.Background(), cfg4)
	wantClass(t, d4, err, verify.Downgrade)
	if _, err := os.Stat(filepath.Join(cfg4.StateDir, "log", "checkpoint")); !os.IsNotExist(err) {
		t.Fatal("a refused release advanced the stored checkpoint")
	}

	// A proof for another release's statement (1.0.0's, genuinely logged)
	// is not a proof for this one.
	cfg5 := e.device("gw-1", hwRev2, cert)
	servertest.Intercept(&cfg5.HTTPClient, func(r *http.Request) *http.Response {
		if strings.HasPrefix(r.URL.Path, "/api/v1/log/proof/") && strings.Contains(r.URL.Path, "1.1.0") {
			return servertest.Respond(r, 200, e.Call(e.Pool, "GET", "/api/v1/log/proof/"+product+"/1.0.0/fw.img", "", nil, 200))
		}
		return nil
	})
	d5, err := uptane.Check(context.Background(), cfg5)
	wantClass(t, d5, err, verify.NotLogged)
}

// deployed is an env with one release (security version 2) deployed to
// gw-1, and gw-2 enrolled beside it.
func deployed(t *testing.T) (*env, *devCerts) {
	e := newEnv(t)
	e.Release("1.0.0", 2, hwRev2)
	c := &devCerts{gw1: e.Enroll("gw-1", hwRev2), gw2: e.Enroll("gw-2", hwRev2)}
	e.Deploy(product+"/1.0.0", hwRev2)
	return e, c
}

func TestCheckRefusals(t *testing.T) {
	e, certs := deployed(t)
	ctx := context.Background()

	t.Run("downgrade", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		cfg.MinSecurityVersion = 3
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.Downgrade)
	})

	t.Run("frozen metadata", func(t *testing.T) {
		// Two days on, the timestamps (one day) have expired while the
		// roots (a year) have not: a server or mirror that keeps serving
		// the same metadata is noticed.
		frozen := time.Now().Add(48 * time.Hour)
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		cfg.Now = func() time.Time { return frozen }
		d, err := uptane.Check(ctx, cfg)
		if ve := wantClass(t, d, err, verify.Expired); ve.Role != "director" || !strings.Contains(err.Error(), "timestamp") {
			t.Fatalf("want the director's timestamp expired, got %v", err)
		}
		// A fresh director but a frozen image repository: the image
		// repository's timestamp is refused.
		cfg = e.device("gw-1", hwRev2, certs.gw1)
		start := time.Now()
		var mu sync.Mutex
		calls := 0
		cfg.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls > 1 { // the first call is the director's refresh
				return frozen
			}
			return start
		}
		d, err = uptane.Check(ctx, cfg)
		if ve := wantClass(t, d, err, verify.Expired); ve.Role != "image" || !strings.Contains(err.Error(), "timestamp") {
			t.Fatalf("want the image repository's timestamp expired, got %v", err)
		}
		// Far in the future even the roots have expired.
		cfg = e.device("gw-1", hwRev2, certs.gw1)
		cfg.Now = func() time.Time { return start.Add(3 * 365 * 24 * time.Hour) }
		d, err = uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.Expired)
	})

	t.Run("wrong hardware", func(t *testing.T) {
		// The device is really a rev9 board enrolled (wrongly) as rev2: the
		// director's binding names rev2, and the release lists only rev2.
		cfg := e.device("gw-1", "acme-gw-rev9", certs.gw1)
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.WrongHardware)
	})

	t.Run("director and image disagree", func(t *testing.T) {
		// A compromised director (its online keys) names the release with
		// a different length than the image repository signed.
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		forged := e.forgedDirector(t, "gw-1", func(tf *metadata.TargetFiles) { tf.Length++ })
		servertest.Intercept(&cfg.HTTPClient, serveDirector(forged))
		d, err := uptane.Check(ctx, cfg)
		if ve := wantClass(t, d, err, verify.Mismatch); !errors.Is(ve, directormeta.ErrDisagree) {
			t.Fatalf("%v does not wrap ErrDisagree", ve)
		}
	})

	t.Run("director names a target the image repository lacks", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		forged := e.forgedDirector(t, "gw-1", nil, product+"/9.9.9/fw.img")
		servertest.Intercept(&cfg.HTTPClient, serveDirector(forged))
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.MissingTarget)
	})

	t.Run("transport failures are not refusals", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
			if strings.HasPrefix(r.URL.Path, "/api/v1/log/proof/") {
				return servertest.Respond(r, 503, []byte(`{"code":"unavailable"}`))
			}
			return nil
		})
		d, err := uptane.Check(ctx, cfg)
		var ve *verify.Error
		if err == nil || d != nil || errors.As(err, &ve) {
			t.Fatalf("503 from the log: %+v, %v; want a plain error", d, err)
		}
		cfg = e.device("gw-1", hwRev2, certs.gw1)
		cfg.ServerURL = "https://127.0.0.1:1"
		if d, err := uptane.Check(ctx, cfg); err == nil || d != nil || errors.As(err, &ve) {
			t.Fatalf("unreachable server: %+v, %v; want a plain error", d, err)
		}
	})

	t.Run("stored checkpoint not signed by the log key", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		os.MkdirAll(filepath.Join(cfg.StateDir, "log"), 0o700)
		os.WriteFile(filepath.Join(cfg.StateDir, "log", "checkpoint"), e.signedCheckpoint(t, 1, make([]byte, 32), false), 0o600)
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.BadSignature)
	})

	t.Run("release not in the log", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
			if strings.HasPrefix(r.URL.Path, "/api/v1/log/proof/") {
				return servertest.Respond(r, 404, []byte(`{"code":"not-found"}`))
			}
			return nil
		})
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.NotLogged)
	})

	t.Run("tampered inclusion proof", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		// A checkpoint signed by another key.
		cp := e.signedCheckpoint(t, 1, make([]byte, 32), false)
		servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
			if strings.HasPrefix(r.URL.Path, "/api/v1/log/proof/") {
				b := e.Call(e.Pool, "GET", r.URL.Path, "", nil, 200)
				return servertest.Respond(r, 200, replaceCheckpoint(t, b, cp))
			}
			return nil
		})
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.BadSignature)
	})

	t.Run("forked log", func(t *testing.T) {
		// The device accepted a checkpoint of a log that differs from the
		// server's at the same size (split view).
		root := make([]byte, 32)
		rand.Read(root)
		for _, size := range []uint64{1, 5} { // same size, different root; larger (rollback)
			cfg := e.device("gw-1", hwRev2, certs.gw1)
			fork := e.signedCheckpoint(t, size, root, true)
			os.MkdirAll(filepath.Join(cfg.StateDir, "log"), 0o700)
			os.WriteFile(filepath.Join(cfg.StateDir, "log", "checkpoint"), fork, 0o600)
			d, err := uptane.Check(ctx, cfg)
			wantClass(t, d, err, verify.LogFork)
			if b, _ := os.ReadFile(filepath.Join(cfg.StateDir, "log", "checkpoint")); !bytes.Equal(b, fork) {
				t.Fatal("the stored checkpoint changed after a refusal")
			}
		}
	})

	t.Run("bad consistency proof", func(t *testing.T) {
		// Stored checkpoint of size 0 (empty tree) is consistent with
		// anything; use the genuine size-1 checkpoint after a second
		// release and a forged consistency proof instead.
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		check(t, cfg) // stores the size-1 checkpoint
		e.Release("1.0.1", 2, hwRev2)
		e.Deploy(product+"/1.0.1", hwRev2)
		servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
			if r.URL.Path == "/api/v1/log/consistency" {
				return servertest.Respond(r, 200, []byte(`{"hashes":["`+strings.Repeat("A", 43)+`="]}`))
			}
			return nil
		})
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.LogFork)
	})

	t.Run("director rollback", func(t *testing.T) {
		// After the device trusted the server's current director metadata
		// (version 2 since 1.0.1 was deployed above), older director
		// metadata (version 1) is refused even though it is validly signed.
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		check(t, cfg)
		servertest.Intercept(&cfg.HTTPClient, serveDirector(e.forgedDirector(t, "gw-1", nil)))
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.Rollback)
	})
}

// asDevice answers the director requests of cfg's device with what the
// real server serves another device (client), as a hostile server or a
// front end with the server's key could: validly signed metadata, bound
// to that other device. The root chain is the shared one.
func asDevice(t *testing.T, e *env, cfg *uptane.Config, client *http.Client) {
	servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
		if strings.HasPrefix(r.URL.Path, "/director/") && !strings.HasSuffix(r.URL.Path, ".root.json") {
			resp, err := client.Get(e.TS.URL + r.URL.Path)
			if err != nil {
				t.Error(err)
				return nil
			}
			return resp
		}
		return nil
	})
}

// directorFiles returns the device's trusted director metadata.
func directorFiles(t *testing.T, cfg uptane.Config) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "director"))
	for _, ent := range ents {
		if b, err := os.ReadFile(filepath.Join(cfg.StateDir, "director", ent.Name())); err == nil {
			out[ent.Name()] = string(b)
		}
	}
	return out
}

// Director metadata bound to another device is refused as wrong-device
// whether its versions are above the device's (go-tuf accepts them, the
// binding does not) or below (go-tuf calls them a rollback; the binding
// says what they are). Either way the device's trusted director metadata
// is left as it was, so the device goes on accepting its own director.
func TestAnotherDevicesDirector(t *testing.T) {
	e := newEnv(t)
	e.Release("1.0.0", 2, hwRev2)
	e.Release("1.0.1", 2, hwRev2)
	gw1, gw2, gw3 := e.Enroll("gw-1", hwRev2), e.Enroll("gw-2", hwRev2), e.Enroll("gw-3", hwRev2)
	ctx := context.Background()
	cfg := e.device("gw-1", hwRev2, gw1)
	gw2Client := e.Client(gw2)
	directorOf := func(c *http.Client) {
		t.Helper()
		resp, err := c.Get(e.TS.URL + "/director/timestamp.json")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("director of another device: %v %v", resp, err)
		}
		resp.Body.Close()
	}

	// gw-1 trusts version 1 of its director; gw-2's goes to version 3.
	e.Deploy(product+"/1.0.0", hwRev2)
	check(t, cfg)
	directorOf(gw2Client)
	e.Deploy(product+"/1.0.1", hwRev2)
	directorOf(gw2Client)
	e.Deploy(product+"/1.0.0", hwRev2)
	directorOf(gw2Client)

	t.Run("higher versions", func(t *testing.T) {
		trusted := directorFiles(t, cfg)
		c := cfg
		asDevice(t, e, &c, gw2Client)
		d, err := uptane.Check(ctx, c)
		if ve := wantClass(t, d, err, verify.WrongDevice); !errors.Is(ve, directormeta.ErrWrongDevice) {
			t.Fatalf("%v does not wrap ErrWrongDevice", ve)
		}
		if got := directorFiles(t, cfg); !reflect.DeepEqual(got, trusted) {
			t.Fatal("the refused metadata changed the trusted director metadata")
		}
		// gw-1's own director (version 2) is still accepted, though
		// below what gw-2's reached.
		check(t, cfg)
	})

	t.Run("lower versions", func(t *testing.T) {
		// gw-1 moves on to version 2 of its director; gw-3's is made
		// only now, at version 1.
		e.Deploy(product+"/1.0.1", hwRev2)
		check(t, cfg)
		trusted := directorFiles(t, cfg)
		c := cfg
		asDevice(t, e, &c, e.Client(gw3))
		d, err := uptane.Check(ctx, c)
		if ve := wantClass(t, d, err, verify.WrongDevice); !errors.Is(ve, directormeta.ErrWrongDevice) {
			t.Fatalf("%v does not wrap ErrWrongDevice", ve)
		}
		if got := directorFiles(t, cfg); !reflect.DeepEqual(got, trusted) {
			t.Fatal("the refused metadata changed the trusted director metadata")
		}
		check(t, cfg)
	})

	t.Run("own older versions stay a rollback", func(t *testing.T) {
		// Version 1 of gw-1's own director, validly signed.
		c := cfg
		servertest.Intercept(&c.HTTPClient, serveDirector(e.forgedDirector(t, "gw-1", nil)))
		d, err := uptane.Check(ctx, c)
		wantClass(t, d, err, verify.Rollback)
	})
}

func TestNeverTrustOnFirstUse(t *testing.T) {
	e, certs := deployed(t)
	other := selfSignedRoot(t)
	for _, which := range []string{"director", "image"} {
		t.Run(which, func(t *testing.T) {
			cfg := e.device("gw-1", hwRev2, certs.gw1)
			if which == "director" {
				cfg.DirectorRoot = other
			} else {
				cfg.ImageRoot = other
			}
			d, err := uptane.Check(context.Background(), cfg)
			if ve := wantClass(t, d, err, verify.BadSignature); ve.Role != which {
				t.Fatalf("refused role %q, want %s", ve.Role, which)
			}
			// The server's root was not adopted: only the shipped one is
			// cached, if any (the director's metadata is only stored once
			// it verifies).
			b, err := os.ReadFile(filepath.Join(cfg.StateDir, which, "root.json"))
			if !(err == nil && bytes.Equal(b, other) || which == "director" && errors.Is(err, fs.ErrNotExist)) {
				t.Fatalf("cached %s root changed (%v)", which, err)
			}
		})
	}
	t.Run("garbage shipped root", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		cfg.DirectorRoot = []byte(`{"signed":{"_type":"root"},"signatures":[]}`)
		d, err := uptane.Check(context.Background(), cfg)
		if err == nil || d != nil {
			t.Fatalf("accepted: %+v", d)
		}
		var ve *verify.Error
		if !errors.As(err, &ve) {
			t.Fatalf("%v is not a refusal", err)
		}
		t.Logf("refused (%s): %v", ve.Class, err)
	})
}

func TestConfigRequired(t *testing.T) {
	if _, err := uptane.Check(context.Background(), uptane.Config{ServerURL: "https://x"}); err == nil {
		t.Fatal("incomplete config accepted")
	}
}

// ---- helpers ----

type devCerts struct{ gw1, gw2 *tls.Certificate }

// selfSignedRoot is a valid root whose every role is a key nobody else has.
func selfSignedRoot(t *testing.T) []byte {
	s, _ := keys.Generate(keys.Ed25519)
	k := keys.InMemory(s)
	dir := filepath.Join(t.TempDir(), "r")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{k.Public()}, RootThreshold: 1,
		TargetsKeys: []crypto.PublicKey{k.Public()}, TargetsThreshold: 1, SnapshotKeys: []crypto.PublicKey{k.Public()}, TimestampKeys: []crypto.PublicKey{k.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sign("root", k); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "staged", "root.json"))
	return b
}

// forgedDirector builds, with the server's director keys (as an attacker
// holding them would), a director repository for device naming the
// image repository's entry for target (default: 1.0.0), altered by edit.
func (e *env) forgedDirector(t *testing.T, device string, edit func(*metadata.TargetFiles), target ...string) *director.Repo {
	t.Helper()
	path := product + "/1.0.0/fw.img"
	role, err := metadata.Targets().FromBytes(e.Call(e.Pool, "GET", "/repo/1."+product+".json", "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	tf := *role.Signed.Targets[path]
	if len(target) > 0 {
		path = target[0]
		tf.Path = path
		// The release metadata must agree with the path for Build.
		var c map[string]map[string]any
		jsonRoundTrip(t, tf.Custom, &c)
		c["rampart"]["version"] = strings.Split(path, "/")[1]
		raw := jsonRaw(t, c)
		tf.Custom = &raw
	}
	if edit != nil {
		edit(&tf)
	}
	load := func(n string) []keys.Signer {
		s, err := keys.OpenFile(filepath.Join(e.DataDir, "keys", n), nil)
		if err != nil {
			t.Fatal(err)
		}
		return []keys.Signer{s}
	}
	k := director.Keys{Targets: load("director-targets.key"), Snapshot: load("director-snapshot.key"), Timestamp: load("director-timestamp.key")}
	r, err := director.Build(e.DirectorRoot, director.Assignment{DeviceID: device, HardwareID: hwRev2, Target: path, File: &tf}, nil, k, time.Now(), director.DefaultExpiry)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// serveDirector answers director metadata requests with r's files.
func serveDirector(r *director.Repo) func(*http.Request) *http.Response {
	files := r.Files(true)
	for n, b := range r.Files(false) {
		files[n] = b
	}
	return func(req *http.Request) *http.Response {
		if name, ok := strings.CutPrefix(req.URL.Path, "/director/"); ok {
			if b, ok := files[name]; ok {
				return servertest.Respond(req, 200, b)
			}
		}
		return nil
	}
}

// signedCheckpoint makes a checkpoint for the log's origin, signed by the
// log key (genuine) or by a key of the same name (not genuine).
func (e *env) signedCheckpoint(t *testing.T, size uint64, root []byte, genuine bool) []byte {
	t.Helper()
	skey := strings.TrimSpace(string(e.Read("keys/log.key")))
	if !genuine {
		var err error
		skey, _, err = note.GenerateKey(rand.Reader, e.LogKey.Name())
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	body := log.Checkpoint{Origin: logOrigin, Size: size, Hash: root}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonRoundTrip(t *testing.T, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

func jsonRaw(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaceCheckpoint swaps the checkpoint in a log proof response.
func replaceCheckpoint(t *testing.T, resp, cp []byte) []byte {
	t.Helper()
	var top, proof map[string]json.RawMessage
	if err := json.Unmarshal(resp, &top); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(top["proof"], &proof); err != nil {
		t.Fatal(err)
	}
	proof["checkpoint"] = jsonRaw(t, string(cp))
	top["proof"] = jsonRaw(t, proof)
	return jsonRaw(t, top)
}

// go-tuf replaces root.json without fsync; after a power cut it can be
// empty. The device then uses its own durable copy of the trusted root,
// never silently the older root shipped in firmware.
func TestTornCachedRoot(t *testing.T) {
	e := newEnv(t)
	e.Release("1.0.0", 2, hwRev2)
	cert := e.Enroll("gw-1", hwRev2)
	cfg := e.device("gw-1", hwRev2, cert)
	e.Deploy(product+"/1.0.0", hwRev2)
	check(t, cfg)
	for _, r := range []string{"director", "image"} {
		if err := os.WriteFile(filepath.Join(cfg.StateDir, r, "root.json"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Were the shipped roots used, this would fail.
	cfg.ImageRoot, cfg.DirectorRoot = []byte("shipped root must not be used"), []byte("shipped root must not be used")
	for range 2 {
		if d := check(t, cfg); d.Nothing {
			t.Fatalf("decision %+v", d)
		}
	}
	got, err := uptane.TrustedImageRoot(cfg.StateDir, cfg.ImageRoot)
	if err != nil || !json.Valid(got) {
		t.Fatalf("trusted image root %q, %v", got, err)
	}
	// Without the durable copy either, the device has only the (here
	// broken) shipped root, and says so rather than trusting anything.
	for _, r := range []string{"director", "image"} {
		os.WriteFile(filepath.Join(cfg.StateDir, r, "root.json"), nil, 0o644)
		os.Remove(filepath.Join(cfg.StateDir, r, "trusted-root.json"))
	}
	if _, err := uptane.Check(context.Background(), cfg); err == nil {
		t.Fatal("check succeeded without any trusted root")
	}
}

// The log's answers are parsed strictly: a member given twice (even with
// the same value), in another case, or unknown is malformed, so that no
// other parser can read the proof the device accepted differently.
func TestLogAnswersAreStrict(t *testing.T) {
	e, certs := deployed(t)
	ctx := context.Background()
	proofPath := "/api/v1/log/proof/" + product + "/1.0.0/fw.img"
	genuine := e.Call(e.Pool, "GET", proofPath, "", nil, 200)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(genuine, &top); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"duplicate proof":  `{"statement":` + string(top["statement"]) + `,"proof":` + string(top["proof"]) + `,"proof":` + string(top["proof"]) + `}`,
		"case variant":     `{"statement":` + string(top["statement"]) + `,"Proof":` + string(top["proof"]) + `}`,
		"unknown member":   `{"statement":` + string(top["statement"]) + `,"proof":` + string(top["proof"]) + `,"note":"x"}`,
		"duplicate inside": `{"statement":` + string(top["statement"]) + `,"proof":` + strings.Replace(string(top["proof"]), `{`, `{"index":0,`, 1) + `}`,
	} {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			cfg := e.device("gw-1", hwRev2, certs.gw1)
			servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
				if r.URL.Path == proofPath {
					return servertest.Respond(r, 200, []byte(body))
				}
				return nil
			})
			d, err := uptane.Check(ctx, cfg)
			wantClass(t, d, err, verify.Malformed)
		})
	}

	t.Run("consistency", func(t *testing.T) {
		cfg := e.device("gw-1", hwRev2, certs.gw1)
		check(t, cfg) // stores the size-1 checkpoint
		e.Release("1.0.1", 2, hwRev2)
		e.Deploy(product+"/1.0.1", hwRev2)
		servertest.Intercept(&cfg.HTTPClient, func(r *http.Request) *http.Response {
			if r.URL.Path == "/api/v1/log/consistency" {
				b := e.Call(e.Pool, "GET", r.URL.RequestURI(), "", nil, 200)
				var m map[string]json.RawMessage
				json.Unmarshal(b, &m)
				return servertest.Respond(r, 200, []byte(`{"hashes":`+string(m["hashes"])+`,"hashes":`+string(m["hashes"])+`}`))
			}
			return nil
		})
		d, err := uptane.Check(ctx, cfg)
		wantClass(t, d, err, verify.Malformed)
	})
}

// A check-in of an up-to-date device reuses its connection: each
// repository's refresh asks for the next root version and gets a 404,
// whose body, left unread, would close the connection and cost the next
// request a new TLS handshake.
func TestCheckReusesConnection(t *testing.T) {
	e, certs := deployed(t)
	cfg := e.device("gw-1", hwRev2, certs.gw1)
	var dials atomic.Int32
	tr := cfg.HTTPClient.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	check(t, cfg)
	first := dials.Load()
	h := servertest.Intercept(&cfg.HTTPClient, nil)
	for range 3 {
		check(t, cfg)
	}
	roots := 0
	for _, p := range h.Paths() {
		if strings.HasSuffix(p, ".root.json") {
			roots++
		}
	}
	if roots != 6 {
		t.Fatalf("three check-ins asked for %d next roots, want 6 (one per repository each): %v", roots, h.Paths())
	}
	if n := dials.Load() - first; n != 0 {
		t.Fatalf("three check-ins opened %d new connections (the first opened %d); want none", n, first)
	}
}
