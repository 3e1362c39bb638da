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
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/hostedrepo"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

const imageRepo = hostedrepo.Repo

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) {
	op := operator(r.Context())
	var req hostedrepo.Push
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

// push checks the pushed target names and hands the push to the hosted
// repository.
func (s *Server) push(r *http.Request, req hostedrepo.Push) (*hostedrepo.PushResult, error) {
	if err := checkTargetNames(req); err != nil {
		return nil, err
	}
	return s.images.Push(r.Context(), req, hostedrepo.Origin{RequestID: r.Header.Get("X-Request-Id"), Actor: operatorActor(r)})
}

// servableVersion reports whether a version in a file name is within
// onlineroles.MaxVersion: the server neither signs nor serves versions past
// it (a file the store holds beyond it was not signed by this server).
func servableVersion(v string) bool {
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n >= 1 && n <= onlineroles.MaxVersion
}

// RefreshOnline renews the image repository's online roles when they
// near expiry (hostedrepo.Service.RefreshOnline).
func (s *Server) RefreshOnline(ctx context.Context) (bool, error) {
	return s.images.RefreshOnline(ctx)
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
	st, err := s.images.State(r.Context())
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
	writeJSON(w, http.StatusOK, api.VersionsResponse{Versions: out})
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
	writeJSON(w, http.StatusOK, logproof.Envelope{Statement: e.Leaf, Proof: p})
}

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
	writeJSON(w, http.StatusOK, api.Consistency{Hashes: proof})
}

// handleKeys publishes the online public keys (for the offline root
// ceremony) and the log's verifier key (for devices and monitors).
func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	out := api.Keys{LogOrigin: s.log.Origin(), LogKey: s.logVerifierKey}
	for _, k := range []struct {
		sg  keys.Signer
		dst *string
	}{{s.online[0], &out.Snapshot}, {s.online[1], &out.Timestamp}, {first(s.directorKeys.Targets), &out.DirectorTargets},
		{first(s.directorKeys.Snapshot), &out.DirectorSnapshot}, {first(s.directorKeys.Timestamp), &out.DirectorTimestamp}} {
		if k.sg == nil {
			continue
		}
		b, err := keys.MarshalPublic(k.sg.Public())
		if err != nil {
			writeError(w, toAPIError(err))
			return
		}
		*k.dst = string(b)
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

// catalog gives the fleet service the published metadata.
type catalog struct{ images *hostedrepo.Service }

func (c catalog) Published(ctx context.Context) (fleet.Published, error) {
	st, err := c.images.State(ctx)
	if errors.Is(err, hostedrepo.ErrNoRepository) {
		return fleet.Published{}, nil // nothing is published yet
	}
	if err != nil {
		return fleet.Published{}, err
	}
	pub := fleet.Published{Targets: st.Targets, Roles: st.Roles}
	if len(st.Roots) > 0 {
		pub.Root = st.Roots[len(st.Roots)-1]
	}
	return pub, nil
}
