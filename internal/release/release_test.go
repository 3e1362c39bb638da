package release

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestValidators(t *testing.T) {
	good := map[string]func(string) error{
		"acme-gw": ValidateProduct, "a": ValidateProduct, "x9-1": ValidateProduct,
		"2.4.1": ValidateVersion, "0.0.0": ValidateVersion, "3.0.0-rc.1": ValidateVersion,
		"fw.img": ValidateFilename, "rootfs.ext4.gz": ValidateFilename, "a_b+c-d": ValidateFilename,
		"acme-gw-rev2": ValidateHardware, "board:v2.1": ValidateHardware,
	}
	for v, f := range good {
		if err := f(v); err != nil {
			t.Errorf("%q refused: %v", v, err)
		}
	}
	bad := []struct {
		v string
		f func(string) error
	}{
		{"", ValidateProduct}, {"Acme", ValidateProduct}, {"-x", ValidateProduct}, {"targets", ValidateProduct}, {"root", ValidateProduct},
		{"a/b", ValidateProduct}, {strings.Repeat("a", 64), ValidateProduct},
		{"2.4", ValidateVersion}, {"v2.4.1", ValidateVersion}, {"2.4.1+build", ValidateVersion}, {"02.4.1", ValidateVersion}, {"", ValidateVersion},
		{".hidden", ValidateFilename}, {"a/b", ValidateFilename}, {"..", ValidateFilename}, {"fw.rpidx", ValidateFilename}, {"", ValidateFilename},
		{"", ValidateHardware}, {"a b", ValidateHardware}, {"../x", ValidateHardware},
	}
	for _, b := range bad {
		if err := b.f(b.v); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", b.v, err)
		}
	}
}

func TestParseTargetPath(t *testing.T) {
	p, v, f, err := ParseTargetPath("acme-gw/2.4.1/fw.img")
	if err != nil || p != "acme-gw" || v != "2.4.1" || f != "fw.img" {
		t.Fatal(p, v, f, err)
	}
	for _, bad := range []string{"acme-gw/2.4.1", "acme-gw/2.4.1/a/b", "../2.4.1/fw", "acme-gw/2.4.1/..", "/acme-gw/2.4.1/fw"} {
		if _, _, _, err := ParseTargetPath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if CompareVersions("2.10.0", "2.9.0") <= 0 || CompareVersions("1.0.0-rc.1", "1.0.0") >= 0 {
		t.Fatal("semver order")
	}
}

func sampleMeta() *Meta {
	return &Meta{Product: "acme-gw", Version: "2.4.1", SecurityVersion: 7, HardwareIDs: []string{"hw"},
		Created: time.Unix(1e9, 0).UTC(), Index: IndexRef{Length: 120, SHA256: strings.Repeat("ab", 32), ChunkSize: 1 << 20}}
}

func TestCustomRoundTrip(t *testing.T) {
	m := sampleMeta()
	c, err := m.Custom()
	if err != nil {
		t.Fatal(err)
	}
	tf := metadata.TargetFile()
	tf.Custom = c
	got, err := FromTarget("acme-gw/2.4.1/fw.img", tf)
	if err != nil {
		t.Fatal(err)
	}
	if got.SecurityVersion != 7 || got.Index != m.Index || !got.Supports("hw") || got.Supports("other") {
		t.Fatalf("%+v", got)
	}
	// The path and the metadata must agree.
	if _, err := FromTarget("acme-gw/2.4.2/fw.img", tf); err == nil || !strings.Contains(err.Error(), "claims") {
		t.Fatalf("mismatched path accepted: %v", err)
	}
}

func TestFromTargetRefusals(t *testing.T) {
	for name, edit := range map[string]func(m *Meta){
		"no hardware":    func(m *Meta) { m.HardwareIDs = nil },
		"duplicate hw":   func(m *Meta) { m.HardwareIDs = []string{"hw", "hw"} },
		"bad index hash": func(m *Meta) { m.Index.SHA256 = "xyz" },
		"no index":       func(m *Meta) { m.Index.Length = 0 },
		"no created":     func(m *Meta) { m.Created = time.Time{} },
	} {
		m := sampleMeta()
		edit(m)
		c, _ := json.Marshal(map[string]*Meta{CustomKey: m})
		raw := json.RawMessage(c)
		tf := metadata.TargetFile()
		tf.Custom = &raw
		if _, err := FromTarget("acme-gw/2.4.1/fw.img", tf); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func FuzzFromTarget(f *testing.F) {
	c, _ := sampleMeta().Custom()
	f.Add("acme-gw/2.4.1/fw.img", []byte(*c))
	f.Add("acme-gw/2.4.1/fw.img", []byte(`{"rampart":{"product":"acme-gw"}}`))
	f.Add("a/1.0.0/b", []byte(`{"rampart":null}`))
	f.Add("x", []byte(`[]`))
	f.Fuzz(func(t *testing.T, path string, custom []byte) {
		raw := json.RawMessage(custom)
		tf := metadata.TargetFile()
		tf.Custom = &raw
		m, err := FromTarget(path, tf)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if m.Validate() != nil || len(m.HardwareIDs) == 0 {
			t.Fatal("accepted invalid metadata")
		}
	})
}
