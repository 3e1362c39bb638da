package agent_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

// With the server's online snapshot and timestamp keys, an attacker can
// sign metadata that go-tuf verifies and stores role by role, before a
// later check refuses the update: here a snapshot that pins an older,
// genuinely signed product role, hiding the deployed release. The device
// refuses it (missing-target), but it now trusts the attacker's version
// numbers and refuses the honest server's lower ones as a rollback. What
// docs/agent.md tells the operator to do, publish until the server's
// versions pass the attacker's, brings it back: the next check-in
// installs the deployed release.
func TestCompromisedOnlineKeysRecovery(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Release("2.0.0", 3, hw)
	e.Deploy(servertest.Product+"/2.0.0", hw)

	// The attacker's snapshot and timestamp: versions two above the
	// server's, the product role pinned at its version 1 (no 2.0.0).
	const ahead = 2
	ts, err := metadata.Timestamp().FromBytes(e.Call(e.Pool, "GET", "/repo/timestamp.json", "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	snapV := ts.Signed.Meta["snapshot.json"].Version
	snap, err := metadata.Snapshot().FromBytes(e.Call(e.Pool, "GET", fmt.Sprintf("/repo/%d.snapshot.json", snapV), "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	targetsV := snap.Signed.Meta["targets.json"].Version
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
	evilSnap, evilTS, err := onlineroles.Sign(onlineroles.Options{
		Root: root,
		Roles: []onlineroles.Role{
			{Name: "targets", Version: targetsV, Data: e.Call(e.Pool, "GET", fmt.Sprintf("/repo/%d.targets.json", targetsV), "", nil, 200)},
			{Name: servertest.Product, Version: 1, Data: e.Call(e.Pool, "GET", "/repo/1."+servertest.Product+".json", "", nil, 200)},
		},
		SnapshotVersion: snapV + ahead, TimestampVersion: ts.Signed.Version + ahead,
		SnapshotExpires: time.Now().Add(24 * time.Hour), TimestampExpires: time.Now().Add(time.Hour), Signers: online,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		switch req.URL.Path {
		case "/repo/timestamp.json":
			return replaceBody(resp, evilTS)
		case "/repo/" + strconv.FormatInt(snapV+ahead, 10) + ".snapshot.json":
			resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
			return replaceBody(resp, evilSnap)
		}
		return resp
	})
	_, err = d.run()
	wantClass(t, err, verify.MissingTarget)

	// The honest server again: its versions are below the stored ones.
	d.a.HTTP = d.client
	_, err = d.run()
	wantClass(t, err, verify.Rollback)
	d.assertUntouched()

	// Recovery: each publish raises the server's snapshot and timestamp
	// versions by one; past the attacker's, the device follows again.
	for i := range ahead + 1 {
		e.Release(fmt.Sprintf("2.0.%d", i+1), 3, hw)
	}
	out, err := d.run()
	if err != nil || out.Action != "installed-pending-reboot" || out.Target != servertest.Product+"/2.0.0/fw.img" {
		t.Fatalf("after the operator published past the attacker's versions: %+v, %v", out, err)
	}
}
