package logproof

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	sumtlog "golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "log.rampart.test/releases"

// memTree is an in-memory log built with golang.org/x/mod/sumdb/tlog, an
// implementation independent of the one logproof verifies with.
type memTree struct {
	t      *testing.T
	leaves [][]byte
	hashes []sumtlog.Hash // stored hashes, tlog layout
	signer note.Signer
	origin string
}

func newKeys(t testing.TB, origin string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func newMemTree(t *testing.T, signer note.Signer, origin string) *memTree {
	return &memTree{t: t, signer: signer, origin: origin}
}

func (m *memTree) add(leaf []byte) uint64 {
	m.t.Helper()
	n := int64(len(m.leaves))
	hs, err := sumtlog.StoredHashes(n, leaf, m.reader())
	if err != nil {
		m.t.Fatal(err)
	}
	m.hashes = append(m.hashes, hs...)
	m.leaves = append(m.leaves, leaf)
	return uint64(n)
}

func (m *memTree) reader() sumtlog.HashReader {
	return sumtlog.HashReaderFunc(func(idx []int64) ([]sumtlog.Hash, error) {
		out := make([]sumtlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(m.hashes)) {
				return nil, fmt.Errorf("no hash %d", x)
			}
			out[i] = m.hashes[x]
		}
		return out, nil
	})
}

func (m *memTree) root(size uint64) sumtlog.Hash {
	m.t.Helper()
	h, err := sumtlog.TreeHash(int64(size), m.reader())
	if err != nil {
		m.t.Fatal(err)
	}
	return h
}

func signCheckpoint(t testing.TB, s note.Signer, origin string, size uint64, root []byte) []byte {
	t.Helper()
	body := log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	raw, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (m *memTree) checkpoint(size uint64) []byte {
	r := m.root(size)
	return signCheckpoint(m.t, m.signer, m.origin, size, r[:])
}

func (m *memTree) inclusion(index, size uint64) *Proof {
	m.t.Helper()
	rp, err := sumtlog.ProveRecord(int64(size), int64(index), m.reader())
	if err != nil {
		m.t.Fatal(err)
	}
	return &Proof{Index: index, Checkpoint: m.checkpoint(size), Hashes: toBytes(rp)}
}

func (m *memTree) consistency(from, to uint64) [][]byte {
	m.t.Helper()
	tp, err := sumtlog.ProveTree(int64(to), int64(from), m.reader())
	if err != nil {
		m.t.Fatal(err)
	}
	return toBytes(tp)
}

func toBytes(hs []sumtlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = append([]byte(nil), hs[i][:]...)
	}
	return out
}

func testStatement(i int) *Statement {
	return &Statement{
		Target:          fmt.Sprintf("acme-gw/1.%d.0.img", i),
		Length:          int64(1000 + i),
		SHA256:          fmt.Sprintf("%064x", i+1),
		SecurityVersion: uint64(i / 3),
		SignerKeyIDs:    []string{fmt.Sprintf("%064x", 0xa1), fmt.Sprintf("%064x", 0xb2)},
		RoleVersion:     int64(i + 1),
		Role:            "acme-gw",
	}
}

func mustLeaf(t testing.TB, s *Statement) []byte {
	t.Helper()
	b, err := MarshalStatement(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func buildTree(t *testing.T, n int) (*memTree, note.Verifier) {
	s, v := newKeys(t, testOrigin)
	m := newMemTree(t, s, testOrigin)
	for i := 0; i < n; i++ {
		m.add(mustLeaf(t, testStatement(i)))
	}
	return m, v
}

func TestInclusionAllSizes(t *testing.T) {
	const n = 40
	m, v := buildTree(t, n)
	for size := uint64(1); size <= n; size++ {
		for i := uint64(0); i < size; i++ {
			p := m.inclusion(i, size)
			cp, err := VerifyInclusion(testOrigin, v, m.leaves[i], p)
			if err != nil {
				t.Fatalf("index %d size %d: %v", i, size, err)
			}
			if cp.Size != size || cp.Origin != testOrigin {
				t.Fatalf("checkpoint %+v", cp)
			}
		}
	}
}

func TestConsistencyAllSizes(t *testing.T) {
	const n = 40
	m, v := buildTree(t, n)
	for a := uint64(0); a <= n; a++ {
		for b := a; b <= n; b++ {
			var pr [][]byte
			if a > 0 && a < b {
				pr = m.consistency(a, b)
			}
			if err := VerifyConsistency(testOrigin, v, m.checkpoint(a), m.checkpoint(b), pr); err != nil {
				t.Fatalf("%d -> %d: %v", a, b, err)
			}
			if a < b && a > 0 {
				if err := VerifyConsistency(testOrigin, v, m.checkpoint(b), m.checkpoint(a), pr); !errors.Is(err, ErrInconsistent) {
					t.Fatalf("rollback %d -> %d: %v", b, a, err)
				}
			}
		}
	}
}

func TestInclusionAttacks(t *testing.T) {
	m, v := buildTree(t, 11)
	good := m.inclusion(5, 11)
	leaf := m.leaves[5]
	if _, err := VerifyInclusion(testOrigin, v, leaf, good); err != nil {
		t.Fatal(err)
	}
	otherSigner, otherV := newKeys(t, testOrigin)
	_ = otherV
	clone := func() *Proof {
		c := *good
		c.Hashes = toBytes(nil)
		for _, h := range good.Hashes {
			c.Hashes = append(c.Hashes, append([]byte(nil), h...))
		}
		return &c
	}
	r := m.root(11)
	cases := []struct {
		name string
		leaf []byte
		p    func() *Proof
		want error
	}{
		{"other key", leaf, func() *Proof {
			c := clone()
			c.Checkpoint = signCheckpoint(t, otherSigner, testOrigin, 11, r[:])
			return c
		}, ErrBadCheckpoint},
		{"wrong origin text", leaf, func() *Proof {
			c := clone()
			c.Checkpoint = signCheckpoint(t, m.signer, "evil.example/log", 11, r[:])
			return c
		}, ErrBadCheckpoint},
		{"unsigned text", leaf, func() *Proof {
			c := clone()
			c.Checkpoint = log.Checkpoint{Origin: testOrigin, Size: 11, Hash: r[:]}.Marshal()
			return c
		}, ErrBadCheckpoint},
		{"truncated root", leaf, func() *Proof {
			c := clone()
			c.Checkpoint = signCheckpoint(t, m.signer, testOrigin, 11, r[:31])
			return c
		}, ErrBadCheckpoint},
		{"leaf not logged", mustLeaf(t, testStatement(99)), clone, ErrNotIncluded},
		{"wrong index", leaf, func() *Proof { c := clone(); c.Index = 4; return c }, ErrNotIncluded},
		{"index beyond size", leaf, func() *Proof { c := clone(); c.Index = 11; return c }, ErrNotIncluded},
		{"flipped hash", leaf, func() *Proof { c := clone(); c.Hashes[1][7] ^= 1; return c }, ErrNotIncluded},
		{"short proof", leaf, func() *Proof { c := clone(); c.Hashes = c.Hashes[:len(c.Hashes)-1]; return c }, ErrNotIncluded},
		{"long proof", leaf, func() *Proof { c := clone(); c.Hashes = append(c.Hashes, make([]byte, 32)); return c }, ErrNotIncluded},
		{"short hash", leaf, func() *Proof { c := clone(); c.Hashes[0] = c.Hashes[0][:31]; return c }, ErrMalformed},
		{"nil", leaf, func() *Proof { return nil }, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyInclusion(testOrigin, v, tc.leaf, tc.p())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// The verifier's expected origin differs from the log's.
	if _, err := VerifyInclusion("other.example/log", v, leaf, good); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("wrong expected origin: %v", err)
	}
}

func TestConsistencyAttacks(t *testing.T) {
	m, v := buildTree(t, 12)
	// A fork: same key, same first 3 entries, then different ones.
	fork := newMemTree(t, m.signer, testOrigin)
	for i := 0; i < 12; i++ {
		s := testStatement(i)
		if i >= 3 {
			s.Target = "acme-gw/evil.img"
			s.RoleVersion = int64(100 + i)
		}
		fork.add(mustLeaf(t, s))
	}
	older := m.checkpoint(5)
	if err := VerifyConsistency(testOrigin, v, older, m.checkpoint(12), m.consistency(5, 12)); err != nil {
		t.Fatal(err)
	}
	_, otherV := newKeys(t, testOrigin)
	flipped := m.consistency(5, 12)
	flipped[0][0] ^= 0x80
	cases := []struct {
		name         string
		older, newer []byte
		proof        [][]byte
		verifier     note.Verifier
		want         error
	}{
		{"fork", older, fork.checkpoint(12), fork.consistency(5, 12), v, ErrInconsistent},
		{"fork same size", older, fork.checkpoint(5), nil, v, ErrInconsistent},
		{"rollback", m.checkpoint(12), older, nil, v, ErrInconsistent},
		{"flipped", older, m.checkpoint(12), flipped, v, ErrInconsistent},
		{"wrong proof", older, m.checkpoint(12), m.consistency(4, 12), v, ErrInconsistent},
		{"proof for equal", older, older, m.consistency(4, 5), v, ErrInconsistent},
		{"other key", older, m.checkpoint(12), m.consistency(5, 12), otherV, ErrBadCheckpoint},
		{"garbage newer", older, []byte("hello\n"), nil, v, ErrBadCheckpoint},
		{"short hash", older, m.checkpoint(12), [][]byte{make([]byte, 31)}, v, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyConsistency(testOrigin, tc.verifier, tc.older, tc.newer, tc.proof)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStatementRoundTrip(t *testing.T) {
	s := testStatement(7)
	s.Target = "acme-gw/<weird> & \u2028 ü.img"
	b := mustLeaf(t, s)
	got, err := ParseStatement(b)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	b2 := mustLeaf(t, got)
	if string(b) != string(b2) {
		t.Fatalf("not stable:\n%s\n%s", b, b2)
	}
	want := `{"type":"rampart.dev/release-statement/v1","target":"acme-gw/1.7.0.img","length":1007,` +
		`"sha256":"0000000000000000000000000000000000000000000000000000000000000008","security_version":2,` +
		`"role":"acme-gw","role_version":8,"signer_keyids":["00000000000000000000000000000000000000000000000000000000000000a1",` +
		`"00000000000000000000000000000000000000000000000000000000000000b2"]}`
	if g := string(mustLeaf(t, testStatement(7))); g != want {
		t.Fatalf("encoding changed:\n got %s\nwant %s", g, want)
	}
}

func TestStatementStrict(t *testing.T) {
	good := string(mustLeaf(t, testStatement(1)))
	bad := []string{
		good + "\n",
		" " + good,
		good + "{}",
		good[:len(good)-1] + `,"extra":1}`,
		`{"target":"x"}`,
		replaceOnce(good, `"type":"rampart.dev/release-statement/v1"`, `"type":"other"`),
		replaceOnce(good, `"length":1001`, `"length":1001.0`),
		replaceOnce(good, `"length":1001`, `"length":-1`),
		replaceOnce(good, `"target"`, `"Target"`),
		replaceOnce(good, `"target":"acme-gw/1.1.0.img"`, `"target":"acme-gw\/1.1.0.img"`),
		replaceOnce(good, `"role":"acme-gw",`, ``),
		replaceOnce(good, `"role":"acme-gw",`, `"role":"acme-gw","role":"acme-gw",`),
		replaceOnce(good, `,"role_version":2`, `,"role_version":2,"role_version":2`),
		replaceOnce(good, `"sha256":"0`, `"sha256":"A`),
		replaceOnce(good, `"signer_keyids":["00`, `"signer_keyids":["0`),
		"",
		"null",
	}
	for i, b := range bad {
		if b == good {
			t.Fatalf("case %d did not change the input", i)
		}
		if _, err := ParseStatement([]byte(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("case %d %q: %v", i, b, err)
		}
	}
	// Unsorted or duplicate signers are refused by Marshal; NormalizeSigners fixes them.
	s := testStatement(1)
	s.SignerKeyIDs = []string{s.SignerKeyIDs[1], s.SignerKeyIDs[0], s.SignerKeyIDs[1]}
	if _, err := MarshalStatement(s); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unsorted signers: %v", err)
	}
	s.SignerKeyIDs = NormalizeSigners(s.SignerKeyIDs)
	if _, err := MarshalStatement(s); err != nil {
		t.Fatal(err)
	}
	s.Target = "a\x00b"
	if _, err := MarshalStatement(s); !errors.Is(err, ErrMalformed) {
		t.Fatalf("control char: %v", err)
	}
	s.Target = "a\xffb"
	if _, err := MarshalStatement(s); !errors.Is(err, ErrMalformed) {
		t.Fatalf("invalid UTF-8: %v", err)
	}
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

func TestProofJSON(t *testing.T) {
	m, v := buildTree(t, 9)
	p := m.inclusion(3, 9)
	b, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseProof(b)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if _, err := VerifyInclusion(testOrigin, v, m.leaves[3], q); err != nil {
		t.Fatal(err)
	}
	var r Proof
	if err := r.UnmarshalJSON(b); err != nil || r.Index != 3 {
		t.Fatal(r, err)
	}
	bad := []string{
		string(b) + "x",
		string(b) + "{}",
		`{"index":1,"checkpoint":"a"}`,
		`{"index":1,"checkpoint":"a","hashes":null}`,
		`{"index":1,"checkpoint":"a","hashes":[],"x":1}`,
		`{"index":-1,"checkpoint":"a","hashes":[]}`,
		`{"index":1,"checkpoint":"","hashes":[]}`,
		`{"index":1,"checkpoint":"a","hashes":["AAAA"]}`,
		`[]`,
		// What encoding/json reads one way and another parser another:
		// a member twice, a member in another case.
		strings.Replace(string(b), `{`, `{"index":4,`, 1),
		strings.Replace(string(b), `{`, `{"Index":4,`, 1),
		strings.Replace(string(b), `{`, `{"hashes":[],`, 1),
	}
	for _, s := range bad {
		if _, err := ParseProof([]byte(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := (Proof{Index: 1, Checkpoint: []byte("x\xff"), Hashes: nil}).MarshalJSON(); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
}
