// Package tlog is Rampart's server-side transparency log: an append-only
// Merkle log of release statements (see internal/logproof) in the C2SP
// tlog-tiles layout, with C2SP tlog-checkpoint signed-note checkpoints,
// stored in a directory by tessera's POSIX driver.
//
// Append blocks until a checkpoint that covers the new entry is published,
// so the index and checkpoint it returns can be shipped to devices together
// with InclusionProof at once. The directory is the public log: Handler
// serves it read-only over HTTP (checkpoint, hash tiles, entry bundles) for
// monitors and devices; the .state subdirectory is private bookkeeping.
//
// One process writes a log directory at a time: Open refuses a directory
// this process already has open (tessera's advisory file locks do not
// exclude a second writer inside the same process).
//
// Replicas share one log (Shared): the directory sits on storage every
// replica mounts (a POSIX file system with working fcntl locks and atomic
// rename: CephFS, NFSv4, EFS), each replica reads checkpoints, tiles and
// entry bundles from the files, and a writer exists only for the length
// of one Append or Settle, run by the replica holding the repository's
// lease (package hostedrepo), so there is one writer at a time across
// replicas, which is what tessera's POSIX driver assumes. Writers are
// fenced by the lease's term in the directory itself (fence.go), so a
// replica whose term ended cannot write after another's began.
package tlog

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/logproof"
)

// Defaults for Open. They favour latency over throughput: a release log
// sees few appends, and Append waits for a checkpoint.
const (
	DefaultBatchMaxSize       = 256
	DefaultBatchMaxAge        = 50 * time.Millisecond
	DefaultCheckpointInterval = 100 * time.Millisecond // tessera's POSIX minimum
	// MaxEntrySize is the largest leaf Append accepts (tlog-tiles limit).
	MaxEntrySize = 1<<16 - 1
)

var (
	// ErrAlreadyOpen is returned by Open for a directory this process has open.
	ErrAlreadyOpen = errors.New("tlog: log directory already open in this process")
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("tlog: log closed")
	// ErrRange is returned for an index or tree size the published log does not cover.
	ErrRange = errors.New("tlog: index or size out of range")
)

// Option configures Open.
type Option func(*options)

type options struct {
	batchSize  uint
	batchAge   time.Duration
	cpInterval time.Duration
	poll       time.Duration
	shared     bool
	term       func(context.Context) (int64, bool)
}

// Shared opens the log as one of several replicas' (see the package
// comment): Open starts no writer and does not claim the directory for
// this process; Append and Settle each run tessera's appender for their
// own duration, one at a time per directory in this process (fcntl locks
// do not exclude within a process), and the caller serialises them
// across replicas (the repository's lease). Every read goes to the
// files, so what one replica appended is served by all of them.
//
// term returns the lease term a call's context carries (the repository
// lease's token, which grows with each term): writers are fenced by it
// (see claim), so that a replica whose term has ended cannot append
// after another replica took the lease over, even when it was paused
// past its own check of the lease.
func Shared(term func(ctx context.Context) (token int64, ok bool)) Option {
	return func(o *options) { o.shared, o.term = true, term }
}

// WithBatching sets how many entries, or how long, tessera collects before
// sequencing them together.
func WithBatching(maxSize uint, maxAge time.Duration) Option {
	return func(o *options) { o.batchSize, o.batchAge = maxSize, maxAge }
}

// WithCheckpointInterval sets the minimum time between published checkpoints
// (at least 100ms); Append's latency is about this long.
func WithCheckpointInterval(d time.Duration) Option {
	return func(o *options) { o.cpInterval = d }
}

// Log is an open transparency log. Its methods are safe for concurrent use.
type Log struct {
	dir      string
	origin   string
	appender *tessera.Appender // nil when shared
	reader   logReader
	awaiter  *tessera.PublicationAwaiter // nil when shared
	shutdown func(context.Context) error // nil when shared
	cancel   context.CancelFunc
	// shared: see Shared; appendOpts and poll make its writers.
	shared     bool
	appendOpts func() *tessera.AppendOptions
	poll       time.Duration
	term       func(context.Context) (int64, bool)

	mu     sync.RWMutex // guards closed against Close racing with calls
	closed bool
}

var (
	openMu   sync.Mutex
	openDirs = map[string]bool{}
	// sharedWriters serialises the writers of shared logs by directory
	// within this process.
	sharedWriters sync.Map // absolute dir -> *sync.Mutex
)

// logReader is what the log reads of its directory: tessera's reader of
// its own appender, or, for a shared log, the files directly.
type logReader interface {
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
	NextIndex(ctx context.Context) (uint64, error)
}

// fileReader reads a log directory in tessera's POSIX layout, as another
// replica's writer left it: every file there is replaced by an atomic
// rename, so a read sees a whole old or a whole new file.
type fileReader struct {
	client.FileFetcher
	dir string
}

// NextIndex is the size of the tree the writers have integrated (it may
// be ahead of the published checkpoint), from tessera's private state
// file.
func (f fileReader) NextIndex(context.Context) (uint64, error) {
	raw, err := os.ReadFile(filepath.Join(f.dir, ".state", "treeState"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var st struct {
		Size uint64 `json:"size"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, fmt.Errorf("tlog: %s: %w", filepath.Join(f.dir, ".state", "treeState"), err)
	}
	return st.Size, nil
}

// Open opens the log in dir, creating it (with a signed empty checkpoint)
// if dir holds no log yet. signer signs checkpoints; its name must equal
// origin, which becomes the first line of every checkpoint. The log keeps
// background goroutines until Close; ctx only bounds Open itself (its
// values are kept, its cancellation is not).
func Open(ctx context.Context, dir string, signer note.Signer, origin string, opts ...Option) (*Log, error) {
	if signer == nil {
		return nil, errors.New("tlog: nil checkpoint signer")
	}
	if origin == "" || signer.Name() != origin {
		return nil, fmt.Errorf("tlog: signer name %q must equal origin %q", signer.Name(), origin)
	}
	o := options{
		batchSize:  DefaultBatchMaxSize,
		batchAge:   DefaultBatchMaxAge,
		cpInterval: DefaultCheckpointInterval,
	}
	for _, opt := range opts {
		opt(&o)
	}
	o.poll = min(o.cpInterval/4, 50*time.Millisecond)
	if o.poll <= 0 {
		o.poll = 10 * time.Millisecond
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	openMu.Lock()
	defer openMu.Unlock()
	if openDirs[abs] {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyOpen, abs)
	}

	// A published checkpoint must be this log's: refuse a directory holding
	// another origin's log before tessera starts (re-)signing checkpoints.
	if raw, err := os.ReadFile(filepath.Join(abs, layout.CheckpointPath)); err == nil {
		cp, err := uncheckedCheckpoint(raw)
		if err == nil && cp.Origin != origin {
			err = fmt.Errorf("origin %q", cp.Origin)
		}
		if err == nil && !signedBy(raw, signer) {
			err = errors.New("checkpoint not signed by this signer's key")
		}
		if err != nil {
			return nil, fmt.Errorf("tlog: %s holds another log: %v", abs, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tlog: %w", err)
	}

	appendOpts := func() *tessera.AppendOptions {
		return tessera.NewAppendOptions().
			WithCheckpointSigner(signer).
			WithBatching(o.batchSize, o.batchAge).
			WithCheckpointInterval(o.cpInterval)
	}
	if o.shared {
		if o.term == nil {
			return nil, errors.New("tlog: a shared log needs its writers' lease term")
		}
		l := &Log{dir: abs, origin: origin, reader: fileReader{client.FileFetcher{Root: abs}, abs}, cancel: func() {},
			shared: true, appendOpts: appendOpts, poll: o.poll, term: o.term}
		// A new log gets its empty checkpoint from its first writer.
		if _, err := os.Stat(filepath.Join(abs, layout.CheckpointPath)); errors.Is(err, fs.ErrNotExist) {
			if _, err := l.Settle(ctx); err != nil {
				return nil, err
			}
		}
		return l, nil
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	drv, err := posix.New(bg, posix.Config{Path: abs})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tlog: posix driver: %w", err)
	}
	app, shutdown, reader, err := tessera.NewAppender(bg, drv, appendOpts())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tlog: appender: %w", err)
	}
	l := &Log{
		dir:      abs,
		origin:   origin,
		appender: app,
		reader:   reader,
		awaiter:  tessera.NewPublicationAwaiter(bg, reader.ReadCheckpoint, o.poll),
		shutdown: shutdown,
		cancel:   cancel,
	}
	openDirs[abs] = true
	return l, nil
}

// GenerateKey returns a new Ed25519 note key pair named origin, in the
// x/mod/sumdb/note text forms (the signer key is secret).
func GenerateKey(origin string) (signerKey, verifierKey string, err error) {
	return note.GenerateKey(rand.Reader, origin)
}

// Dir returns the log's directory (absolute).
func (l *Log) Dir() string { return l.dir }

// Origin returns the log's origin line.
func (l *Log) Origin() string { return l.origin }

func (l *Log) enter() error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (l *Log) leave() { l.mu.RUnlock() }

// Append adds leaf to the log and returns its index and a signed
// checkpoint that covers it, once that checkpoint is published. Concurrent
// appends are batched; their relative order is not defined. Appending the
// same bytes twice logs them twice. If ctx ends before the checkpoint is
// published the entry may still be logged (the log is append-only).
func (l *Log) Append(ctx context.Context, leaf []byte) (index uint64, checkpoint []byte, err error) {
	if len(leaf) == 0 || len(leaf) > MaxEntrySize {
		return 0, nil, fmt.Errorf("tlog: entry size %d not in 1..%d", len(leaf), MaxEntrySize)
	}
	if err := l.enter(); err != nil {
		return 0, nil, err
	}
	defer l.leave()
	if l.shared {
		var idx tessera.Index
		var cp []byte
		err := l.withWriter(ctx, func(app *tessera.Appender, aw *tessera.PublicationAwaiter) error {
			var err error
			idx, cp, err = aw.Await(ctx, app.Add(ctx, tessera.NewEntry(leaf)))
			return err
		})
		if err != nil {
			return 0, nil, fmt.Errorf("tlog: append: %w", err)
		}
		return idx.Index, cp, nil
	}
	idx, cp, err := l.awaiter.Await(ctx, l.appender.Add(ctx, tessera.NewEntry(leaf)))
	if err != nil {
		return 0, nil, fmt.Errorf("tlog: append: %w", err)
	}
	return idx.Index, cp, nil
}

// withWriter runs f with a tessera appender over a shared log's
// directory, then shuts it down (waiting until what f added is
// published) and stops its background work, so that no writer outlives
// the caller's hold on the repository's lease. It claims the log for the
// caller's term first and holds the claim throughout (claim).
func (l *Log) withWriter(ctx context.Context, f func(app *tessera.Appender, aw *tessera.PublicationAwaiter) error) error {
	unlock, err := l.lockShared(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	drv, err := posix.New(bg, posix.Config{Path: l.dir})
	if err != nil {
		return fmt.Errorf("posix driver: %w", err)
	}
	app, shutdown, reader, err := tessera.NewAppender(bg, drv, l.appendOpts())
	if err != nil {
		return fmt.Errorf("appender: %w", err)
	}
	ferr := f(app, tessera.NewPublicationAwaiter(bg, reader.ReadCheckpoint, l.poll))
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer scancel()
	if err := shutdown(sctx); err != nil && ferr == nil {
		ferr = fmt.Errorf("shutting the writer down: %w", err)
	}
	return ferr
}

// lockShared takes this process's mutex for a shared log's directory,
// then the lock file, and claims the log for ctx's term (claim); unlock
// releases both.
func (l *Log) lockShared(ctx context.Context) (unlock func(), err error) {
	mu, _ := sharedWriters.LoadOrStore(l.dir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	release, err := l.claim(ctx)
	if err != nil {
		mu.(*sync.Mutex).Unlock()
		return nil, err
	}
	return func() { release(); mu.(*sync.Mutex).Unlock() }, nil
}

// AppendStatement logs the canonical encoding of s and returns a Proof of
// its inclusion ready to ship, together with the leaf bytes.
func (l *Log) AppendStatement(ctx context.Context, s *logproof.Statement) (*logproof.Proof, []byte, error) {
	leaf, err := logproof.MarshalStatement(s)
	if err != nil {
		return nil, nil, err
	}
	idx, cp, err := l.Append(ctx, leaf)
	if err != nil {
		return nil, nil, err
	}
	p, err := l.Prove(ctx, idx, cp)
	if err != nil {
		return nil, nil, err
	}
	return p, leaf, nil
}

// Prove returns the inclusion proof of the entry at index under the given
// checkpoint (one this log published, e.g. returned by Append).
func (l *Log) Prove(ctx context.Context, index uint64, checkpoint []byte) (*logproof.Proof, error) {
	cp, err := uncheckedCheckpoint(checkpoint)
	if err != nil {
		return nil, err
	}
	if cp.Origin != l.origin {
		return nil, fmt.Errorf("tlog: checkpoint origin %q is not this log's", cp.Origin)
	}
	hs, err := l.InclusionProof(ctx, index, cp.Size)
	if err != nil {
		return nil, err
	}
	return &logproof.Proof{Index: index, Checkpoint: checkpoint, Hashes: hs}, nil
}

// Checkpoint returns the latest published checkpoint.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.leave()
	return l.reader.ReadCheckpoint(ctx)
}

// Size returns the tree size of the latest published checkpoint.
func (l *Log) Size(ctx context.Context) (uint64, error) {
	raw, err := l.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	cp, err := uncheckedCheckpoint(raw)
	if err != nil {
		return 0, err
	}
	return cp.Size, nil
}

// InclusionProof returns the RFC 6962 inclusion proof of the entry at index
// in the tree of the given size; size must not exceed the published size.
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if err := l.checkSize(ctx, size); err != nil {
		return nil, err
	}
	if index >= size {
		return nil, fmt.Errorf("%w: index %d, tree size %d", ErrRange, index, size)
	}
	pb, err := client.NewProofBuilder(ctx, size, l.readTile)
	if err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	hs, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("tlog: inclusion proof %d in %d: %w", index, size, err)
	}
	return hs, nil
}

// ConsistencyProof returns the RFC 6962 consistency proof between tree
// sizes from <= to; to must not exceed the published size. It is empty
// when from is 0 or equals to.
func (l *Log) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	if from > to {
		return nil, fmt.Errorf("%w: consistency from %d to %d", ErrRange, from, to)
	}
	if err := l.checkSize(ctx, to); err != nil {
		return nil, err
	}
	if from == 0 || from == to {
		return [][]byte{}, nil
	}
	pb, err := client.NewProofBuilder(ctx, to, l.readTile)
	if err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	hs, err := pb.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("tlog: consistency proof %d -> %d: %w", from, to, err)
	}
	return hs, nil
}

// ReadTile returns the raw hash tile at (level, index) of width p (0 for a
// full tile), as served at the tlog-tiles path tile/<level>/<index>[.p/<p>].
func (l *Log) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	return l.readTile(ctx, level, index, p)
}

func (l *Log) readTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.leave()
	return l.reader.ReadTile(ctx, level, index, p)
}

// ReadEntryBundle returns the raw entry bundle at index of width p (0 for a
// full bundle), as served at tile/entries/<index>[.p/<p>].
func (l *Log) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.leave()
	return l.reader.ReadEntryBundle(ctx, index, p)
}

// Entry returns the leaf at index, which the published checkpoint must cover.
func (l *Log) Entry(ctx context.Context, index uint64) ([]byte, error) {
	size, err := l.Size(ctx)
	if err != nil {
		return nil, err
	}
	if index >= size {
		return nil, fmt.Errorf("%w: index %d, tree size %d", ErrRange, index, size)
	}
	b, err := client.GetEntryBundle(ctx, l.ReadEntryBundle, index/layout.EntryBundleWidth, size)
	if err != nil {
		return nil, fmt.Errorf("tlog: entry %d: %w", index, err)
	}
	i := index % layout.EntryBundleWidth
	if i >= uint64(len(b.Entries)) {
		return nil, fmt.Errorf("tlog: entry %d missing from bundle", index)
	}
	return b.Entries[i], nil
}

// Settle waits until the published checkpoint covers every entry the log
// has sequenced, and returns its size. After a restart, entries that were
// sequenced before a crash but not yet published are published by the
// log's background work; Settle lets a caller that must know everything
// in the log (a server finishing an interrupted push) wait for them.
func (l *Log) Settle(ctx context.Context) (uint64, error) {
	if l.shared {
		if _, hasTerm := l.term(ctx); hasTerm {
			// Claim the log for the caller's term before reading what
			// it holds: from here on no older term's writer adds to it.
			// (A caller without a term only reads; should a writer be
			// needed below, it is refused once a term has claimed the
			// log.)
			unlock, err := l.lockShared(ctx)
			if err != nil {
				return 0, err
			}
			unlock()
		}
	}
	if err := l.enter(); err != nil {
		return 0, err
	}
	next, err := l.reader.NextIndex(ctx)
	l.leave()
	if err != nil {
		return 0, fmt.Errorf("tlog: next index: %w", err)
	}
	if l.shared {
		// Nothing publishes a shared log between writers: if a writer
		// died between integrating entries and publishing them (or
		// before the first checkpoint), run one until they are.
		if size, err := l.Size(ctx); err == nil && size >= next {
			return size, nil
		}
		var size uint64
		err := l.withWriter(ctx, func(*tessera.Appender, *tessera.PublicationAwaiter) error {
			var err error
			size, err = l.awaitPublished(ctx, next)
			return err
		})
		return size, err
	}
	return l.awaitPublished(ctx, next)
}

// awaitPublished polls the published checkpoint until it covers next
// entries, and returns its size.
func (l *Log) awaitPublished(ctx context.Context, next uint64) (uint64, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		size, err := l.Size(ctx)
		if err != nil && !(l.shared && errors.Is(err, fs.ErrNotExist)) {
			return 0, err
		}
		if err == nil && size >= next {
			return size, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("tlog: waiting for entries %d..%d to be published: %w", size, next-1, ctx.Err())
		case <-t.C:
		}
	}
}

// Scan calls fn with each leaf at index from to to-1, in order, reading
// each entry bundle once; to must not exceed the published size. It stops
// at fn's first error and returns it.
func (l *Log) Scan(ctx context.Context, from, to uint64, fn func(index uint64, leaf []byte) error) error {
	if from > to {
		return fmt.Errorf("%w: scan from %d to %d", ErrRange, from, to)
	}
	size, err := l.Size(ctx)
	if err != nil {
		return err
	}
	if to > size {
		return fmt.Errorf("%w: scan to %d beyond published size %d", ErrRange, to, size)
	}
	for idx := from; idx < to; {
		// Bundles are addressed by the published size: the last one is
		// partial at that size, whatever to is.
		b, err := client.GetEntryBundle(ctx, l.ReadEntryBundle, idx/layout.EntryBundleWidth, size)
		if err != nil {
			return fmt.Errorf("tlog: entry bundle of %d: %w", idx, err)
		}
		i := idx % layout.EntryBundleWidth
		if i >= uint64(len(b.Entries)) {
			return fmt.Errorf("tlog: entry %d missing from its bundle", idx)
		}
		for ; i < uint64(len(b.Entries)) && idx < to; i, idx = i+1, idx+1 {
			if err := fn(idx, b.Entries[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close waits until every entry already added is published, then stops the
// log's background work. Further calls fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if l.shared {
		return nil // its writers lived for one call each
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := l.shutdown(ctx)
	l.cancel()
	openMu.Lock()
	delete(openDirs, l.dir)
	openMu.Unlock()
	if err != nil {
		return fmt.Errorf("tlog: close: %w", err)
	}
	return nil
}

func (l *Log) checkSize(ctx context.Context, size uint64) error {
	pub, err := l.Size(ctx)
	if err != nil {
		return err
	}
	if size > pub {
		return fmt.Errorf("%w: tree size %d beyond published size %d", ErrRange, size, pub)
	}
	return nil
}

// uncheckedCheckpoint parses the body of a checkpoint note without checking
// its signature; only for checkpoints read from our own directory.
func uncheckedCheckpoint(raw []byte) (*log.Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		n, err = unverified.Note, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tlog: checkpoint: %w", err)
	}
	cp := &log.Checkpoint{}
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, fmt.Errorf("tlog: checkpoint: %w", err)
	}
	return cp, nil
}

// signedBy reports whether the note raw carries a signature line naming
// signer's key (name and key hash). It does not verify the signature; it
// only guards against opening a log with the wrong key by mistake.
func signedBy(raw []byte, signer note.Signer) bool {
	_, err := note.Open(raw, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return false
	}
	for _, sig := range unverified.Note.UnverifiedSigs {
		if sig.Name == signer.Name() && sig.Hash == signer.KeyHash() {
			return true
		}
	}
	return false
}

// Resign replaces the signature of the published checkpoint in the log
// directory dir with one by signer, for a rotation of the log key: the
// checkpoint must verify under one of known (the retired key, and the new
// one, for a rotation that was cut short and runs again); its text, and
// so the tree, is unchanged. The log must not be open. fs.ErrNotExist
// means the log has no checkpoint yet (Open makes one with the new key).
func Resign(dir string, known []note.Verifier, signer note.Signer) error {
	path := filepath.Join(dir, layout.CheckpointPath)
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	n, err := note.Open(raw, note.VerifierList(known...))
	if err != nil {
		return fmt.Errorf("tlog: the checkpoint in %s does not verify under the retired or the new log key: %w", dir, err)
	}
	if _, err := uncheckedCheckpoint(raw); err != nil {
		return err
	}
	out, err := note.Sign(&note.Note{Text: n.Text}, signer)
	if err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	tmp := path + ".resign"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	if f, err := os.Open(tmp); err == nil {
		f.Sync()
		f.Close()
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
