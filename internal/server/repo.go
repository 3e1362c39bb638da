package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/imagerepo"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/snapshot"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/verify"
)

const imageRepo = "image"

var errNoRepository = errors.New("the image repository has no root yet")

// loadState reads the image repository's current signed metadata.
func (s *Server) loadState(ctx context.Context) (imagerepo.State, error) {
	st := imagerepo.State{Roles: map[string][]byte{}}
	for v := int64(1); ; v++ {
		d, err := s.store.Doc(ctx, imageRepo, metadata.ROOT, v)
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
	t, err := s.store.Doc(ctx, imageRepo, metadata.TARGETS, 0)
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
			doc, err := s.store.Doc(ctx, imageRepo, d.Name, 0)
			if err != nil {
				return st, err
			}
			st.Roles[d.Name] = doc.Data
		}
	}
	return st, nil
}

type pushRequest struct {
	Roots   [][]byte          `json:"roots,omitempty"`
	Targets []byte            `json:"targets,omitempty"`
	Roles   map[string][]byte `json:"roles,omitempty"`
}

type pushResponse struct {
	Versions map[string]int64 `json:"versions"`
	Releases []string         `json:"releases"`
}

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) {
	op := operator(r.Context())
	var req pushRequest
	if err := decodeJSON(w, r, maxJSONBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	resp, err := s.push(r, req)
	if err != nil {
		ae := toAPIError(err)
		s.metrics.pushes.WithLabelValues("refused").Inc()
		if ae.Status < 500 {
			s.metrics.refusals.WithLabelValues(ae.Code).Inc()
			s.refuse(w, r, "token:"+op.Name, "push", "image", ae, map[string]string{"message": ae.Message})
			return
		}
		s.logger.Error("push failed", "request_id", r.Header.Get("X-Request-Id"), "err", err)
		writeError(w, ae)
		return
	}
	s.metrics.pushes.WithLabelValues("accepted").Inc()
	writeJSON(w, http.StatusOK, resp)
}

// push applies a push. Everything that can refuse it happens first:
// check it (imagerepo), refuse a release name the log already gives other
// content, check its blobs, and sign the online roles over the result.
// Then the push is made durable as pending (everything needed to finish
// it), its releases are logged, and its metadata, chunks and audit entry
// commit in one transaction that also clears the pending record (see
// finishPush). So the log never names a release that the repository does
// not publish, except while a push is pending, and a pending push is
// finished before anything else changes the repository: by this request,
// or after an interruption at the server's start, its next push or its
// next refresh.
func (s *Server) push(r *http.Request, req pushRequest) (*pushResponse, error) {
	ctx := r.Context()
	if err := checkTargetNames(req); err != nil {
		return nil, err
	}
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if err := s.finishPendingPush(ctx); err != nil {
		return nil, err
	}
	cur, err := s.loadState(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkLogged(ctx, req); err != nil {
		return nil, err
	}
	now := s.now()
	acc, err := imagerepo.Accept(cur, imagerepo.Push{Roots: req.Roots, Targets: req.Targets, Roles: req.Roles}, now)
	if err != nil {
		return nil, err
	}
	// A root that names a log key names this server's: devices verify the
	// log under it (docs/incident-response.md, rotating the log key).
	if vk, ok := acc.Root.Signed.UnrecognizedFields[logproof.RootField]; ok && vk != s.logVerifierKey {
		return nil, errorf(http.StatusUnprocessableEntity, "log-key", "root version %d names log key %.200v, this server's is %s (rampart server keys writes it)", acc.Root.Signed.Version, vk, s.logVerifierKey)
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
		for _, b := range []imagerepo.Blob{rel.Image, rel.Index} {
			n, err := s.blobs.Stat(ctx, b.SHA256)
			if errors.Is(err, blob.ErrNotFound) {
				return nil, errorf(http.StatusUnprocessableEntity, "missing-blob", "blob %s (%d bytes) of release %s is not uploaded; PUT it to /api/v1/blobs/%s first", b.SHA256, b.Length, rel.Target, b.SHA256)
			}
			if err != nil {
				return nil, err
			}
			if n != b.Length {
				return nil, errorf(http.StatusUnprocessableEntity, "blob-mismatch", "blob %s is %d bytes, release %s says %d", b.SHA256, n, rel.Target, b.Length)
			}
		}
		ix, err := s.readBlob(r, rel.Index.SHA256, rel.Index.Length)
		if err != nil {
			return nil, err
		}
		index, err := imagerepo.Index(rel, role.Signed.Targets[rel.Target], ix)
		if err != nil {
			return nil, errorf(http.StatusUnprocessableEntity, "bad-index", "release %s: %v", rel.Target, err)
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
		docs = append(docs, store.Doc{Repo: imageRepo, Role: metadata.ROOT, Version: int64(len(cur.Roots) + i + 1), Data: raw})
	}
	pinned := []snapshot.Role{{Name: metadata.TARGETS, Version: acc.Versions[metadata.TARGETS], Data: acc.State.Targets}}
	for name, raw := range acc.State.Roles {
		pinned = append(pinned, snapshot.Role{Name: name, Version: acc.Versions[name], Data: raw})
	}
	for _, name := range acc.Changed {
		data := acc.State.Targets
		if name != metadata.TARGETS {
			data = acc.State.Roles[name]
		}
		docs = append(docs, store.Doc{Repo: imageRepo, Role: name, Version: acc.Versions[name], Data: data})
	}
	snapV, tsV, err := s.onlineVersions(ctx)
	if err != nil {
		return nil, err
	}
	snap, ts, err := snapshot.Sign(snapshot.Options{
		Root: acc.Root, Roles: pinned, SnapshotVersion: snapV + 1, TimestampVersion: tsV + 1,
		SnapshotExpires: now.Add(s.expiry.Snapshot), TimestampExpires: now.Add(s.expiry.Timestamp), Signers: s.online,
	})
	if err != nil {
		return nil, errorf(http.StatusUnprocessableEntity, "online-keys", "cannot sign snapshot and timestamp: %v; the root must name this server's online keys (rampart server keys)", err)
	}
	docs = append(docs,
		store.Doc{Repo: imageRepo, Role: metadata.SNAPSHOT, Version: snapV + 1, Data: snap},
		store.Doc{Repo: imageRepo, Role: metadata.TIMESTAMP, Version: tsV + 1, Data: ts})
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
		RequestID: r.Header.Get("X-Request-Id"), Actor: operatorActor(r), Detail: detail,
		Docs: docs, Chunks: chunks, Statements: stmts, LogSize: logSize,
		Response: pushResponse{Versions: acc.Versions, Releases: logged},
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

func (s *Server) onlineVersions(ctx context.Context) (snap, ts int64, err error) {
	if d, err := s.store.Doc(ctx, imageRepo, metadata.SNAPSHOT, 0); err == nil {
		snap = d.Version
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, 0, err
	}
	if d, err := s.store.Doc(ctx, imageRepo, metadata.TIMESTAMP, 0); err == nil {
		ts = d.Version
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, 0, err
	}
	return snap, ts, nil
}

// servableVersion reports whether a version in a file name is within
// snapshot.MaxVersion: the server neither signs nor serves versions past
// it (a file the store holds beyond it was not signed by this server).
func servableVersion(v string) bool {
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n >= 1 && n <= snapshot.MaxVersion
}

func (s *Server) readBlob(r *http.Request, digest string, length int64) ([]byte, error) {
	br, err := s.blobs.Open(r.Context(), digest)
	if err != nil {
		return nil, err
	}
	defer br.Close()
	return io.ReadAll(io.LimitReader(br, length))
}

// RefreshOnline renews the timestamp, and the snapshot with it when the
// snapshot is near expiry, once less than half the lifetime is left. It
// reports whether it wrote anything.
func (s *Server) RefreshOnline(ctx context.Context) (bool, error) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	// A pending push holds the next snapshot and timestamp versions.
	if err := s.finishPendingPush(ctx); err != nil {
		return false, err
	}
	st, err := s.loadState(ctx)
	if err != nil {
		return false, err
	}
	if len(st.Roots) == 0 {
		return false, errNoRepository
	}
	tsDoc, err := s.store.Doc(ctx, imageRepo, metadata.TIMESTAMP, 0)
	if err != nil {
		return false, err
	}
	snapDoc, err := s.store.Doc(ctx, imageRepo, metadata.SNAPSHOT, 0)
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
		var pinned []snapshot.Role
		for name, mf := range snap.Signed.Meta {
			role := strings.TrimSuffix(name, ".json")
			d, err := s.store.Doc(ctx, imageRepo, role, mf.Version)
			if err != nil {
				return false, err
			}
			pinned = append(pinned, snapshot.Role{Name: role, Version: mf.Version, Data: d.Data})
		}
		snapV++
		var tsBytes []byte
		snapBytes, tsBytes, err = snapshot.Sign(snapshot.Options{Root: root, Roles: pinned, SnapshotVersion: snapV, TimestampVersion: tsDoc.Version + 1,
			SnapshotExpires: now.Add(s.expiry.Snapshot), TimestampExpires: now.Add(s.expiry.Timestamp), Signers: s.online})
		if err != nil {
			return false, err
		}
		docs = append(docs, store.Doc{Repo: imageRepo, Role: metadata.SNAPSHOT, Version: snapV, Data: snapBytes},
			store.Doc{Repo: imageRepo, Role: metadata.TIMESTAMP, Version: tsDoc.Version + 1, Data: tsBytes})
	} else {
		tsBytes, err := snapshot.SignTimestamp(root, snapBytes, snapV, tsDoc.Version+1, now.Add(s.expiry.Timestamp), s.online)
		if err != nil {
			return false, err
		}
		docs = append(docs, store.Doc{Repo: imageRepo, Role: metadata.TIMESTAMP, Version: tsDoc.Version + 1, Data: tsBytes})
	}
	if err := s.store.PutDocs(ctx, docs...); err != nil {
		return false, err
	}
	s.logger.Info("renewed online metadata", "snapshot", snapStale, "timestamp_version", tsDoc.Version+1)
	return true, nil
}

var metaFileRE = regexp.MustCompile(`^([1-9][0-9]{0,18})\.([a-z0-9][a-z0-9-]{0,62})\.json$`)

// handleMetadata serves N.ROLE.json and timestamp.json. Versioned files
// never change, so CDNs may cache them forever; timestamp.json is the one
// name clients poll.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	var d store.Doc
	var err error
	if file == "timestamp.json" {
		d, err = s.store.Doc(r.Context(), imageRepo, metadata.TIMESTAMP, 0)
		w.Header().Set("Cache-Control", "public, max-age=60")
	} else if m := metaFileRE.FindStringSubmatch(file); m != nil && m[2] != metadata.TIMESTAMP && servableVersion(m[1]) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		d, err = s.store.Doc(r.Context(), imageRepo, m[2], v)
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		writeError(w, errorf(http.StatusNotFound, "not-found", "no metadata file %q", file))
		return
	}
	if err != nil {
		w.Header().Del("Cache-Control")
		writeError(w, toAPIError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(d.Data)))
	w.Write(d.Data)
}

// handleTarget serves a published payload or chunk index by its
// consistent-snapshot name, with Range support. Only content the current
// metadata names is served.
//
// A name once found published, its stored bytes checked against the
// hash it names, is remembered (servedTargets), so the chunk requests of a
// download (one per chunk) cost no store read, no parse of the product's
// metadata and no hashing. That stays safe when a later version drops the
// target: the name is its content hash, so the bytes can never change,
// and clients accept only what their verified metadata names, which is
// also why a CDN may cache it for a year. Bytes that do not match (a
// corrupted disk) are never served: 500 payload-corrupt, checked again at
// the next request.
func (s *Server) handleTarget(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("path")
	dir, file, ok := cutLast(p, "/")
	hash, name, ok2 := strings.Cut(file, ".")
	if !ok || !ok2 || len(hash) != 64 {
		writeError(w, errorf(http.StatusNotFound, "not-found", "no target %q", p))
		return
	}
	if !s.servedTargets.has(p) {
		if ae := s.targetPublished(r.Context(), p, dir, hash, name); ae != nil {
			writeError(w, ae)
			return
		}
		// Concurrent first requests for one target wait for one check.
		// The check goes on if the first client leaves: others wait for it.
		err := s.servedTargets.check(p, func() error { return s.checkBlob(context.WithoutCancel(r.Context()), hash) })
		if errors.Is(err, errBlobCorrupt) {
			s.logger.Error("payload does not match its hash; not served", "target", p, "blob", hash)
			writeError(w, errorf(http.StatusInternalServerError, "payload-corrupt", "the stored bytes of %s do not match its hash; the operator must restore blob %s", p, hash))
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	br, err := s.blobs.Open(r.Context(), hash)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	defer br.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("ETag", `"`+hash+`"`)
	http.ServeContent(w, r, "", time.Time{}, br)
}

// targetPublished returns nil when p (DIR/HASH.NAME) is the consistent-
// snapshot name of a payload or chunk index that the current metadata
// names, and the error to answer otherwise.
func (s *Server) targetPublished(ctx context.Context, p, dir, hash, name string) *apiError {
	notFound := errorf(http.StatusNotFound, "not-found", "no target %q", p)
	isIndex := strings.HasSuffix(name, release.IndexSuffix)
	target := dir + "/" + strings.TrimSuffix(name, release.IndexSuffix)
	product, _, _, err := release.ParseTargetPath(target)
	if err != nil {
		return notFound
	}
	role, err := s.productRole(ctx, product)
	if err != nil {
		return notFound
	}
	tf, ok := role.Signed.Targets[target]
	if !ok {
		return notFound
	}
	want := tf.Hashes["sha256"].String()
	if isIndex {
		m, err := release.FromTarget(target, tf)
		if err != nil {
			return toAPIError(err)
		}
		want = m.Index.SHA256
	}
	if hash != want {
		return notFound
	}
	return nil
}

// handleChunk serves a chunk of a published release by its own SHA-256,
// with Range support and immutable caching: the same chunk in several
// releases has one URL, so a CDN or mirror caches it once. The bytes are
// a range of the payload blob that the chunk index placed them in; they
// are checked against the hash the first time this process serves them
// (an index that lies about its payload is refused there, not passed on).
func (s *Server) handleChunk(w http.ResponseWriter, r *http.Request) {
	hash := r.PathValue("hash")
	if blob.CheckDigest(hash) != nil {
		writeError(w, errorf(http.StatusNotFound, "not-found", "no chunk %q: chunks are named by their lowercase hex SHA-256", hash))
		return
	}
	ref, err := s.store.Chunk(r.Context(), hash)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, errorf(http.StatusNotFound, "not-found", "no published release has chunk %s", hash))
		return
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	br, err := s.blobs.Open(r.Context(), ref.Blob)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer br.Close()
	var content io.ReadSeeker = io.NewSectionReader(br, ref.Offset, ref.Length)
	if !s.checkedChunks.has(hash) {
		b := make([]byte, ref.Length)
		if _, err := io.ReadFull(content, b); err != nil {
			s.fail(w, r, wrapf(err, "reading chunk %s from blob %s", hash, ref.Blob))
			return
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hash {
			s.logger.Error("chunk does not match its hash; not served", "chunk", hash, "blob", ref.Blob, "offset", ref.Offset)
			writeError(w, errorf(http.StatusInternalServerError, "chunk-corrupt", "the stored bytes of chunk %s do not match its hash; fetch the release's payload instead", hash))
			return
		}
		s.checkedChunks.add(hash)
		content = bytes.NewReader(b)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("ETag", `"`+hash+`"`)
	http.ServeContent(w, r, "", time.Time{}, content)
}

var errBlobCorrupt = errors.New("stored blob does not match its hash")

// checkBlob hashes a stored blob: errBlobCorrupt when the bytes are not
// the ones its name promises.
func (s *Server) checkBlob(ctx context.Context, digest string) error {
	br, err := s.blobs.Open(ctx, digest)
	if err != nil {
		return err
	}
	defer br.Close()
	h := sha256.New()
	if _, err := io.Copy(h, br); err != nil {
		return wrapf(err, "reading blob %s", digest)
	}
	if hex.EncodeToString(h.Sum(nil)) != digest {
		return fmt.Errorf("blob %s: %w", digest, errBlobCorrupt)
	}
	return nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}

func (s *Server) handlePutBlob(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	length, err := strconv.ParseInt(r.URL.Query().Get("length"), 10, 64)
	if err != nil || length < 0 || length > maxBlob {
		writeError(w, errorf(http.StatusBadRequest, "bad-length", "give the blob's exact length as ?length=N (at most %d)", int64(maxBlob)))
		return
	}
	if r.ContentLength >= 0 && r.ContentLength != length {
		writeError(w, errorf(http.StatusBadRequest, "bad-length", "Content-Length %d differs from length=%d", r.ContentLength, length))
		return
	}
	body := http.MaxBytesReader(w, r.Body, length+1)
	if err := s.blobs.Put(r.Context(), digest, length, body); err != nil {
		s.fail(w, r, err)
		return
	}
	// The blob store is not the metadata store, so this entry follows the
	// upload; a blob is inert until a push names it, and pushes are
	// audited atomically.
	s.audit(r, "token:"+operator(r.Context()).Name, "upload-blob", digest, "ok", map[string]string{"length": strconv.FormatInt(length, 10)})
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) handleHeadBlob(w http.ResponseWriter, r *http.Request) {
	n, err := s.blobs.Stat(r.Context(), r.PathValue("digest"))
	if err != nil {
		w.WriteHeader(toAPIError(err).Status)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
}

func (s *Server) handleVersions(w http.ResponseWriter, r *http.Request) {
	st, err := s.loadState(r.Context())
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out := map[string]int64{"root": int64(len(st.Roots))}
	if st.Targets != nil {
		if m, err := metadata.Targets().FromBytes(st.Targets); err == nil {
			out["targets"] = m.Signed.Version
		}
	}
	for name, raw := range st.Roles {
		if m, err := metadata.Targets().FromBytes(raw); err == nil {
			out[name] = m.Signed.Version
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": out})
}

func (s *Server) handleLogProof(w http.ResponseWriter, r *http.Request) {
	target := r.PathValue("target")
	e, err := s.store.LogEntry(r.Context(), target)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	cp, err := s.log.Checkpoint(r.Context())
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	p, err := s.log.Prove(r.Context(), e.Index, cp)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"statement": string(e.Leaf), "proof": p})
}

// handleKeys publishes the online public keys (for the offline root
// ceremony) and the log's verifier key (for devices and monitors).
// handleLogConsistency proves that the log at size ?to= extends the log at
// size ?from=, for clients that hold an older checkpoint.
func (s *Server) handleLogConsistency(w http.ResponseWriter, r *http.Request) {
	from, err1 := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
	to, err2 := strconv.ParseUint(r.URL.Query().Get("to"), 10, 64)
	if err1 != nil || err2 != nil || from > to {
		writeError(w, errorf(http.StatusBadRequest, "bad-range", "give ?from=OLD&to=NEW tree sizes with OLD <= NEW"))
		return
	}
	proof, err := s.log.ConsistencyProof(r.Context(), from, to)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "bad-range", "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"hashes": proof})
}

func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	out := map[string]string{"log_origin": s.log.Origin(), "log_key": s.logVerifierKey}
	for role, sg := range map[string]keys.Signer{"snapshot": s.online[0], "timestamp": s.online[1],
		"director-targets": first(s.directorKeys.Targets), "director-snapshot": first(s.directorKeys.Snapshot), "director-timestamp": first(s.directorKeys.Timestamp)} {
		if sg == nil {
			continue
		}
		b, err := keys.MarshalPublic(sg.Public())
		if err != nil {
			writeError(w, toAPIError(err))
			return
		}
		out[role] = string(b)
	}
	writeJSON(w, http.StatusOK, out)
}

func first(ss []keys.Signer) keys.Signer {
	if len(ss) == 0 {
		return nil
	}
	return ss[0]
}

// productRole returns the latest published metadata of a product's role.
func (s *Server) productRole(ctx context.Context, product string) (*metadata.Metadata[metadata.TargetsType], error) {
	doc, err := s.store.Doc(ctx, imageRepo, product, 0)
	if err != nil {
		return nil, err
	}
	return metadata.Targets().FromBytes(doc.Data)
}
