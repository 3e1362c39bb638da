package tlog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
	sumtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/rampartfw/rampart/internal/logproof"
)

const testOrigin = "log.rampart.test/releases"

type keys struct {
	signer   note.Signer
	verifier note.Verifier
	skey     string // the signer key's text, for another process
}

func newKeys(t *testing.T, origin string) keys {
	t.Helper()
	skey, vkey, err := GenerateKey(origin)
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
	return keys{s, v, skey}
}

func openLog(t *testing.T, dir string, k keys) *Log {
	t.Helper()
	l, err := Open(context.Background(), dir, k.signer, testOrigin,
		WithBatching(256, 20*time.Millisecond), WithCheckpointInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func statement(i int, product string) *logproof.Statement {
	return &logproof.Statement{
		Target:          fmt.Sprintf("%s/1.%d.0.img", product, i),
		Length:          int64(4096 + i),
		SHA256:          fmt.Sprintf("%064x", 0x1000+i),
		SecurityVersion: uint64(i / 10),
		SignerKeyIDs:    []string{strings.Repeat("a1", 32), strings.Repeat("b2", 32)},
		RoleVersion:     int64(i + 1),
		Role:            product,
	}
}

func leafOf(t *testing.T, s *logproof.Statement) []byte {
	t.Helper()
	b, err := logproof.MarshalStatement(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type appended struct {
	leaf  []byte
	index uint64
	cp    []byte
}

// appendAll appends leaves concurrently (so they share batches) and returns
// the results by index.
func appendAll(t *testing.T, l *Log, leaves [][]byte) map[uint64]appended {
	t.Helper()
	ctx := ctxT(t)
	var mu sync.Mutex
	out := map[uint64]appended{}
	var wg sync.WaitGroup
	errs := make(chan error, len(leaves))
	for _, leaf := range leaves {
		wg.Go(func() {
			idx, cp, err := l.Append(ctx, leaf)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if _, dup := out[idx]; dup {
				errs <- fmt.Errorf("index %d assigned twice", idx)
			}
			out[idx] = appended{leaf, idx, cp}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func mustCheckpointSize(t *testing.T, k keys, raw []byte) uint64 {
	t.Helper()
	cp, err := logproof.OpenCheckpoint(testOrigin, k.verifier, raw)
	if err != nil {
		t.Fatal(err)
	}
	return cp.Size
}

func TestAppendProveVerify(t *testing.T) {
	k := newKeys(t, testOrigin)
	dir := t.TempDir()
	l := openLog(t, dir, k)
	ctx := ctxT(t)

	// Sequential appends give distinct checkpoints; then a concurrent
	// batch that crosses the first 256-entry tile boundary.
	var all []appended
	for i := 0; i < 5; i++ {
		leaf := leafOf(t, statement(i, "acme-gw"))
		idx, cp, err := l.Append(ctx, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(i) {
			t.Fatalf("sequential append %d got index %d", i, idx)
		}
		all = append(all, appended{leaf, idx, cp})
	}
	var leaves [][]byte
	for i := 5; i < 300; i++ {
		leaves = append(leaves, leafOf(t, statement(i, "acme-gw")))
	}
	got := appendAll(t, l, leaves)
	if len(got) != len(leaves) {
		t.Fatalf("%d results for %d appends", len(got), len(leaves))
	}
	for i := uint64(5); i < 300; i++ {
		a, ok := got[i]
		if !ok {
			t.Fatalf("no entry at index %d", i)
		}
		all = append(all, a)
	}

	for _, a := range all {
		size := mustCheckpointSize(t, k, a.cp)
		if size <= a.index {
			t.Fatalf("checkpoint of size %d does not cover index %d", size, a.index)
		}
		hs, err := l.InclusionProof(ctx, a.index, size)
		if err != nil {
			t.Fatal(err)
		}
		p := &logproof.Proof{Index: a.index, Checkpoint: a.cp, Hashes: hs}
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, a.leaf, p); err != nil {
			t.Fatalf("index %d size %d: %v", a.index, size, err)
		}
		// The proof survives its JSON encoding.
		b, err := p.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		q, err := logproof.ParseProof(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, a.leaf, q); err != nil {
			t.Fatal(err)
		}
		e, err := l.Entry(ctx, a.index)
		if err != nil || string(e) != string(a.leaf) {
			t.Fatalf("Entry(%d) = %q, %v", a.index, e, err)
		}
	}

	// Consistency between every pair of distinct checkpoint sizes seen,
	// and from the latest to itself.
	cps := map[uint64][]byte{}
	for _, a := range all {
		cps[mustCheckpointSize(t, k, a.cp)] = a.cp
	}
	latest, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cps[mustCheckpointSize(t, k, latest)] = latest
	if len(cps) < 3 {
		t.Fatalf("only %d distinct checkpoints", len(cps))
	}
	for a, older := range cps {
		for b, newer := range cps {
			if a > b {
				continue
			}
			pr, err := l.ConsistencyProof(ctx, a, b)
			if err != nil {
				t.Fatal(err)
			}
			if err := logproof.VerifyConsistency(testOrigin, k.verifier, older, newer, pr); err != nil {
				t.Fatalf("consistency %d -> %d: %v", a, b, err)
			}
		}
	}

	// AppendStatement returns a ready proof.
	s := statement(1000, "acme-cam")
	p, leaf, err := l.AppendStatement(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if p.Index != 300 {
		t.Fatalf("AppendStatement index %d", p.Index)
	}
	if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, leaf, p); err != nil {
		t.Fatal(err)
	}

	// Range checks.
	size, err := l.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.InclusionProof(ctx, 0, size+1); !errors.Is(err, ErrRange) {
		t.Fatalf("beyond published size: %v", err)
	}
	if _, err := l.InclusionProof(ctx, size, size); !errors.Is(err, ErrRange) {
		t.Fatalf("index == size: %v", err)
	}
	if _, err := l.ConsistencyProof(ctx, 5, 4); !errors.Is(err, ErrRange) {
		t.Fatalf("from > to: %v", err)
	}
	if _, _, err := l.Append(ctx, nil); err == nil {
		t.Fatal("empty entry accepted")
	}
}

// tileReader reads tessera's tile tree with golang.org/x/mod/sumdb/tlog's
// tile model: the same tlog-tiles layout minus the height path segment.
type tileReader struct {
	dir string
}

func (r tileReader) Height() int { return layout.TileHeight }

func (r tileReader) ReadTiles(tiles []sumtlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		p := strings.Replace(tile.Path(), fmt.Sprintf("tile/%d/", layout.TileHeight), "tile/", 1)
		b, err := os.ReadFile(filepath.Join(r.dir, filepath.FromSlash(p)))
		if errors.Is(err, os.ErrNotExist) && tile.W < 1<<tile.H {
			// The partial tile may be gone once the full one exists.
			full := tile
			full.W = 1 << tile.H
			fp := strings.Replace(full.Path(), fmt.Sprintf("tile/%d/", layout.TileHeight), "tile/", 1)
			b, err = os.ReadFile(filepath.Join(r.dir, filepath.FromSlash(fp)))
			if err == nil {
				b = b[:tile.W*sumtlog.HashSize]
			}
		}
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (r tileReader) SaveTiles([]sumtlog.Tile, [][]byte) {}

// TestCrossCheckSumdbTlog proves entries with an independent Merkle
// implementation (x/mod/sumdb/tlog) reading tessera's tiles, and checks
// its proofs with logproof and tessera's proofs with sumdb/tlog.
func TestCrossCheckSumdbTlog(t *testing.T) {
	k := newKeys(t, testOrigin)
	dir := t.TempDir()
	l := openLog(t, dir, k)
	ctx := ctxT(t)
	var leaves [][]byte
	for i := 0; i < 270; i++ {
		leaves = append(leaves, leafOf(t, statement(i, "acme-gw")))
	}
	got := appendAll(t, l, leaves)
	cpRaw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := logproof.OpenCheckpoint(testOrigin, k.verifier, cpRaw)
	if err != nil {
		t.Fatal(err)
	}
	tree := sumtlog.Tree{N: int64(cp.Size), Hash: sumtlog.Hash(cp.Hash)}
	hr := sumtlog.TileHashReader(tree, tileReader{dir})
	for idx := uint64(0); idx < cp.Size; idx++ {
		leaf := got[idx].leaf
		rp, err := sumtlog.ProveRecord(tree.N, int64(idx), hr)
		if err != nil {
			t.Fatalf("sumdb ProveRecord %d: %v", idx, err)
		}
		if err := sumtlog.CheckRecord(rp, tree.N, tree.Hash, int64(idx), sumtlog.RecordHash(leaf)); err != nil {
			t.Fatalf("sumdb CheckRecord %d: %v", idx, err)
		}
		// sumdb's proof verifies with logproof ...
		p := &logproof.Proof{Index: idx, Checkpoint: cpRaw}
		for _, h := range rp {
			p.Hashes = append(p.Hashes, h[:])
		}
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, leaf, p); err != nil {
			t.Fatalf("logproof on sumdb proof %d: %v", idx, err)
		}
		// ... and tessera's proof verifies with sumdb.
		hs, err := l.InclusionProof(ctx, idx, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		var rp2 sumtlog.RecordProof
		for _, h := range hs {
			rp2 = append(rp2, sumtlog.Hash(h))
		}
		if err := sumtlog.CheckRecord(rp2, tree.N, tree.Hash, int64(idx), sumtlog.RecordHash(leaf)); err != nil {
			t.Fatalf("sumdb CheckRecord on tessera proof %d: %v", idx, err)
		}
	}
	// Consistency: sumdb's tree proof from several older sizes.
	for _, old := range []int64{1, 7, 200, 256, 257} {
		oldHash, err := sumtlog.TreeHash(old, hr)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := sumtlog.ProveTree(tree.N, old, hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := sumtlog.CheckTree(tp, tree.N, tree.Hash, old, oldHash); err != nil {
			t.Fatalf("sumdb CheckTree %d: %v", old, err)
		}
		hs, err := l.ConsistencyProof(ctx, uint64(old), cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		var tp2 sumtlog.TreeProof
		for _, h := range hs {
			tp2 = append(tp2, sumtlog.Hash(h))
		}
		if err := sumtlog.CheckTree(tp2, tree.N, tree.Hash, old, oldHash); err != nil {
			t.Fatalf("sumdb CheckTree on tessera proof %d: %v", old, err)
		}
	}
}

func signCheckpoint(t *testing.T, s note.Signer, body string) []byte {
	t.Helper()
	raw, err := note.Sign(&note.Note{Text: body}, s)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func noteText(t *testing.T, raw []byte) string {
	t.Helper()
	body, _, ok := strings.Cut(string(raw), "\n\n")
	if !ok {
		t.Fatalf("not a note: %q", raw)
	}
	return body + "\n"
}

func TestAttacks(t *testing.T) {
	k := newKeys(t, testOrigin)
	ctx := ctxT(t)
	l := openLog(t, t.TempDir(), k)
	var real []appended
	for i := 0; i < 8; i++ {
		leaf := leafOf(t, statement(i, "acme-gw"))
		idx, cp, err := l.Append(ctx, leaf)
		if err != nil {
			t.Fatal(err)
		}
		real = append(real, appended{leaf, idx, cp})
	}
	cp8, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mustCheckpointSize(t, k, cp8) != 8 {
		t.Fatalf("size %d", mustCheckpointSize(t, k, cp8))
	}
	cp5 := real[4].cp
	if mustCheckpointSize(t, k, cp5) != 5 {
		t.Fatalf("checkpoint after 5th append has size %d", mustCheckpointSize(t, k, cp5))
	}
	prove := func(idx uint64, cp []byte) *logproof.Proof {
		t.Helper()
		hs, err := l.InclusionProof(ctx, idx, mustCheckpointSize(t, k, cp))
		if err != nil {
			t.Fatal(err)
		}
		return &logproof.Proof{Index: idx, Checkpoint: cp, Hashes: hs}
	}
	good := prove(3, cp8)
	if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, real[3].leaf, good); err != nil {
		t.Fatal(err)
	}

	t.Run("checkpoint signed by another key", func(t *testing.T) {
		other := newKeys(t, testOrigin)
		p := *good
		p.Checkpoint = signCheckpoint(t, other.signer, noteText(t, cp8))
		_, err := logproof.VerifyInclusion(testOrigin, k.verifier, real[3].leaf, &p)
		if !errors.Is(err, logproof.ErrBadCheckpoint) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong origin", func(t *testing.T) {
		// The verifier expects another log's origin ...
		if _, err := logproof.VerifyInclusion("other.example/log", k.verifier, real[3].leaf, good); !errors.Is(err, logproof.ErrBadCheckpoint) {
			t.Fatalf("expected origin mismatch: %v", err)
		}
		// ... or the log key signed a checkpoint naming another origin.
		p := *good
		p.Checkpoint = signCheckpoint(t, k.signer, strings.Replace(noteText(t, cp8), testOrigin, "other.example/log", 1))
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, real[3].leaf, &p); !errors.Is(err, logproof.ErrBadCheckpoint) {
			t.Fatalf("checkpoint origin mismatch: %v", err)
		}
	})
	t.Run("leaf not in the log", func(t *testing.T) {
		never := leafOf(t, statement(3, "evil-gw"))
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, never, good); !errors.Is(err, logproof.ErrNotIncluded) {
			t.Fatalf("got %v", err)
		}
		// A logged leaf with the proof of another index.
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, real[2].leaf, good); !errors.Is(err, logproof.ErrNotIncluded) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("flipped proof hash", func(t *testing.T) {
		for i := range good.Hashes {
			p := *good
			p.Hashes = append([][]byte(nil), good.Hashes...)
			h := append([]byte(nil), p.Hashes[i]...)
			h[31] ^= 1
			p.Hashes[i] = h
			if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, real[3].leaf, &p); !errors.Is(err, logproof.ErrNotIncluded) {
				t.Fatalf("hash %d: got %v", i, err)
			}
		}
	})
	t.Run("forked log", func(t *testing.T) {
		// A second log with the same key: the first 3 entries agree, then
		// the attacker's release replaces the genuine 4th.
		fork := openLog(t, t.TempDir(), k)
		for i := 0; i < 8; i++ {
			s := statement(i, "acme-gw")
			if i == 3 {
				s = statement(3, "evil-gw")
			}
			if _, _, err := fork.Append(ctx, leafOf(t, s)); err != nil {
				t.Fatal(err)
			}
		}
		fcp8, err := fork.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pr, err := fork.ConsistencyProof(ctx, 5, 8)
		if err != nil {
			t.Fatal(err)
		}
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp5, fcp8, pr); !errors.Is(err, logproof.ErrInconsistent) {
			t.Fatalf("fork 5 -> 8: %v", err)
		}
		// Same size, different root.
		pr0, _ := fork.ConsistencyProof(ctx, 8, 8)
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp8, fcp8, pr0); !errors.Is(err, logproof.ErrInconsistent) {
			t.Fatalf("fork 8 = 8: %v", err)
		}
		// The forked entry's inclusion proof is genuine for the fork, so a
		// device with no prior checkpoint would accept it: consistency is
		// what protects devices.
		fp := &logproof.Proof{Index: 3, Checkpoint: fcp8}
		if fp.Hashes, err = fork.InclusionProof(ctx, 3, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, leafOf(t, statement(3, "evil-gw")), fp); err != nil {
			t.Fatalf("fork inclusion: %v", err)
		}
	})
	t.Run("rollback of the log view", func(t *testing.T) {
		pr, err := l.ConsistencyProof(ctx, 5, 8)
		if err != nil {
			t.Fatal(err)
		}
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp8, cp5, pr); !errors.Is(err, logproof.ErrInconsistent) {
			t.Fatalf("got %v", err)
		}
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp8, cp5, nil); !errors.Is(err, logproof.ErrInconsistent) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("consistency proof tampered", func(t *testing.T) {
		pr, err := l.ConsistencyProof(ctx, 5, 8)
		if err != nil {
			t.Fatal(err)
		}
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp5, cp8, pr); err != nil {
			t.Fatal(err)
		}
		pr[0] = append([]byte(nil), pr[0]...)
		pr[0][0] ^= 1
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp5, cp8, pr); !errors.Is(err, logproof.ErrInconsistent) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("newer signed by another key", func(t *testing.T) {
		other := newKeys(t, testOrigin)
		pr, err := l.ConsistencyProof(ctx, 5, 8)
		if err != nil {
			t.Fatal(err)
		}
		forged := signCheckpoint(t, other.signer, noteText(t, cp8))
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp5, forged, pr); !errors.Is(err, logproof.ErrBadCheckpoint) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestReopen(t *testing.T) {
	k := newKeys(t, testOrigin)
	ctx := ctxT(t)
	dir := t.TempDir()
	l, err := Open(ctx, dir, k.signer, testOrigin, WithBatching(16, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, dir, k.signer, testOrigin); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second open: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := l.Append(ctx, leafOf(t, statement(i, "acme-gw"))); err != nil {
			t.Fatal(err)
		}
	}
	cp3, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Append(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	// Another origin's key must not take over the directory.
	other := newKeys(t, "other.example/log")
	if _, err := Open(ctx, dir, other.signer, "other.example/log"); err == nil {
		t.Fatal("opened a log under another origin")
	}

	// Nor another key under the same origin.
	sameName := newKeys(t, testOrigin)
	if _, err := Open(ctx, dir, sameName.signer, testOrigin); err == nil {
		t.Fatal("opened the log with another key")
	}

	l2 := openLog(t, dir, k)
	for i := 3; i < 6; i++ {
		idx, cp, err := l2.Append(ctx, leafOf(t, statement(i, "acme-gw")))
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(i) {
			t.Fatalf("after reopen: index %d, want %d", idx, i)
		}
		p, err := l2.Prove(ctx, idx, cp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, leafOf(t, statement(i, "acme-gw")), p); err != nil {
			t.Fatal(err)
		}
	}
	cp6, err := l2.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := l2.ConsistencyProof(ctx, 3, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := logproof.VerifyConsistency(testOrigin, k.verifier, cp3, cp6, pr); err != nil {
		t.Fatal(err)
	}
	// Entries written before the reopen are still provable.
	hs, err := l2.InclusionProof(ctx, 1, 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, leafOf(t, statement(1, "acme-gw")),
		&logproof.Proof{Index: 1, Checkpoint: cp6, Hashes: hs}); err != nil {
		t.Fatal(err)
	}
}

func TestHandler(t *testing.T) {
	k := newKeys(t, testOrigin)
	ctx := ctxT(t)
	dir := t.TempDir()
	l := openLog(t, dir, k)
	var leaves [][]byte
	for i := 0; i < 260; i++ {
		leaves = append(leaves, leafOf(t, statement(i, "acme-gw")))
	}
	appendAll(t, l, leaves)
	srv := httptest.NewServer(http.StripPrefix("/log", Handler(dir)))
	defer srv.Close()

	get := func(method, p string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+"/log/"+p, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp, []byte(b.String())
	}
	resp, body := get("GET", "checkpoint")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("checkpoint: %v %v", resp.Status, resp.Header)
	}
	size := mustCheckpointSize(t, k, body)
	for _, p := range []string{"tile/0/000", "tile/0/001.p/" + fmt.Sprint(size-256), "tile/1/000.p/1", "tile/entries/000"} {
		resp, body := get("GET", p)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" ||
			!strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
			t.Fatalf("%s: %v %v", p, resp.Status, resp.Header)
		}
		if len(body) == 0 {
			t.Fatalf("%s: empty", p)
		}
	}
	if resp, _ := get("HEAD", "tile/0/000"); resp.StatusCode != 200 || resp.ContentLength != 256*32 {
		t.Fatalf("HEAD: %v %d", resp.Status, resp.ContentLength)
	}
	for _, p := range []string{".state/treeState", "tile/0/../../.state/treeState", "tile/0/0", "tile/0/000.p/0",
		"tile/0/000.p/256", "tile/64/000", "tile/entries/x000/000", "tile/0/999", "", "tile/", "tile/entries/"} {
		if resp, _ := get("GET", p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%q: %v", p, resp.Status)
		}
	}
	if resp, _ := get("POST", "checkpoint"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v", resp.Status)
	}
}

// Scan reads every entry of a range in order, across entry bundles, and
// Settle reports a size that covers everything appended.
func TestScanAndSettle(t *testing.T) {
	k := newKeys(t, testOrigin)
	ctx := ctxT(t)
	l := openLog(t, t.TempDir(), k)
	if n, err := l.Settle(ctx); err != nil || n != 0 {
		t.Fatalf("empty log settles at %d, %v", n, err)
	}
	var leaves [][]byte
	for i := range layout.EntryBundleWidth + 5 {
		leaves = append(leaves, leafOf(t, statement(i, "acme-gw")))
	}
	got := appendAll(t, l, leaves)
	n, err := l.Settle(ctx)
	if err != nil || n != uint64(len(leaves)) {
		t.Fatalf("settled at %d, %v; want %d", n, err, len(leaves))
	}
	for _, r := range [][2]uint64{{0, n}, {3, 4}, {250, 260}, {256, n}, {n, n}} {
		want := r[0]
		err := l.Scan(ctx, r[0], r[1], func(i uint64, leaf []byte) error {
			if i != want || string(leaf) != string(got[i].leaf) {
				return fmt.Errorf("entry %d (want %d): %q", i, want, leaf)
			}
			want++
			return nil
		})
		if err != nil || want != r[1] {
			t.Fatalf("scan %v: %v, stopped at %d", r, err, want)
		}
	}
	if err := l.Scan(ctx, 0, n+1, func(uint64, []byte) error { return nil }); !errors.Is(err, ErrRange) {
		t.Fatalf("scan past the published size: %v", err)
	}
	stop := errors.New("stop")
	if err := l.Scan(ctx, 0, n, func(uint64, []byte) error { return stop }); err != stop {
		t.Fatalf("scan did not stop: %v", err)
	}
}
