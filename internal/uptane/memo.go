package uptane

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Memo carries what one check-in verified to the next check-in of the
// same device, so that a check-in whose repositories did not change
// verifies nothing twice.
//
// go-tuf starts every refresh from the files it keeps: it parses the
// trusted root and verifies its signatures, then parses and verifies each
// cached role against it, before it compares the repository's timestamp
// with the trusted one. With two repositories that was three quarters of
// a device's check-in CPU when nothing had changed, a fleet's usual case
// (docs/performance.md, "What a device's check-in costs").
//
// A Memo skips that work only when a full refresh now would end in the
// trusted set the Memo holds:
//   - the files go-tuf would load are byte for byte those the set was
//     verified from (so nothing else changed the state directory);
//   - no role of the set has expired at Config.Now;
//   - the repository has no next root version: it answers 404, as go-tuf
//     requires before it trusts the root it has;
//   - the repository's timestamp is byte for byte the trusted one.
//
// The two requests of the last two conditions are the ones every refresh
// makes, so freshness is checked exactly as before. When any condition
// fails the refresh is go-tuf's, in full, given the answers already
// fetched, and its result is remembered in turn. An error forgets the
// repository until a full refresh succeeds.
//
// The zero Memo is ready to use. A Memo belongs to one device (one state
// directory), whose Check calls must not overlap, Memo or not: the
// director is refreshed in one staging directory.
type Memo struct {
	mu    sync.Mutex
	repos map[string]*memoRepo // by metadata directory
	hits  int
}

// memoRepo is one repository's refresh and the files its trusted set was
// verified from.
type memoRepo struct {
	metaURL string
	files   map[string][]byte
	got     *refreshed
}

// fetched is an answer a fetcher gave, kept for a later request of the
// same URL within one refresh.
type fetched struct {
	data []byte
	err  error
}

// take removes and returns the memo of the repository kept in mdDir.
func (m *Memo) take(mdDir string) *memoRepo {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[mdDir]
	delete(m.repos, mdDir)
	return r
}

// put gives back r, taken from m for mdDir and reused unchanged.
func (m *Memo) put(mdDir string, r *memoRepo) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.repos == nil {
		m.repos = map[string]*memoRepo{}
	}
	m.repos[mdDir] = r
}

// keep is remember for a refresh that may have reused a memo: a reused
// trusted set to which the lookups added no role is given back as it was,
// without reading its files again.
func (m *Memo) keep(metaURL string, got *refreshed) {
	if r := got.from; r != nil && len(r.files) == 3+len(got.up.GetTrustedMetadataSet().Targets) {
		m.put(got.mdDir, r)
		return
	}
	m.remember(metaURL, got)
}

// remember keeps got, just refreshed (and its delegated roles looked up),
// for the next check-in, with the files in got.mdDir its trusted set was
// loaded from. It remembers nothing when a file cannot be read, or a role
// name is not a plain file name: then every check-in refreshes in full,
// as without a Memo.
func (m *Memo) remember(metaURL string, got *refreshed) {
	if m == nil {
		return
	}
	mdDir := got.mdDir
	ts := got.up.GetTrustedMetadataSet()
	if ts.Root == nil || ts.Timestamp == nil || ts.Snapshot == nil || ts.Targets[metadata.TARGETS] == nil {
		return
	}
	names := []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT}
	for role := range ts.Targets {
		if role == "" || role == "." || role == ".." || strings.ContainsAny(role, `/\`) {
			return
		}
		names = append(names, role)
	}
	files := make(map[string][]byte, len(names))
	for _, n := range names {
		// The name go-tuf loads a role from (updater.loadLocalMetadata).
		b, err := os.ReadFile(filepath.Join(mdDir, n) + ".json")
		if err != nil {
			return
		}
		files[n+".json"] = b
	}
	m.put(mdDir, &memoRepo{metaURL: metaURL, files: files, got: got})
}

// reuse returns r's updater, bound to ctx and now, when a refresh of mdDir
// would end in r's trusted set (see Memo). Otherwise it returns nil and
// the answers it fetched to find out, which the full refresh replays
// instead of asking again.
func (r *memoRepo) reuse(ctx context.Context, client *http.Client, name, metaURL, mdDir string, now time.Time) (*refreshed, map[string]fetched) {
	if r == nil || r.metaURL != metaURL {
		return nil, nil
	}
	for n, want := range r.files {
		got, err := os.ReadFile(filepath.Join(mdDir, n))
		if err != nil || !bytes.Equal(got, want) {
			return nil, nil
		}
	}
	ts := r.got.up.GetTrustedMetadataSet()
	if ts.Root.Signed.IsExpired(now) || ts.Timestamp.Signed.IsExpired(now) || ts.Snapshot.Signed.IsExpired(now) {
		return nil, nil
	}
	for _, t := range ts.Targets {
		if t.Signed.IsExpired(now) {
			return nil, nil
		}
	}

	// The requests go-tuf's refresh begins with, as it makes them
	// (updater.loadRoot, updater.loadTimestamp).
	f := newFetcher(ctx, client, name, nil)
	lim := f.limits
	replay := map[string]fetched{}
	nextRoot := metaURL + strconv.FormatInt(ts.Root.Signed.Version+1, 10) + ".root.json"
	b, err := f.DownloadFile(nextRoot, lim.Root, 0)
	replay[nextRoot] = fetched{b, err}
	var notFound *metadata.ErrDownloadHTTP
	if err == nil || !errors.As(err, &notFound) || notFound.StatusCode != http.StatusNotFound {
		return nil, replay
	}
	timestamp := metaURL + metadata.TIMESTAMP + ".json"
	b, err = f.DownloadFile(timestamp, lim.Timestamp, 0)
	replay[timestamp] = fetched{b, err}
	if err != nil || !bytes.Equal(b, r.files[metadata.TIMESTAMP+".json"]) {
		return nil, replay
	}

	// A lookup of a delegated role not yet loaded fetches it with this
	// check-in's context.
	r.got.fetch.ctx, r.got.fetch.client = ctx, client
	r.got.up.UnsafeSetRefTime(now)
	r.got.from = r
	return r.got, nil
}

// hit counts a check-in that reused a repository's trusted set.
func (m *Memo) hit() {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.hits++
	m.mu.Unlock()
}
