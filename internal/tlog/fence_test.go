package tlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

type termKey struct{}

// withTerm is a context carrying a lease term, as the server's
// store.WithFence does.
func withTerm(ctx context.Context, term int64) context.Context {
	return context.WithValue(ctx, termKey{}, term)
}

func testTerm(ctx context.Context) (int64, bool) {
	t, ok := ctx.Value(termKey{}).(int64)
	return t, ok
}

// A replica whose lease term has ended cannot write the shared log once
// a later term has claimed it (settled, or appended), whatever its own
// checks of its lease said: the log refuses its appends and settles with
// ErrFenced and is left as it was. Writes without a term, or with term
// 0, are refused once any term has claimed the log.
func TestSharedLogFencesEndedTerms(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	_, _, a, b := twoShared(t)
	leaf := func(i int) []byte { return leafOf(t, statement(i, "acme-gw")) }

	if _, _, err := a.Append(withTerm(ctx, 1), leaf(0)); err != nil {
		t.Fatal(err)
	}
	// Replica b takes the lease over (term 2) and settles the log before
	// it reads it, as a server finishing an interrupted push does.
	if n, err := b.Settle(withTerm(ctx, 2)); err != nil || n != 1 {
		t.Fatalf("settle under the new term: %d, %v", n, err)
	}
	if _, _, err := a.Append(withTerm(ctx, 1), leaf(1)); !errors.Is(err, ErrFenced) {
		t.Fatalf("append under the ended term: %v, want ErrFenced", err)
	}
	if _, err := a.Settle(withTerm(ctx, 1)); !errors.Is(err, ErrFenced) {
		t.Fatalf("settle under the ended term: %v, want ErrFenced", err)
	}
	if idx, _, err := b.Append(withTerm(ctx, 2), leaf(2)); err != nil || idx != 1 {
		t.Fatalf("append under the current term: index %d, %v; want 1: the refused append must leave nothing", idx, err)
	}
	for name, c := range map[string]context.Context{"no term": ctx, "term 0": withTerm(ctx, 0)} {
		if _, _, err := b.Append(c, leaf(3)); !errors.Is(err, ErrFenced) {
			t.Fatalf("append with %s: %v, want ErrFenced", name, err)
		}
	}
	if n, err := a.Size(ctx); err != nil || n != 2 {
		t.Fatalf("size %d, %v; want 2", n, err)
	}
	// A later term again, from the other replica.
	if idx, _, err := a.Append(withTerm(ctx, 3), leaf(4)); err != nil || idx != 2 {
		t.Fatalf("append under term 3: %d, %v", idx, err)
	}
	if _, _, err := b.Append(withTerm(ctx, 2), leaf(5)); !errors.Is(err, ErrFenced) {
		t.Fatalf("append under term 2 after term 3: %v, want ErrFenced", err)
	}
}

// A shared log needs its writers' term: Open refuses a shared log
// without one rather than leaving its writers unfenced.
func TestSharedLogNeedsTerm(t *testing.T) {
	k := newKeys(t, testOrigin)
	if _, err := Open(context.Background(), t.TempDir(), k.signer, testOrigin, Shared(nil)); err == nil || !strings.Contains(err.Error(), "lease term") {
		t.Fatalf("Open(Shared(nil)): %v", err)
	}
}

// A damaged term file stops every writer with an error naming the file,
// rather than letting any term write.
func TestSharedLogDamagedTermFile(t *testing.T) {
	ctx := ctxT(t)
	k := newKeys(t, testOrigin)
	dir := filepath.Join(t.TempDir(), "log")
	a := openShared(t, dir, k)
	for _, bad := range []string{"x\n", "-4\n", "0\n", strings.Repeat("9", 40)} {
		if err := os.WriteFile(filepath.Join(dir, termFile), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := a.Append(withTerm(ctx, 7), leafOf(t, statement(0, "acme-gw")))
		if err == nil || !strings.Contains(err.Error(), termFile) {
			t.Fatalf("term file %q: %v", bad, err)
		}
	}
}

// The claim excludes across processes, as replicas on other machines are:
// while this process writes under term 5 (paused after claiming, as a
// long garbage collection would pause it), another process's writer of
// term 6 waits for it, so the two never interleave and the ended term's
// entry is not written after the new term's. Then the ended term is
// fenced.
func TestSharedLogClaimAcrossProcesses(t *testing.T) {
	ctx := ctxT(t)
	k := newKeys(t, testOrigin)
	dir := filepath.Join(t.TempDir(), "log")
	a := openShared(t, dir, k)
	if _, _, err := a.Append(withTerm(ctx, 4), leafOf(t, statement(0, "acme-gw"))); err != nil {
		t.Fatal(err)
	}

	paused, resume := make(chan struct{}), make(chan struct{})
	hook := func(d string, term int64) {
		if term == 5 {
			close(paused)
			<-resume
		}
	}
	claimed.Store(&hook)
	t.Cleanup(func() { claimed.Store(nil) })
	type result struct {
		idx uint64
		err error
	}
	mine := make(chan result, 1)
	go func() {
		idx, _, err := a.Append(withTerm(ctx, 5), leafOf(t, statement(1, "acme-gw")))
		mine <- result{idx, err}
	}()
	select {
	case <-paused:
	case r := <-mine:
		t.Fatalf("the term-5 append did not pause after claiming the log: %d, %v", r.idx, r.err)
	}

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSharedLogWriterProcess$")
	cmd.Env = append(os.Environ(), "TLOG_WRITER_DIR="+dir, "TLOG_WRITER_KEY="+k.skey, "TLOG_WRITER_TERM=6")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "opened" {
		t.Fatalf("writer process: %q", lines.Text())
	}
	// The other writer is now appending; give it time it would need to
	// get in ahead of the paused one if the claim did not exclude it.
	time.Sleep(300 * time.Millisecond)
	close(resume)
	r := <-mine
	if r.err != nil {
		t.Fatalf("the paused writer's append: %v", r.err)
	}
	if !lines.Scan() {
		t.Fatalf("writer process said nothing more: %v", lines.Err())
	}
	theirs := lines.Text()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("writer process: %v", err)
	}
	idx, err := strconv.ParseUint(strings.TrimPrefix(theirs, "index "), 10, 64)
	if err != nil {
		t.Fatalf("writer process: %q", theirs)
	}
	if r.idx != 1 || idx != 2 {
		t.Fatalf("the paused term-5 writer got index %d, the other process's term-6 writer %d; want 1 then 2", r.idx, idx)
	}
	if _, _, err := a.Append(withTerm(ctx, 5), leafOf(t, statement(3, "acme-gw"))); !errors.Is(err, ErrFenced) {
		t.Fatalf("append under term 5 after term 6: %v, want ErrFenced", err)
	}
}

// TestSharedLogWriterProcess is TestSharedLogClaimAcrossProcesses's other
// process: it appends one entry to the shared log TLOG_WRITER_DIR under
// term TLOG_WRITER_TERM and prints its index.
func TestSharedLogWriterProcess(t *testing.T) {
	dir := os.Getenv("TLOG_WRITER_DIR")
	if dir == "" {
		t.Skip("the writer process of TestSharedLogClaimAcrossProcesses")
	}
	term, err := strconv.ParseInt(os.Getenv("TLOG_WRITER_TERM"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(os.Getenv("TLOG_WRITER_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	l := openShared(t, dir, keys{signer: s})
	fmt.Println("opened")
	idx, _, err := l.Append(withTerm(ctxT(t), term), leafOf(t, statement(2, "acme-gw")))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("index %d\n", idx)
}
