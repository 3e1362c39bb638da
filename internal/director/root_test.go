package director_test

import (
	"errors"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/keys"
)

// resign returns f's root at another version, signed by signers.
func (f *fx) resign(version int64, signers ...keys.Signer) []byte {
	f.t.Helper()
	m, err := metadata.Root().FromBytes(f.root)
	if err != nil {
		f.t.Fatal(err)
	}
	m.Signed.Version = version
	m.Signatures = nil
	for _, s := range signers {
		if _, err := m.Sign(keys.ForTUF(s)); err != nil {
			f.t.Fatal(err)
		}
	}
	b, err := m.ToBytes(true)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func TestAcceptRoots(t *testing.T) {
	f := newFx(t)
	root, err := director.AcceptRoots(nil, [][]byte{f.root}, f.k, t0)
	if err != nil || root.Signed.Version != 1 {
		t.Fatalf("version 1: %v", err)
	}
	v2 := f.resign(2, f.rootA, f.rootB)
	if root, err := director.AcceptRoots([][]byte{f.root}, [][]byte{v2}, f.k, t0); err != nil || root.Signed.Version != 2 {
		t.Fatalf("version 2 after 1: %v", err)
	}
	stranger := key(t, keys.Ed25519)
	for name, c := range map[string]struct {
		chain, pushed [][]byte
		k             director.Keys
		now           time.Time
		code          director.RootCode
		notFirst      bool
	}{
		"not version 1 first":    {nil, [][]byte{v2}, f.k, t0, director.RootVersionNotNext, true},
		"replayed":               {[][]byte{f.root}, [][]byte{f.root}, f.k, t0, director.RootVersionNotNext, false},
		"below threshold":        {nil, [][]byte{f.resign(1, f.rootA)}, f.k, t0, director.RootBadSignature, false},
		"next below threshold":   {[][]byte{f.root}, [][]byte{f.resign(2, f.rootB)}, f.k, t0, director.RootBadSignature, false},
		"expired":                {nil, [][]byte{f.root}, f.k, t0.Add(2 * 365 * 24 * time.Hour), director.RootExpired, false},
		"not naming the keys":    {nil, [][]byte{f.root}, director.Keys{Targets: []keys.Signer{stranger}, Snapshot: f.k.Snapshot, Timestamp: f.k.Timestamp}, t0, director.RootOnlineKeys, false},
		"not naming a timestamp": {nil, [][]byte{f.root}, director.Keys{Targets: f.k.Targets, Snapshot: f.k.Snapshot, Timestamp: []keys.Signer{stranger}}, t0, director.RootOnlineKeys, false},
	} {
		_, err := director.AcceptRoots(c.chain, c.pushed, c.k, c.now)
		var re *director.RootError
		if !errors.As(err, &re) || re.Code != c.code || re.NotFirst != c.notFirst {
			t.Errorf("%s: %v, want %s (not first %v)", name, err, c.code, c.notFirst)
		}
	}
}
