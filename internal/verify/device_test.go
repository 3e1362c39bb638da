package verify_test

import (
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/directormeta"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/verify"
)

// entries returns an image repository entry for target and the director's
// entry assigning it to device gw-1 of hardware hw-b, as the server's
// director builds it.
func entries(t *testing.T, target string, sv uint64) (dir, img *metadata.TargetFiles) {
	t.Helper()
	b := make([]byte, 1000)
	rand.Read(b)
	img, err := metadata.TargetFile().FromBytes(target, b, "sha256")
	must(t, err)
	product, version, _, err := release.ParseTargetPath(target)
	must(t, err)
	m := &release.Meta{Product: product, Version: version, SecurityVersion: sv, HardwareIDs: []string{"hw-b"}, Created: time.Unix(1e9, 0).UTC(),
		Index: release.IndexRef{Length: 120, SHA256: strings.Repeat("cd", 32), ChunkSize: 1 << 20}}
	img.Custom, err = m.Custom()
	must(t, err)
	rel, err := directormeta.ReleaseCustom(img.Custom)
	must(t, err)
	c, err := json.Marshal(map[string]directormeta.Custom{"rampart": {DeviceID: "gw-1", HardwareID: "hw-b", Release: rel}})
	must(t, err)
	raw := json.RawMessage(c)
	dir = &metadata.TargetFiles{Path: target, Length: img.Length, Hashes: img.Hashes, Custom: &raw}
	return dir, img
}

// TestAssignedClasses: what a director assigns is refused with the class
// of what is wrong with it, and accepted as a Result of role "image".
func TestAssignedClasses(t *testing.T) {
	const target = "acme-gw/1.2.0/fw.img"
	dir, img := entries(t, target, 5)
	dev := verify.Device{ID: "gw-1", HardwareID: "hw-b", MinSecurityVersion: 5}
	res, err := verify.Assigned(target, dir, img, dev)
	if err != nil {
		t.Fatal(err)
	}
	if res.Target != target || res.Role != "image" || res.File != img || res.Release.SecurityVersion != 5 {
		t.Fatalf("result %+v", res)
	}
	longer := *dir
	longer.Length++
	for _, c := range []struct {
		name  string
		dir   *metadata.TargetFiles
		dev   verify.Device
		class verify.Class
	}{
		{"another device", dir, verify.Device{ID: "gw-2", HardwareID: "hw-b"}, verify.WrongDevice},
		{"another hardware", dir, verify.Device{ID: "gw-1", HardwareID: "hw-c"}, verify.WrongHardware},
		{"disagreeing length", &longer, dev, verify.Mismatch},
		{"no custom metadata", &metadata.TargetFiles{Path: target, Length: img.Length, Hashes: img.Hashes}, dev, verify.Malformed},
		{"below the security counter", dir, verify.Device{ID: "gw-1", HardwareID: "hw-b", MinSecurityVersion: 6}, verify.Downgrade},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := verify.Assigned(target, c.dir, img, c.dev)
			refusal(t, err, c.class, "", "")
		})
	}
}

// TestDirectorTargetAndBinding: the director's targets role must be bound
// to the device and name at most one target, with a release-sized name.
func TestDirectorTargetAndBinding(t *testing.T) {
	bound := func(dev string, targets ...string) *metadata.Metadata[metadata.TargetsType] {
		tr := metadata.Targets(time.Now().Add(time.Hour))
		tr.Signed.UnrecognizedFields = map[string]any{"custom": map[string]any{"rampart": map[string]any{"device_id": dev}}}
		for _, p := range targets {
			tr.Signed.Targets[p] = &metadata.TargetFiles{Path: p}
		}
		return tr
	}
	if p, tf, err := verify.DirectorTarget(bound("gw-1")); p != "" || tf != nil || err != nil {
		t.Fatalf("nothing assigned: %q, %v, %v", p, tf, err)
	}
	if p, tf, err := verify.DirectorTarget(bound("gw-1", "acme-gw/1.0.0/fw.img")); p != "acme-gw/1.0.0/fw.img" || tf == nil || err != nil {
		t.Fatalf("one target: %q, %v, %v", p, tf, err)
	}
	_, _, err := verify.DirectorTarget(bound("gw-1", "acme-gw/1.0.0/fw.img", "acme-gw/1.1.0/fw.img"))
	refusal(t, err, verify.Malformed, "director", "installs one")
	_, _, err = verify.DirectorTarget(bound("gw-1", "acme-gw/1.0.0/"+strings.Repeat("x", 600)))
	refusal(t, err, verify.Malformed, "director", "a release name can be")

	if err := verify.DirectorBinding(bound("gw-1"), "gw-1"); err != nil {
		t.Fatal(err)
	}
	refusal(t, verify.DirectorBinding(bound("gw-2"), "gw-1"), verify.WrongDevice, "director", "")
	refusal(t, verify.DirectorBinding(metadata.Targets(time.Now()), "gw-1"), verify.Malformed, "director", "")
	refusal(t, verify.DirectorBinding(nil, "gw-1"), verify.MissingTarget, "director", "")
}
