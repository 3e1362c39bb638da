package server_test

import (
	"crypto"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/rampartfw/rampart/internal/directormeta"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
)

// directorRoot makes the offline director root naming the server's
// director online keys, as key holders would with rampart repo init.
func (e *tlsEnv) directorRoot(t *testing.T) []byte {
	pub := func(name string) []crypto.PublicKey {
		p, err := keys.ReadPublicFile(filepath.Join(e.dataDirPath, "online", name))
		if err != nil {
			t.Fatal(err)
		}
		return []crypto.PublicKey{p}
	}
	rk, _ := keys.Generate(keys.Ed25519)
	dir := filepath.Join(t.TempDir(), "director")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{rk.Public()}, RootThreshold: 1,
		TargetsKeys: pub("director-targets.pub"), TargetsThreshold: 1,
		SnapshotKeys: pub("director-snapshot.pub"), TimestampKeys: pub("director-timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sign("root", keys.InMemory(rk)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "staged", "root.json"))
	return b
}

func TestDirectorServesEachDeviceItsOwnAssignment(t *testing.T) {
	e := newTLSEnv(t)
	snap, _ := keysFromFile(t, filepath.Join(e.dataDirPath, "online", "snapshot.pub"))
	ts, _ := keysFromFile(t, filepath.Join(e.dataDirPath, "online", "timestamp.pub"))
	push := offlineRelease(t, snap, ts, "acme-gw-rev2")
	for _, b := range push.blobs {
		e.callRaw(e.pool, "PUT", "/api/v1/blobs/"+b.digest+"?length="+itoa(len(b.data)), e.admin, b.data)
	}
	e.mustCall(e.pool, "POST", "/api/v1/repo/push", e.admin, push.body, 200)
	cert1, _, _ := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 60))
	cert2, _, _ := e.enroll("gw-2", e.enrollToken("acme-gw-rev2", 60))

	// Before the director root is pushed, devices get a clear 503.
	code, b, _ := e.call(e.client(cert1), "GET", "/director/timestamp.json", "", nil)
	wantCode(t, code, b, 503, "no-director-root")
	// A director root that does not name this server's director keys.
	wrong := offlineRootNaming(t, snap, ts)
	code, b, _ = e.call(e.pool, "POST", "/api/v1/director/root", e.admin, map[string]any{"roots": [][]byte{wrong}})
	wantCode(t, code, b, 422, "online-keys")
	root := e.directorRoot(t)
	e.mustCall(e.pool, "POST", "/api/v1/director/root", e.admin, map[string]any{"roots": [][]byte{root}}, 200)
	code, b, _ = e.call(e.pool, "POST", "/api/v1/director/root", e.admin, map[string]any{"roots": [][]byte{root}})
	wantCode(t, code, b, 422, "version-not-next")
	// Without a client certificate: refused.
	code, b, _ = e.call(e.pool, "GET", "/director/timestamp.json", "", nil)
	wantCode(t, code, b, 401, "no-device-certificate")

	fetch := func(cert *tls.Certificate) *updater.Updater {
		cfg, err := config.New(e.ts.URL+"/director/", root)
		if err != nil {
			t.Fatal(err)
		}
		cfg.LocalMetadataDir = t.TempDir()
		cfg.LocalTargetsDir = t.TempDir()
		if err := cfg.SetDefaultFetcherHTTPClient(e.client(cert)); err != nil {
			t.Fatal(err)
		}
		up, err := updater.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := up.Refresh(); err != nil {
			t.Fatalf("director refresh: %v", err)
		}
		return up
	}
	// Nothing assigned yet: an empty, valid director repository.
	if n := len(fetch(cert1).GetTopLevelTargets()); n != 0 {
		t.Fatalf("%d targets before any deployment", n)
	}
	e.mustCall(e.pool, "POST", "/api/v1/deploy", e.admin, map[string]string{"target": "acme-gw/1.0.0", "hardware": "acme-gw-rev2"}, 200)
	up := fetch(cert1)
	tgts := up.GetTopLevelTargets()
	dt, ok := tgts["acme-gw/1.0.0/fw.img"]
	if !ok || len(tgts) != 1 {
		t.Fatalf("director targets %v", tgts)
	}
	// Uptane: the director's entry agrees with the image repository's, and
	// is bound to this device.
	doc := e.mustCall(e.pool, "GET", "/repo/1.acme-gw.json", "", nil, 200)
	img, err := metadata.Targets().FromBytes(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := directormeta.Check(dt, img.Signed.Targets["acme-gw/1.0.0/fw.img"], "acme-gw/1.0.0/fw.img", "gw-1", "acme-gw-rev2"); err != nil {
		t.Fatal(err)
	}
	if err := directormeta.Check(dt, img.Signed.Targets["acme-gw/1.0.0/fw.img"], "acme-gw/1.0.0/fw.img", "gw-2", "acme-gw-rev2"); err == nil {
		t.Fatal("gw-1's director target passed as gw-2's")
	}
	// gw-2 sees its own repository, bound to gw-2.
	dt2 := fetch(cert2).GetTopLevelTargets()["acme-gw/1.0.0/fw.img"]
	if err := directormeta.Check(dt2, img.Signed.Targets["acme-gw/1.0.0/fw.img"], "acme-gw/1.0.0/fw.img", "gw-2", "acme-gw-rev2"); err != nil {
		t.Fatal(err)
	}
	// Repeated check-ins serve the same bytes (cached, no new versions).
	_, t1, _ := e.call(e.client(cert1), "GET", "/director/timestamp.json", "", nil)
	_, t2, _ := e.call(e.client(cert1), "GET", "/director/timestamp.json", "", nil)
	if string(t1) != string(t2) || !strings.Contains(string(t1), `"version": 2`) {
		t.Fatalf("timestamp changed between check-ins or wrong version:\n%s\n%s", t1, t2)
	}
	var probe map[string]any
	if json.Unmarshal(t1, &probe) != nil {
		t.Fatal("timestamp is not JSON")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// offlineRootNaming makes a self-signed root whose online roles use the
// given keys.
func offlineRootNaming(t *testing.T, snap, ts crypto.PublicKey) []byte {
	rk, _ := keys.Generate(keys.Ed25519)
	dir := filepath.Join(t.TempDir(), "r")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{rk.Public()}, RootThreshold: 1,
		TargetsKeys: []crypto.PublicKey{rk.Public()}, TargetsThreshold: 1, SnapshotKeys: []crypto.PublicKey{snap}, TimestampKeys: []crypto.PublicKey{ts}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Sign("root", keys.InMemory(rk))
	b, _ := os.ReadFile(filepath.Join(dir, "staged", "root.json"))
	return b
}
