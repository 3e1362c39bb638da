package tlog

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/logproof"
)

func openShared(t *testing.T, dir string, k keys) *Log {
	t.Helper()
	l, err := Open(context.Background(), dir, k.signer, testOrigin,
		WithBatching(256, 20*time.Millisecond), WithCheckpointInterval(100*time.Millisecond), Shared(testTerm))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// twoShared opens one new log directory twice, shared, as two replicas
// do.
func twoShared(t *testing.T) (k keys, dir string, a, b *Log) {
	k = newKeys(t, testOrigin)
	dir = filepath.Join(t.TempDir(), "log")
	return k, dir, openShared(t, dir, k), openShared(t, dir, k)
}

// Two replicas share one log directory: a new log gets its empty
// checkpoint from the first, what one appends the other proves (its
// reads go to the files), appends alternate between them into one tree,
// and a consistency proof from either covers both.
func TestSharedLogAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	k, dir, a, b := twoShared(t)
	if n, err := b.Size(ctx); err != nil || n != 0 {
		t.Fatalf("a new shared log: size %d, %v", n, err)
	}
	var cps [][]byte
	for i := range 4 {
		w, r := a, b
		if i%2 == 1 {
			w, r = b, a
		}
		st := statement(i, "acme-gw")
		leaf := leafOf(t, st)
		idx, cp, err := w.Append(ctx, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(i) {
			t.Fatalf("append %d got index %d: the replicas' writers did not share one tree", i, idx)
		}
		p, err := r.Prove(ctx, idx, cp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := logproof.VerifyInclusion(testOrigin, k.verifier, leaf, p); err != nil {
			t.Fatalf("entry %d appended by one replica does not verify as proved by the other: %v", i, err)
		}
		cps = append(cps, cp)
	}
	for _, l := range []*Log{a, b} {
		proof, err := l.ConsistencyProof(ctx, 1, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := logproof.VerifyConsistency(testOrigin, k.verifier, cps[0], cps[3], proof); err != nil {
			t.Fatal(err)
		}
		n, err := l.Settle(ctx)
		if err != nil || n != 4 {
			t.Fatalf("settle: %d %v", n, err)
		}
		var got []uint64
		if err := l.Scan(ctx, 0, 4, func(i uint64, leaf []byte) error { got = append(got, i); return nil }); err != nil || len(got) != 4 {
			t.Fatalf("scan: %v %v", got, err)
		}
	}
	// No writer outlives its call: the directory is free for an
	// exclusive writer once the shared logs are closed.
	a.Close()
	b.Close()
	x := openLog(t, dir, k)
	if n, err := x.Size(ctx); err != nil || n != 4 {
		t.Fatalf("reopened exclusively: %d %v", n, err)
	}
	if _, err := Open(ctx, dir, k.signer, testOrigin, Shared(testTerm)); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("a shared open beside this process's exclusive writer: %v, want ErrAlreadyOpen", err)
	}
}
