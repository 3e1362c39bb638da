package directormeta_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/directormeta"
	"github.com/rampartfw/rampart/internal/release"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	dev  = "dev-0001"
	hw   = "acme-gw-rev-b"
	tgt1 = "acme-gw/1.0.0/fw.img"
	tgt2 = "acme-gw/1.1.0/fw.img"
)

// clone deep-copies a target entry through JSON, keeping its path.
func clone(t *testing.T, tf *metadata.TargetFiles) *metadata.TargetFiles {
	t.Helper()
	b, err := json.Marshal(tf)
	if err != nil {
		t.Fatal(err)
	}
	var out metadata.TargetFiles
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	out.Path = tf.Path
	return &out
}

func withCustom(t *testing.T, tf *metadata.TargetFiles, v any) *metadata.TargetFiles {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	raw := json.RawMessage(b)
	tf.Custom = &raw
	return tf
}

// imageTarget is an image repository entry as internal/offlinerepo writes
// it, with an extra sha512 hash, round-tripped through JSON as a device
// sees it.
func imageTarget(t *testing.T, path string, hwids []string) *metadata.TargetFiles {
	t.Helper()
	img := make([]byte, 4096)
	rand.Read(img)
	tf, err := metadata.TargetFile().FromBytes(path, img, "sha256", "sha512")
	if err != nil {
		t.Fatal(err)
	}
	product, version, _, err := release.ParseTargetPath(path)
	if err != nil {
		t.Fatal(err)
	}
	m := &release.Meta{Product: product, Version: version, SecurityVersion: 3, HardwareIDs: hwids, Created: t0.Add(-time.Hour),
		Index: release.IndexRef{Length: 100, SHA256: strings.Repeat("ab", 32), ChunkSize: 65536}}
	if tf.Custom, err = m.Custom(); err != nil {
		t.Fatal(err)
	}
	return clone(t, tf)
}

// directorTarget is the director's entry for img as internal/director
// builds it for dev (TestBuildAgreesWithDevice in internal/director holds
// Build to the same shape): the image's length and hashes, and a custom
// naming the device, its hardware and a verbatim copy of the release
// metadata.
func directorTarget(t *testing.T, img *metadata.TargetFiles) *metadata.TargetFiles {
	t.Helper()
	rel, err := directormeta.ReleaseCustom(img.Custom)
	if err != nil {
		t.Fatal(err)
	}
	d := clone(t, img)
	return clone(t, withCustom(t, d, map[string]directormeta.Custom{"rampart": {DeviceID: dev, HardwareID: hw, Release: rel}}))
}

// TestCheck is the device's agreement check, one way to break it at a
// time, each refused with its own error and no other.
func TestCheck(t *testing.T) {
	img1 := imageTarget(t, tgt1, []string{hw, "acme-gw-rev-c"})
	dt := directorTarget(t, img1)
	if err := directormeta.Check(dt, img1, tgt1, dev, hw); err != nil {
		t.Fatalf("agreement: %v", err)
	}
	dirCustom, err := directormeta.CustomOf(dt)
	if err != nil {
		t.Fatal(err)
	}

	// dirMeta rebuilds the director entry with another custom.
	dirWith := func(c directormeta.Custom) *metadata.TargetFiles {
		return withCustom(t, clone(t, dt), map[string]directormeta.Custom{"rampart": c})
	}
	// imgWith rebuilds both sides with an altered release: the image's
	// custom changes and the director copies it, as a compromised or buggy
	// server could.
	imgWith := func(mut func(m *release.Meta)) (*metadata.TargetFiles, *metadata.TargetFiles) {
		m, err := release.FromTarget(tgt1, img1)
		if err != nil {
			t.Fatal(err)
		}
		mut(m)
		custom, _ := m.Custom()
		img := clone(t, img1)
		img.Custom = custom
		var wrap map[string]json.RawMessage
		json.Unmarshal(*custom, &wrap)
		c := *dirCustom
		c.Release = wrap["rampart"]
		return dirWith(c), img
	}

	flip := func(h metadata.HexBytes) metadata.HexBytes {
		h = bytes.Clone(h)
		h[0] ^= 1
		return h
	}
	cases := []struct {
		name     string
		dir, img *metadata.TargetFiles
		path     string
		dev, hw  string
		want     error
	}{
		{name: "length", dir: func() *metadata.TargetFiles { d := clone(t, dt); d.Length++; return d }(), want: directormeta.ErrDisagree},
		{name: "image length", img: func() *metadata.TargetFiles { i := clone(t, img1); i.Length--; return i }(), want: directormeta.ErrDisagree},
		{name: "sha256", dir: func() *metadata.TargetFiles {
			d := clone(t, dt)
			d.Hashes["sha256"] = flip(d.Hashes["sha256"])
			return d
		}(), want: directormeta.ErrDisagree},
		{name: "sha512", img: func() *metadata.TargetFiles {
			i := clone(t, img1)
			i.Hashes["sha512"] = flip(i.Hashes["sha512"])
			return i
		}(), want: directormeta.ErrDisagree},
		{name: "sha512 only in image", dir: func() *metadata.TargetFiles { d := clone(t, dt); delete(d.Hashes, "sha512"); return d }(), want: directormeta.ErrDisagree},
		{name: "extra algorithm in director", dir: func() *metadata.TargetFiles {
			d := clone(t, dt)
			d.Hashes["sha384"] = bytes.Repeat([]byte{1}, 48)
			return d
		}(), want: directormeta.ErrDisagree},
		{name: "other path", path: tgt2, want: directormeta.ErrDisagree},
		{name: "other device", dev: "dev-0002", want: directormeta.ErrWrongDevice},
		{name: "director names other device", dir: func() *metadata.TargetFiles { c := *dirCustom; c.DeviceID = "dev-0002"; return dirWith(c) }(), want: directormeta.ErrWrongDevice},
		{name: "other hardware", hw: "acme-gw-rev-c", want: directormeta.ErrWrongHardware},
		{name: "director names other hardware", dir: func() *metadata.TargetFiles { c := *dirCustom; c.HardwareID = "acme-gw-rev-c"; return dirWith(c) }(), want: directormeta.ErrWrongHardware},
		{name: "image release lacks our hardware", dir: nil, img: nil, want: directormeta.ErrWrongHardware},
		{name: "release copy differs", want: directormeta.ErrDisagree},
		{name: "no director custom", dir: func() *metadata.TargetFiles { d := clone(t, dt); d.Custom = nil; return d }(), want: directormeta.ErrMalformed},
		{name: "director custom without release", dir: func() *metadata.TargetFiles { c := *dirCustom; c.Release = nil; return dirWith(c) }(), want: directormeta.ErrMalformed},
		{name: "no hashes", dir: func() *metadata.TargetFiles { d := clone(t, dt); d.Hashes = nil; return d }(), want: directormeta.ErrMalformed},
		{name: "no image custom", img: func() *metadata.TargetFiles { i := clone(t, img1); i.Custom = nil; return i }(), want: directormeta.ErrMalformed},
		{name: "nil", dir: nil, want: directormeta.ErrMalformed},
	}
	// Cases that need both sides rebuilt.
	for i := range cases {
		switch cases[i].name {
		case "image release lacks our hardware":
			cases[i].dir, cases[i].img = imgWith(func(m *release.Meta) { m.HardwareIDs = []string{"acme-gw-rev-c"} })
		case "release copy differs":
			d, _ := imgWith(func(m *release.Meta) { m.SecurityVersion = 99 })
			cases[i].dir = d
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, i, p, dv, h := c.dir, c.img, c.path, c.dev, c.hw
			if d == nil && c.name != "nil" {
				d = dt
			}
			if i == nil {
				i = img1
			}
			if p == "" {
				p = tgt1
			}
			if dv == "" {
				dv = dev
			}
			if h == "" {
				h = hw
			}
			err := directormeta.Check(d, i, p, dv, h)
			if !errors.Is(err, c.want) {
				t.Fatalf("Check = %v, want %v", err, c.want)
			}
			for _, other := range []error{directormeta.ErrDisagree, directormeta.ErrWrongDevice, directormeta.ErrWrongHardware, directormeta.ErrMalformed} {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("Check = %v also matches %v", err, other)
				}
			}
		})
	}
	// Sanity: the rebuilt pair with an unchanged release still agrees.
	d, i := func() (*metadata.TargetFiles, *metadata.TargetFiles) {
		m, _ := release.FromTarget(tgt1, img1)
		m.Created = m.Created.In(time.UTC)
		custom, _ := m.Custom()
		img := clone(t, img1)
		img.Custom = custom
		var wrap map[string]json.RawMessage
		json.Unmarshal(*custom, &wrap)
		c := *dirCustom
		c.Release = wrap["rampart"]
		return dirWith(c), img
	}()
	if err := directormeta.Check(d, i, tgt1, dev, hw); err != nil {
		t.Fatalf("rebuilt agreeing pair: %v", err)
	}
}
