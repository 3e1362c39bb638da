// Package server is rampart-server's HTTP service: the hosted TUF image
// repository (pushes of offline-signed metadata, online snapshot and
// timestamp signing, static-style serving that any CDN can cache), the
// transparency log, the audit log and the operator API with role-checked
// tokens. It is plain net/http over narrow interfaces: a store.Store for
// metadata, a blob.Store for payloads, a tlog.Log.
//
// Trust decisions are not made here: imagerepo decides what a push may
// change, snapshot signs the online roles, logproof defines what is logged.
// This package sequences them so that nothing is half-applied: blobs are
// content-addressed and verified on upload, and a push's metadata (roles,
// snapshot, timestamp) is committed in one store transaction after its
// releases are in the log.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/tlog"
)

// Limits on request bodies.
const (
	maxJSONBody = 32 << 20
	maxBlob     = 64 << 30
)

// Expiry of the online roles the server signs; the refresher renews each
// when less than half of its lifetime is left.
type Expiry struct {
	Snapshot  time.Duration
	Timestamp time.Duration
}

// DefaultExpiry matches the offline repository's defaults.
var DefaultExpiry = Expiry{Snapshot: 7 * 24 * time.Hour, Timestamp: 24 * time.Hour}

// Config wires a Server.
type Config struct {
	Store store.Store
	Blobs blob.Store
	Log   *tlog.Log
	// LogVerifierKey is the log's note verifier key, published to clients.
	LogVerifierKey string
	// Online keys of the image repository.
	Snapshot, Timestamp keys.Signer
	// DeviceCA issues device client certificates at enrollment.
	DeviceCA *pki.CA
	// DirectorKeys are the director's online keys.
	DirectorKeys director.Keys
	Expiry       Expiry
	Logger       *slog.Logger
	Now          func() time.Time
}

// Server serves the API. It is safe for concurrent use.
type Server struct {
	store          store.Store
	blobs          blob.Store
	log            *tlog.Log
	logVerifierKey string
	online         []keys.Signer
	expiry         Expiry
	logger         *slog.Logger
	now            func() time.Time
	metrics        *metrics
	deviceCA       *pki.CA
	directorKeys   director.Keys
	directorRoot   atomic.Pointer[directorRootState]
	directors      directorCache
	// pushMu serialises writers of the image repository within a
	// process; the store's version conflicts protect across replicas.
	pushMu sync.Mutex
}

// New returns a Server.
func New(c Config) (*Server, error) {
	if c.Store == nil || c.Blobs == nil || c.Log == nil || c.Snapshot == nil || c.Timestamp == nil {
		return nil, errors.New("server: store, blobs, log and online keys are required")
	}
	if c.Expiry == (Expiry{}) {
		c.Expiry = DefaultExpiry
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	s := &Server{store: c.Store, blobs: c.Blobs, log: c.Log, logVerifierKey: c.LogVerifierKey, online: []keys.Signer{c.Snapshot, c.Timestamp},
		expiry: c.Expiry, logger: c.Logger, now: c.Now, metrics: newMetrics(), deviceCA: c.DeviceCA, directorKeys: c.DirectorKeys}
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rampart_enrolled_devices", Help: "Enrolled devices, revoked ones included.",
	}, func() float64 {
		n, err := s.store.CountDevices(context.Background())
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	return s, nil
}

// Handler returns the HTTP handler with every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Operator API.
	mux.HandleFunc("GET /api/v1/keys", s.handleKeys)
	mux.HandleFunc("PUT /api/v1/blobs/{digest}", s.requireRole(s.handlePutBlob, RoleReleaseManager))
	mux.HandleFunc("HEAD /api/v1/blobs/{digest}", s.requireRole(s.handleHeadBlob, RoleReleaseManager))
	mux.HandleFunc("POST /api/v1/repo/push", s.requireRole(s.handlePush, RoleReleaseManager))
	mux.HandleFunc("GET /api/v1/repo/versions", s.requireRole(s.handleVersions, RoleReleaseManager, RoleOperator, RoleAuditor))
	mux.HandleFunc("POST /api/v1/tokens", s.requireRole(s.handleCreateToken))
	mux.HandleFunc("GET /api/v1/audit", s.requireRole(s.handleAudit, RoleAuditor))
	mux.HandleFunc("GET /api/v1/log/proof/{target...}", s.handleLogProof)
	mux.HandleFunc("GET /api/v1/log/consistency", s.handleLogConsistency)
	mux.HandleFunc("POST /api/v1/devices/tokens", s.requireRole(s.handleEnrollToken, RoleOperator))
	mux.HandleFunc("GET /api/v1/devices/{id}", s.requireRole(s.handleGetDevice, RoleOperator, RoleAuditor))
	mux.HandleFunc("POST /api/v1/devices/{id}/revoke", s.requireRole(s.handleRevokeDevice, RoleOperator))
	mux.HandleFunc("POST /api/v1/deploy", s.requireRole(s.handleDeploy, RoleOperator))
	// Device API: enrollment by one-time token, then mTLS.
	mux.HandleFunc("POST /api/v1/enroll", s.handleEnroll)
	mux.HandleFunc("POST /api/v1/device/report", s.handleReport)
	mux.HandleFunc("POST /api/v1/director/root", s.requireRole(s.handleDirectorRoot))
	mux.HandleFunc("GET /api/v1/director/root", s.requireRole(s.handleDirectorRootVersion, RoleReleaseManager, RoleOperator, RoleAuditor))
	mux.HandleFunc("GET /director/{file}", s.handleDirector)
	// The published repository and log: public, cacheable.
	mux.HandleFunc("GET /repo/{file}", s.handleMetadata)
	mux.HandleFunc("GET /repo/targets/{path...}", s.handleTarget)
	mux.Handle("GET /log/", http.StripPrefix("/log", tlog.Handler(s.log.Dir())))
	// Operations.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.metrics.handler())
	return s.metrics.instrument(requestID(mux))
}

// requestID gives every request an id (the client's X-Request-Id when it
// is sane, else a random one), returned in the response and recorded in
// audit entries, so an operator can match a refusal to its audit record.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if len(id) == 0 || len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c < '!' || c > '~' }) {
			b := make([]byte, 8)
			rand.Read(b)
			id = hex.EncodeToString(b)
			r.Header.Set("X-Request-Id", id)
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if _, err := s.store.CountDevices(r.Context()); err != nil {
		writeError(w, errorf(http.StatusServiceUnavailable, "not-ready", "the store is unavailable"))
		return
	}
	w.Write([]byte("ready\n"))
}

// audit appends an audit entry; a failure to audit is logged loudly but
// does not undo the action it records (the action is already committed).
func (s *Server) audit(r *http.Request, actor, action, subject, outcome string, detail map[string]string) {
	_, err := s.store.AppendAudit(r.Context(), audit.Entry{
		Time: s.now(), Actor: actor, Action: action, Subject: subject,
		RequestID: r.Header.Get("X-Request-Id"), Outcome: outcome, Detail: detail,
	})
	if err != nil {
		s.logger.Error("audit append failed", "action", action, "subject", subject, "err", err)
	}
}

// Run refreshes the online roles until ctx ends: every interval it renews
// the timestamp (and the snapshot) when less than half its lifetime is
// left, so clients never see the repository expire while the server runs.
func (s *Server) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.RefreshOnline(ctx); err != nil && !errors.Is(err, errNoRepository) {
			s.logger.Error("refreshing timestamp", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}

type tokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// handleCreateToken creates an operator token; the secret is returned once.
func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if !slices.Contains(Roles, req.Role) {
		writeError(w, errorf(http.StatusBadRequest, "bad-role", "role %q is not one of %s", req.Role, strings.Join(Roles, ", ")))
		return
	}
	if !tokenNameRE.MatchString(req.Name) {
		writeError(w, errorf(http.StatusBadRequest, "bad-name", "token name %q must be 1-64 of a-z 0-9 . _ -", req.Name))
		return
	}
	secret, hash := NewToken()
	err := s.store.CreateOperatorToken(r.Context(), store.OperatorToken{Hash: hash, Name: req.Name, Role: req.Role, CreatedAt: s.now()})
	if errors.Is(err, store.ErrExists) {
		writeError(w, errorf(http.StatusConflict, "exists", "a token named %s exists; revoke it or pick another name", req.Name))
		return
	} else if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.audit(r, "token:"+operator(r.Context()).Name, "create-token", req.Name, "ok", map[string]string{"role": req.Role})
	writeJSON(w, http.StatusCreated, map[string]string{"name": req.Name, "role": req.Role, "token": secret})
}

var tokenNameRE = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// handleAudit exports audit entries as JSON lines, after ?after=SEQ, at
// most ?limit=N (default and maximum 10000).
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 || limit > 10000 {
		limit = 10000
	}
	es, err := s.store.AuditEntries(r.Context(), after, limit)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	for _, e := range es {
		enc.Encode(e)
	}
}
