package verify_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/verify"
)

func keyID(t *testing.T, s keys.Signer) string {
	id, err := keys.ID(s.Public())
	must(t, err)
	return id
}

func TestVerifyAccepts(t *testing.T) {
	f := newFixture(t, nil)
	res, err := verify.Target(f.root1, f.md, f.target, verify.Options{Hardware: "acme-gw-rev2", MinSecurityVersion: 7})
	must(t, err)
	want := []string{keyID(t, f.relA), keyID(t, f.relC)}
	slices.Sort(want)
	if !slices.Equal(res.Signers, want) || res.Threshold != 2 || res.Role != "acme-gw" {
		t.Fatalf("signers %v threshold %d role %s, want %v 2 acme-gw", res.Signers, res.Threshold, res.Role, want)
	}
	ix, err := verify.Index(res, f.index)
	must(t, err)
	var out bytes.Buffer
	must(t, verify.Image(ix, bytes.NewReader(f.image), &out, 2))
	if !bytes.Equal(out.Bytes(), f.image) {
		t.Fatal("verified output differs from the image")
	}
}

// refusal asserts that err is a *verify.Error of class c about role, whose
// message contains msg.
func refusal(t *testing.T, err error, c verify.Class, role, msg string) {
	t.Helper()
	var ve *verify.Error
	if !errors.As(err, &ve) {
		t.Fatalf("got %v (%T), want a %s refusal", err, err, c)
	}
	if ve.Class != c || (role != "" && ve.Role != role) || !strings.Contains(ve.Error(), msg) {
		t.Fatalf("got class %q role %q: %v\nwant class %q role %q containing %q", ve.Class, ve.Role, ve, c, role, msg)
	}
}

func TestVerifyRefusesMetadataAttacks(t *testing.T) {
	f := newFixture(t, nil)
	opt := verify.Options{Hardware: "acme-gw-rev2"}
	cases := []struct {
		name   string
		mutate func(f *fixture, md *verify.Metadata) (root []byte)
		class  verify.Class
		role   string
		msg    string
	}{
		{"flipped byte in the trusted root's signature", func(f *fixture, md *verify.Metadata) []byte {
			return []byte(strings.Replace(string(f.root1), `"sig": "`, `"sig": "00`, 1))
		}, verify.BadSignature, "root", "not enough signatures"},
		{"flipped byte in the timestamp's signature", func(f *fixture, md *verify.Metadata) []byte {
			md.Timestamp = flipSig(t, md.Timestamp)
			return nil
		}, verify.BadSignature, "timestamp", "not enough signatures"},
		{"flipped byte in the snapshot", func(f *fixture, md *verify.Metadata) []byte {
			md.Snapshot = flip(md.Snapshot, 40)
			return nil
		}, verify.Mismatch, "snapshot", "hash"},
		{"flipped byte in targets", func(f *fixture, md *verify.Metadata) []byte {
			md.Targets = flip(md.Targets, -10)
			return nil
		}, verify.Mismatch, "targets", ""},
		{"flipped byte in the product role's signature", func(f *fixture, md *verify.Metadata) []byte {
			md.Delegated["acme-gw"] = flipSig(t, md.Delegated["acme-gw"])
			return nil
		}, verify.Mismatch, "acme-gw", ""},
		{"product role below threshold (server re-signed snapshot)", func(f *fixture, md *verify.Metadata) []byte {
			md.Delegated["acme-gw"] = resignTargets(t, md.Delegated["acme-gw"], func(m *metadata.Metadata[metadata.TargetsType]) {}, f.relA)
			f.republishInto(md)
			return nil
		}, verify.BadSignature, "acme-gw", "got 1, want 2"},
		{"release edited by the server (online keys only)", func(f *fixture, md *verify.Metadata) []byte {
			md.Delegated["acme-gw"] = []byte(strings.Replace(string(md.Delegated["acme-gw"]), `"security_version": 7`, `"security_version": 70`, 1))
			f.republishInto(md)
			return nil
		}, verify.BadSignature, "acme-gw", "not enough signatures"},
		{"release signed by a key outside the role", func(f *fixture, md *verify.Metadata) []byte {
			md.Delegated["acme-gw"] = resignTargets(t, md.Delegated["acme-gw"], func(m *metadata.Metadata[metadata.TargetsType]) {}, f.relA, f.targets)
			f.republishInto(md)
			return nil
		}, verify.BadSignature, "acme-gw", "got 1, want 2"},
		{"same key signing twice", func(f *fixture, md *verify.Metadata) []byte {
			m, err := metadata.Targets().FromBytes(md.Delegated["acme-gw"])
			must(t, err)
			m.Signatures = []metadata.Signature{m.Signatures[0], m.Signatures[0]}
			b, err := m.ToBytes(true)
			must(t, err)
			md.Delegated["acme-gw"] = b
			f.republishInto(md)
			return nil
		}, verify.BadSignature, "acme-gw", "twice"},
		{"same key under two key ids", func(f *fixture, md *verify.Metadata) []byte {
			// The delegation lists rel-b's key twice, once under the
			// legacy "ecdsa" key type; rel-b signs under both ids.
			k, err := keys.TUFKey(f.relB.Public())
			must(t, err)
			alias := *k
			alias.Type = metadata.KeyTypeECDSA_SHA2_P256_COMPAT
			aliasID, err := alias.ID()
			must(t, err)
			md.Targets = resignTargets(t, md.Targets, func(m *metadata.Metadata[metadata.TargetsType]) {
				must(t, m.Signed.AddKey(&alias, "acme-gw"))
			}, f.targets)
			role, err := metadata.Targets().FromBytes(md.Delegated["acme-gw"])
			must(t, err)
			role.ClearSignatures()
			_, err = role.Sign(keys.ForTUF(f.relB))
			must(t, err)
			s2, err := role.Sign(keys.ForTUF(f.relB))
			must(t, err)
			s2.KeyID = aliasID
			role.Signatures[1] = *s2
			md.Delegated["acme-gw"], err = role.ToBytes(true)
			must(t, err)
			f.republishInto(md)
			return nil
		}, verify.BadSignature, "acme-gw", "got 1, want 2"},
		{"revoked release key", func(f *fixture, md *verify.Metadata) []byte {
			relA := keyID(t, f.relA)
			md.Targets = resignTargets(t, md.Targets, func(m *metadata.Metadata[metadata.TargetsType]) {
				must(t, m.Signed.RevokeKey(relA, "acme-gw"))
			}, f.targets)
			f.republishInto(md)
			return nil
		}, verify.BadSignature, "acme-gw", "got 1, want 2"},
		{"root rotation signed only by the new keys", func(f *fixture, md *verify.Metadata) []byte {
			r2, err := metadata.Root().FromBytes(f.root1)
			must(t, err)
			n1, n2 := mustKey(t, keys.Ed25519), mustKey(t, keys.Ed25519)
			for _, id := range slices.Clone(r2.Signed.Roles["root"].KeyIDs) {
				must(t, r2.Signed.RevokeKey(id, "root"))
			}
			for _, n := range []keys.Signer{n1, n2} {
				k, err := keys.TUFKey(n.Public())
				must(t, err)
				must(t, r2.Signed.AddKey(k, "root"))
			}
			r2.Signed.Version = 2
			r2.ClearSignatures()
			for _, n := range []keys.Signer{n1, n2} {
				_, err = r2.Sign(keys.ForTUF(n))
				must(t, err)
			}
			b, err := r2.ToBytes(true)
			must(t, err)
			md.Roots = [][]byte{b}
			return nil
		}, verify.BadSignature, "root", "not enough signatures"},
		{"root rotation skipping a version", func(f *fixture, md *verify.Metadata) []byte {
			r3, err := metadata.Root().FromBytes(f.root1)
			must(t, err)
			r3.Signed.Version = 3
			r3.ClearSignatures()
			for _, k := range []keys.Signer{f.rootA, f.rootB} {
				_, err = r3.Sign(keys.ForTUF(k))
				must(t, err)
			}
			b, err := r3.ToBytes(true)
			must(t, err)
			md.Roots = [][]byte{b}
			return nil
		}, verify.Rollback, "root", "expected 2, got 3"},
		{"mix and match: older snapshot under a newer timestamp", func(f *fixture, md *verify.Metadata) []byte {
			old := md.Snapshot
			f.republishInto(md)
			md.Snapshot = old
			return nil
		}, verify.Mismatch, "snapshot", ""},
		{"missing product role", func(f *fixture, md *verify.Metadata) []byte {
			delete(md.Delegated, "acme-gw")
			return nil
		}, verify.MissingTarget, "acme-gw", "missing"},
		{"release not in the metadata", func(f *fixture, md *verify.Metadata) []byte {
			md.Delegated["acme-gw"] = resignTargets(t, md.Delegated["acme-gw"], func(m *metadata.Metadata[metadata.TargetsType]) {
				delete(m.Signed.Targets, f.target)
			}, f.relA, f.relC)
			f.republishInto(md)
			return nil
		}, verify.MissingTarget, "", "not in the signed metadata"},
		{"malformed timestamp", func(f *fixture, md *verify.Metadata) []byte {
			md.Timestamp = []byte("{not json")
			return nil
		}, verify.Malformed, "timestamp", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			md := clone(f.md)
			root := c.mutate(f, &md)
			if root == nil {
				root = f.root1
			}
			_, err := verify.Target(root, md, f.target, opt)
			refusal(t, err, c.class, c.role, c.msg)
		})
	}
}

func TestVerifyRefusesReleaseRules(t *testing.T) {
	f := newFixture(t, nil)
	_, err := verify.Target(f.root1, f.md, f.target, verify.Options{Hardware: "acme-gw-rev3"})
	refusal(t, err, verify.WrongHardware, "acme-gw", "not acme-gw-rev3")
	_, err = verify.Target(f.root1, f.md, f.target, verify.Options{MinSecurityVersion: 8})
	refusal(t, err, verify.Downgrade, "acme-gw", "security version 7, below the required minimum 8")
	_, err = verify.Target(f.root1, f.md, "acme-gw/2.4.2/fw.img", verify.Options{})
	refusal(t, err, verify.MissingTarget, "", "not in the signed metadata")
}

func TestVerifyRefusesExpiredRoles(t *testing.T) {
	day := offlinerepo.Duration(24 * time.Hour)
	for _, role := range []string{"root", "targets", "delegated", "snapshot", "timestamp"} {
		t.Run(role, func(t *testing.T) {
			expiry := map[string]offlinerepo.Duration{"root": 100 * day, "targets": 100 * day, "delegated": 100 * day, "snapshot": 100 * day, "timestamp": 100 * day}
			expiry[role] = 10 * day
			f := newFixture(t, expiry)
			want := role
			if role == "delegated" {
				want = "acme-gw"
			}
			at := time.Now().Add(20 * 24 * time.Hour)
			_, err := verify.Target(f.root1, f.md, f.target, verify.Options{Time: at})
			refusal(t, err, verify.Expired, want, "the "+want+" role expired at")
			// The same metadata verifies before the expiry.
			_, err = verify.Target(f.root1, f.md, f.target, verify.Options{Time: time.Now().Add(5 * 24 * time.Hour)})
			must(t, err)
		})
	}
}

func TestVerifyRefusesImageAttacks(t *testing.T) {
	f := newFixture(t, nil)
	res, err := verify.Target(f.root1, f.md, f.target, verify.Options{})
	must(t, err)
	_, err = verify.Index(res, flip(f.index, 100))
	refusal(t, err, verify.Mismatch, "", "chunk index sha256")
	_, err = verify.Index(res, f.index[:len(f.index)-1])
	refusal(t, err, verify.Mismatch, "", "chunk index is")
	ix, err := verify.Index(res, f.index)
	must(t, err)

	var out bytes.Buffer
	err = verify.Image(ix, bytes.NewReader(flip(f.image, 1<<20+5)), &out, 2)
	refusal(t, err, verify.Mismatch, "", "chunk 1 at offset 1048576")
	if out.Len() != 1<<20 || !bytes.Equal(out.Bytes(), f.image[:1<<20]) {
		t.Fatalf("%d bytes passed on before the bad chunk; want exactly the first chunk", out.Len())
	}
	err = verify.Image(ix, bytes.NewReader(f.image[:len(f.image)-1]), nil, 2)
	refusal(t, err, verify.Mismatch, "", "shorter")
	err = verify.Image(ix, bytes.NewReader(append(bytes.Clone(f.image), 0)), nil, 2)
	refusal(t, err, verify.Mismatch, "", "longer")
}

func clone(md verify.Metadata) verify.Metadata {
	c := md
	c.Roots = slices.Clone(md.Roots)
	c.Delegated = map[string][]byte{}
	for k, v := range md.Delegated {
		c.Delegated[k] = v
	}
	return c
}

// flipSig changes one hex digit of the first signature in a document.
func flipSig(t *testing.T, b []byte) []byte {
	s := string(b)
	i := strings.Index(s, `"sig": "`)
	if i < 0 {
		t.Fatal("no signature")
	}
	i += len(`"sig": "`)
	c := []byte(s)
	if c[i] == '0' {
		c[i] = '1'
	} else {
		c[i] = '0'
	}
	return c
}

func (f *fixture) republishInto(md *verify.Metadata) {
	saved := f.md
	f.md = *md
	f.republish()
	*md = f.md
	f.md = saved
}
