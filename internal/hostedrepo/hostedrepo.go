// Package hostedrepo is rampart-server's hosted TUF image repository: it
// owns what the repository publishes and how it changes. A push (Push)
// is checked by the pure acceptance rules of package pushaccept, its blobs
// and chunk indexes are checked against the signed targets, its releases
// are appended to the transparency log, the online snapshot and timestamp
// are signed over the result (package onlineroles), and everything commits
// with its audit entry in one store transaction. RefreshOnline renews the
// online roles before they expire. Both pin the repository's roles in
// the snapshot the same way (pin).
//
// A push is logged and published in steps that cannot share one
// transaction (the log is not the store), so an accepted push is first
// stored as pending and finished by whoever finds it (see pending.go).
//
// It knows nothing of HTTP: refusals are *Refusal values with a stable
// code, which the HTTP layer (package server) maps to a status. It takes
// the narrow store, blob and log interfaces it needs. A Service is safe
// for concurrent use; its writers are serialised (Lock).
package hostedrepo

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/lease"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/pushaccept"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/verify"
)

// Repo is the name of the image repository in the store.
const Repo = "image"

// ErrNoRepository means the image repository has no root yet.
var ErrNoRepository = errors.New("the image repository has no root yet")

// Store is what the hosted repository needs of the metadata store.
type Store interface {
	Doc(ctx context.Context, repo, role string, version int64) (store.Doc, error)
	PutDocs(ctx context.Context, docs ...store.Doc) error
	LogEntry(ctx context.Context, target string) (store.LogEntry, error)
	PutLogEntry(ctx context.Context, e store.LogEntry) error
	PendingPush(ctx context.Context) ([]byte, error)
	PutPendingPush(ctx context.Context, data []byte) error
	// ChunkBlobs names the payloads of every release ever published,
	// which ExpireBlobs keeps.
	ChunkBlobs(ctx context.Context) ([]string, error)
	// Atomic commits a push's metadata, chunks and audit entry together.
	Atomic(ctx context.Context, f func(tx store.Tx) error) error
}

// Blobs is what the hosted repository needs of the blob store.
type Blobs interface {
	Stat(ctx context.Context, digest string) (int64, error)
	Open(ctx context.Context, digest string) (blob.Reader, error)
}

// Log is what the hosted repository needs of the transparency log.
type Log interface {
	Append(ctx context.Context, leaf []byte) (index uint64, checkpoint []byte, err error)
	Size(ctx context.Context) (uint64, error)
	Settle(ctx context.Context) (uint64, error)
	Scan(ctx context.Context, from, to uint64, fn func(index uint64, leaf []byte) error) error
}

// Expiry is the lifetime of the online roles the service signs.
type Expiry struct {
	Snapshot  time.Duration
	Timestamp time.Duration
}

// Config wires a Service.
type Config struct {
	Store Store
	Blobs Blobs
	Log   Log
	// LogVerifierKey is the log's verifier key: a pushed root that names
	// a log key must name this one.
	LogVerifierKey string
	// Online are the snapshot and timestamp keys, then the ones a
	// rotation replaced.
	Online []keys.Signer
	Expiry Expiry
	Logger *slog.Logger
	Now    func() time.Time
	// Lease, when set, is the repository's lease in the shared store
	// (package lease): the cluster-wide writer lock of the image
	// repository and of the transparency log, held for each push,
	// refresh, recovery and blob expiry, so that replicas over one
	// database never write them at once. Nil for one server process
	// (its mutex is enough).
	Lease *lease.Lease
}

// LeaseName is the name of the repository's lease in the store.
const LeaseName = "repository"

// Service is the hosted image repository. It is safe for concurrent use.
type Service struct {
	store          Store
	blobs          Blobs
	log            Log
	logVerifierKey string
	online         []keys.Signer
	expiry         Expiry
	logger         *slog.Logger
	now            func() time.Time
	// mu serialises writers of the repository within a process; lease
	// (when set) across replicas.
	mu    sync.Mutex
	lease *lease.Lease
}

// New returns a Service. It does not finish a pending push: call Recover.
func New(c Config) *Service {
	return &Service{store: c.Store, blobs: c.Blobs, log: c.Log, logVerifierKey: c.LogVerifierKey, online: c.Online,
		expiry: c.Expiry, logger: c.Logger, now: c.Now, lease: c.Lease}
}

// errBusy: another replica holds the repository's lease.
var errBusy = errors.New("another replica holds the repository's lease")

// hold takes the repository's lease across replicas for one piece of
// work; the caller holds mu. It fails with errBusy (wrapped, naming the
// holder) when another replica has it. Every taker of the lease finishes
// a pending push first, so a push whose replica died mid-way is finished
// by whichever replica writes the repository next. The work runs with
// the context it returns, fenced with the lease's term (lease.Fenced):
// if this replica pauses past the term and another takes the lease, the
// store refuses the rest of its writes (store.ErrFenced).
func (s *Service) hold(ctx context.Context) (fenced context.Context, release func(), err error) {
	if s.lease == nil {
		return ctx, func() {}, nil
	}
	held, release, err := s.lease.Hold(ctx)
	if err != nil {
		return ctx, nil, wrapf(err, "taking the repository's lease")
	}
	if !held {
		return ctx, nil, fmt.Errorf("%w (%s)", errBusy, s.lease.Owner())
	}
	return s.lease.Fenced(ctx), release, nil
}

// fenced fails once this replica may no longer hold the repository's
// lease (it could not renew it in time, e.g. it lost the database), so
// that it stops writing the log and the repository before another
// replica may take over.
func (s *Service) fenced() error {
	if s.lease == nil || s.lease.Held() {
		return nil
	}
	return fmt.Errorf("the repository's lease (%s) was lost: this replica could not renew it in time; stopping before another replica takes over", s.lease.Name())
}

// Lock and Unlock hold the repository's writer lock, for the server's
// other writers that must not interleave with a push (the director's
// root, blob expiry).
func (s *Service) Lock()   { s.mu.Lock() }
func (s *Service) Unlock() { s.mu.Unlock() }

// Code is a refusal's stable code (the API's error code).
type Code string

// The refusals of Push.
const (
	// LogKey: a pushed root names another log key than this server's.
	LogKey Code = "log-key"
	// MissingBlob: a new release's payload or index is not uploaded.
	MissingBlob Code = "missing-blob"
	// BlobMismatch: an uploaded blob's length is not the signed one.
	BlobMismatch Code = "blob-mismatch"
	// BadIndex: a chunk index does not agree with its signed target.
	BadIndex Code = "bad-index"
	// OnlineKeys: the root does not name this server's online keys.
	OnlineKeys Code = "online-keys"
	// Conflict: another server process is pushing (or writing the
	// repository: a refresh, a recovery).
	Conflict Code = "conflict"
	// ReleaseLogged: a release name is logged with other content.
	ReleaseLogged Code = "release-logged"
)

// Refusal is a push the repository refuses, with a stable code, the
// role at fault when there is one, and a message that says what to fix.
type Refusal struct {
	Code Code
	Role string
	Msg  string
}

func (r *Refusal) Error() string { return r.Msg }

func refuse(code Code, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Msg: fmt.Sprintf(format, args...)}
}

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// State reads the image repository's current signed metadata.
func (s *Service) State(ctx context.Context) (pushaccept.State, error) {
	st := pushaccept.State{Roles: map[string][]byte{}}
	for v := int64(1); ; v++ {
		d, err := s.store.Doc(ctx, Repo, metadata.ROOT, v)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			return st, err
		}
		st.Roots = append(st.Roots, d.Data)
	}
	if len(st.Roots) == 0 {
		return st, nil
	}
	t, err := s.store.Doc(ctx, Repo, metadata.TARGETS, 0)
	if err != nil {
		return st, err
	}
	st.Targets = t.Data
	tm, err := metadata.Targets().FromBytes(t.Data)
	if err != nil {
		return st, err
	}
	if tm.Signed.Delegations != nil {
		for _, d := range tm.Signed.Delegations.Roles {
			doc, err := s.store.Doc(ctx, Repo, d.Name, 0)
			if err != nil {
				return st, err
			}
			st.Roles[d.Name] = doc.Data
		}
	}
	return st, nil
}

// Push is a push's metadata: new root versions, targets and product
// roles, each offline-signed (the request of POST /api/v1/repo/push).
type Push = api.PushRequest

// PushResult is an accepted push: the versions now published, by role,
// and the new releases, logged (the answer of POST /api/v1/repo/push).
type PushResult = api.PushResponse

// Origin says who pushed, for the push's audit entry.
type Origin struct {
	RequestID string
	Actor     string
}

// Push applies a push. Everything that can refuse it happens first:
// check it (pushaccept), refuse a release name the log already gives other
// content, check its blobs, and sign the online roles over the result.
// Then the push is made durable as pending (everything needed to finish
// it), its releases are logged, and its metadata, chunks and audit entry
// commit in one transaction that also clears the pending record (see
// finishPush). So the log never names a release that the repository does
// not publish, except while a push is pending, and a pending push is
// finished before anything else changes the repository: by this call,
// or after an interruption at the server's start, its next push or its
// next refresh.
func (s *Service) Push(ctx context.Context, req Push, o Origin) (*PushResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, release, err := s.hold(ctx)
	if errors.Is(err, errBusy) {
		return nil, refuse(Conflict, "another push is in progress on another server replica (%s holds the repository's lease); fetch the current state and retry when it is done", s.lease.Owner())
	}
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.finishPendingPush(ctx); err != nil {
		return nil, err
	}
	cur, err := s.State(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkLogged(ctx, req); err != nil {
		return nil, err
	}
	now := s.now()
	acc, err := pushaccept.Accept(cur, pushaccept.Push{Roots: req.Roots, Targets: req.Targets, Roles: req.Roles}, now)
	if err != nil {
		return nil, err
	}
	// A root that names a log key names this server's: devices verify the
	// log under it (docs/incident-response.md, rotating the log key).
	if vk, ok := acc.Root.Signed.UnrecognizedFields[logproof.RootField]; ok && vk != s.logVerifierKey {
		return nil, refuse(LogKey, "root version %d names log key %.200v, this server's is %s (rampart server keys writes it)", acc.Root.Signed.Version, vk, s.logVerifierKey)
	}
	// Every new release's payload and index must already be uploaded, and
	// the index must agree with the signed target.
	roles := map[string]*metadata.Metadata[metadata.TargetsType]{}
	var chunks []store.ChunkRef // where each new release's chunks are, served by hash once published
	for _, rel := range acc.NewReleases {
		role := roles[rel.Meta.Product]
		if role == nil {
			if role, err = metadata.Targets().FromBytes(acc.State.Roles[rel.Meta.Product]); err != nil {
				return nil, err
			}
			roles[rel.Meta.Product] = role
		}
		for _, b := range []pushaccept.Blob{rel.Image, rel.Index} {
			n, err := s.blobs.Stat(ctx, b.SHA256)
			if errors.Is(err, blob.ErrNotFound) {
				return nil, refuse(MissingBlob, "blob %s (%d bytes) of release %s is not uploaded; PUT it to /api/v1/blobs/%s first", b.SHA256, b.Length, rel.Target, b.SHA256)
			}
			if err != nil {
				return nil, err
			}
			if n != b.Length {
				return nil, refuse(BlobMismatch, "blob %s is %d bytes, release %s says %d", b.SHA256, n, rel.Target, b.Length)
			}
		}
		ix, err := s.readBlob(ctx, rel.Index.SHA256, rel.Index.Length)
		if err != nil {
			return nil, err
		}
		index, err := pushaccept.Index(rel, role.Signed.Targets[rel.Target], ix)
		if err != nil {
			return nil, refuse(BadIndex, "release %s: %v", rel.Target, err)
		}
		for _, c := range index.Chunks {
			chunks = append(chunks, store.ChunkRef{Hash: hex.EncodeToString(c.Hash[:]), Blob: rel.Image.SHA256, Offset: c.Offset, Length: c.Length})
		}
	}
	targets, err := metadata.Targets().FromBytes(acc.State.Targets)
	if err != nil {
		return nil, err
	}
	// The statement of every new release, logged before the release
	// becomes visible, so no device can see a release the log does not
	// show.
	var stmts []pendingStatement
	var logged []string
	for _, rel := range acc.NewReleases {
		role := roles[rel.Meta.Product]
		var keyIDs []string
		for _, d := range targets.Signed.Delegations.Roles {
			if d.Name == rel.Meta.Product {
				keyIDs = d.KeyIDs
			}
		}
		leaf, err := logproof.MarshalStatement(&logproof.Statement{
			Target: rel.Target, Length: rel.Image.Length, SHA256: rel.Image.SHA256,
			SecurityVersion: rel.Meta.SecurityVersion, Role: rel.Meta.Product, RoleVersion: role.Signed.Version,
			SignerKeyIDs: verify.ValidSigners(targets.Signed.Delegations.Keys, keyIDs, role),
		})
		if err != nil {
			return nil, wrapf(err, "statement of %s", rel.Target)
		}
		stmts = append(stmts, pendingStatement{Target: rel.Target, SHA256: rel.Image.SHA256, Length: rel.Image.Length, Leaf: leaf})
		logged = append(logged, rel.Target)
	}

	// Sign the online roles over the new state: a root that does not
	// name this server's online keys is refused here, before anything is
	// logged.
	var docs []store.Doc
	for i, raw := range req.Roots {
		docs = append(docs, store.Doc{Repo: Repo, Role: metadata.ROOT, Version: int64(len(cur.Roots) + i + 1), Data: raw})
	}
	pinned := []onlineroles.Role{pin(metadata.TARGETS, acc.Versions[metadata.TARGETS], acc.State.Targets)}
	for name, raw := range acc.State.Roles {
		pinned = append(pinned, pin(name, acc.Versions[name], raw))
	}
	for _, name := range acc.Changed {
		data := acc.State.Targets
		if name != metadata.TARGETS {
			data = acc.State.Roles[name]
		}
		docs = append(docs, store.Doc{Repo: Repo, Role: name, Version: acc.Versions[name], Data: data})
	}
	snapV, tsV, err := s.onlineVersions(ctx)
	if err != nil {
		return nil, err
	}
	snap, ts, err := s.sign(acc.Root, pinned, snapV+1, tsV+1, now)
	if err != nil {
		return nil, refuse(OnlineKeys, "cannot sign snapshot and timestamp: %v; the root must name this server's online keys (rampart server keys)", err)
	}
	docs = append(docs,
		store.Doc{Repo: Repo, Role: metadata.SNAPSHOT, Version: snapV + 1, Data: snap},
		store.Doc{Repo: Repo, Role: metadata.TIMESTAMP, Version: tsV + 1, Data: ts})
	acc.Versions[metadata.ROOT] = acc.Root.Signed.Version
	acc.Versions[metadata.SNAPSHOT], acc.Versions[metadata.TIMESTAMP] = snapV+1, tsV+1
	sort.Strings(logged)
	// The metadata and the audit entry of the accepted push commit
	// together: no published version is missing from the audit log.
	detail := map[string]string{"releases": strings.Join(logged, " ")}
	for role, v := range acc.Versions {
		detail[role] = strconv.FormatInt(v, 10)
	}
	if err := pushStep("checked"); err != nil {
		return nil, err
	}
	logSize, err := s.log.Size(ctx)
	if err != nil {
		return nil, wrapf(err, "reading the log's size")
	}
	p := &pendingPush{
		RequestID: o.RequestID, Actor: o.Actor, Detail: detail,
		Docs: docs, Chunks: chunks, Statements: stmts, LogSize: logSize,
		Response: PushResult{Versions: acc.Versions, Releases: logged},
	}
	if err := s.startPush(ctx, p); err != nil {
		return nil, err
	}
	// Once pending, the push is finished even if the client leaves: an
	// impatient client must not leave it for the next start or refresh.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if err := s.finishPush(ctx, p, false); err != nil {
		return nil, wrapf(err, "push accepted and pending; the server finishes it at its next start, push or refresh")
	}
	return &p.Response, nil
}

// pin is how a role is pinned in the snapshot, by the push and by the
// refresh alike.
func pin(name string, version int64, data []byte) onlineroles.Role {
	return onlineroles.Role{Name: name, Version: version, Data: data}
}

// sign signs a snapshot pinning roles and a timestamp pinning it, with
// the service's online keys and expiries, under root.
func (s *Service) sign(root *metadata.Metadata[metadata.RootType], roles []onlineroles.Role, snapV, tsV int64, now time.Time) (snap, ts []byte, err error) {
	return onlineroles.Sign(onlineroles.Options{
		Root: root, Roles: roles, SnapshotVersion: snapV, TimestampVersion: tsV,
		SnapshotExpires: now.Add(s.expiry.Snapshot), TimestampExpires: now.Add(s.expiry.Timestamp), Signers: s.online,
	})
}

func (s *Service) onlineVersions(ctx context.Context) (snap, ts int64, err error) {
	if d, err := s.store.Doc(ctx, Repo, metadata.SNAPSHOT, 0); err == nil {
		snap = d.Version
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, 0, err
	}
	if d, err := s.store.Doc(ctx, Repo, metadata.TIMESTAMP, 0); err == nil {
		ts = d.Version
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, 0, err
	}
	return snap, ts, nil
}

func (s *Service) readBlob(ctx context.Context, digest string, length int64) ([]byte, error) {
	br, err := s.blobs.Open(ctx, digest)
	if err != nil {
		return nil, err
	}
	defer br.Close()
	return io.ReadAll(io.LimitReader(br, length))
}

// RefreshOnline renews the timestamp, and the snapshot with it when the
// snapshot is near expiry, once less than half the lifetime is left. It
// reports whether it wrote anything.
func (s *Service) RefreshOnline(ctx context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Another replica writing the repository (a push) signs the online
	// roles itself; the next refresh comes an interval later.
	ctx, release, err := s.hold(ctx)
	if errors.Is(err, errBusy) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer release()
	// A pending push holds the next snapshot and timestamp versions.
	if err := s.finishPendingPush(ctx); err != nil {
		return false, err
	}
	st, err := s.State(ctx)
	if err != nil {
		return false, err
	}
	if len(st.Roots) == 0 {
		return false, ErrNoRepository
	}
	tsDoc, err := s.store.Doc(ctx, Repo, metadata.TIMESTAMP, 0)
	if err != nil {
		return false, err
	}
	snapDoc, err := s.store.Doc(ctx, Repo, metadata.SNAPSHOT, 0)
	if err != nil {
		return false, err
	}
	ts, err := metadata.Timestamp().FromBytes(tsDoc.Data)
	if err != nil {
		return false, err
	}
	snap, err := metadata.Snapshot().FromBytes(snapDoc.Data)
	if err != nil {
		return false, err
	}
	now := s.now()
	snapStale := snap.Signed.Expires.Sub(now) < s.expiry.Snapshot/2
	tsStale := ts.Signed.Expires.Sub(now) < s.expiry.Timestamp/2
	if !snapStale && !tsStale {
		return false, nil
	}
	root, err := metadata.Root().FromBytes(st.Roots[len(st.Roots)-1])
	if err != nil {
		return false, err
	}
	var docs []store.Doc
	snapBytes, snapV := snapDoc.Data, snapDoc.Version
	if snapStale {
		var pinned []onlineroles.Role
		for name, mf := range snap.Signed.Meta {
			role := strings.TrimSuffix(name, ".json")
			d, err := s.store.Doc(ctx, Repo, role, mf.Version)
			if err != nil {
				return false, err
			}
			pinned = append(pinned, pin(role, mf.Version, d.Data))
		}
		snapV++
		var tsBytes []byte
		snapBytes, tsBytes, err = s.sign(root, pinned, snapV, tsDoc.Version+1, now)
		if err != nil {
			return false, err
		}
		docs = append(docs, store.Doc{Repo: Repo, Role: metadata.SNAPSHOT, Version: snapV, Data: snapBytes},
			store.Doc{Repo: Repo, Role: metadata.TIMESTAMP, Version: tsDoc.Version + 1, Data: tsBytes})
	} else {
		tsBytes, err := onlineroles.SignTimestamp(root, snapBytes, snapV, tsDoc.Version+1, now.Add(s.expiry.Timestamp), s.online)
		if err != nil {
			return false, err
		}
		docs = append(docs, store.Doc{Repo: Repo, Role: metadata.TIMESTAMP, Version: tsDoc.Version + 1, Data: tsBytes})
	}
	if err := s.fenced(); err != nil {
		return false, err
	}
	if err := s.store.PutDocs(ctx, docs...); err != nil {
		return false, err
	}
	s.logger.Info("renewed online metadata", "snapshot", snapStale, "timestamp_version", tsDoc.Version+1)
	return true, nil
}
