package director_test

import (
	"os"
	"testing"

	"github.com/rampartfw/rampart/internal/directormeta"
)

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBuildAgreesWithDevice holds what Build assigns to the device's
// agreement check (directormeta.Check, whose own tests are in
// internal/directormeta): the director's entry, verified as a client
// verifies it, agrees with the image repository's.
func TestBuildAgreesWithDevice(t *testing.T) {
	f := newFx(t)
	r := f.build(f.assign(tgt1, f.img1), nil, t0)
	tg, err := clientRefresh(t, f.root, nil, r, t0)
	if err != nil {
		t.Fatal(err)
	}
	dt := tg.Signed.Targets[tgt1]
	if err := directormeta.Check(dt, f.img1, tgt1, dev, hw); err != nil {
		t.Fatalf("agreement: %v", err)
	}
	// The shape internal/directormeta's tests build by hand: the image's
	// length and hashes, and a custom naming the device, its hardware and
	// the release metadata verbatim.
	c, err := directormeta.CustomOf(dt)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := directormeta.ReleaseCustom(f.img1.Custom)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != dev || c.HardwareID != hw || !directormeta.EqualJSON(c.Release, rel) {
		t.Fatalf("director custom = %+v", c)
	}
	if dt.Length != f.img1.Length || len(dt.Hashes) != len(f.img1.Hashes) {
		t.Fatalf("director entry %d bytes, %d hashes; image %d bytes, %d hashes", dt.Length, len(dt.Hashes), f.img1.Length, len(f.img1.Hashes))
	}
}
