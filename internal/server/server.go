// Package server is rampart-server's HTTP layer: routes, authentication
// (role-checked operator tokens, device mTLS), request decoding, error
// mapping and metrics, over the services that own the behaviour. The
// hosted TUF image repository (pushes of offline-signed metadata, online
// snapshot and timestamp signing, the pending-push protocol with the
// transparency log) is package hostedrepo, each device's director
// repository package hosteddirector; this package serves their
// metadata (the image repository's static-style: any CDN can cache it),
// the transparency log, the audit log and the operator API. It is plain
// net/http over narrow interfaces: a store.Store for metadata, a
// blob.Store for payloads, a tlog.Log. Opening them from a data
// directory is package datadir's job.
//
// Trust decisions are not made here: pushaccept decides what a push may
// change, snapshot signs the online roles, logproof defines what is
// logged, hostedrepo sequences them so that nothing is half-applied.
// Every action that changes the store commits in the same transaction as
// the audit entry that records it (atomically), so the audit log and the
// state it describes cannot disagree.
//
// Devices enroll with a one-time token or a manufacturer certificate, then
// use mTLS; whether a device certificate may still be used is decided at
// the TLS handshake from memory (deviceGate).
package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/dashboard"
	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/hosteddirector"
	"github.com/rampartfw/rampart/internal/hostedrepo"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/lease"
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
	// ManufacturerCAs, when set, lets a device enroll without a token by
	// presenting a certificate chain from one of these CAs whose subject
	// names the device (see handleEnroll). Nil disables it.
	ManufacturerCAs *x509.CertPool
	// DirectorKeys are the director's online keys.
	DirectorKeys director.Keys
	// PreviousOnline and PreviousDirectorKeys are the online keys a
	// rotation replaced (rampart-server keys rotate). The server signs
	// with them only while the root still names them, so that it keeps
	// signing between a rotation and the new root's push; once a root no
	// longer names them they are never used.
	PreviousOnline       []keys.Signer
	PreviousDirectorKeys director.Keys
	Expiry               Expiry
	// Limits bound slow clients and requests without credentials; zero
	// fields take DefaultLimits.
	Limits Limits
	// Retention bounds how long the audit log and unreferenced blobs are
	// kept; zero fields take DefaultRetention.
	Retention Retention
	// BlobLimits bound the blob store datadir.Open opens (quota, disk
	// reserve); see DefaultBlobLimits. Ignored by New, which takes its
	// blob store ready-made.
	BlobLimits *blob.Limits
	// DataDir, when set, is probed for writability by /readyz.
	DataDir string
	// ReplicaID names this server among replicas over one store, as the
	// holder of leases (package lease); empty takes lease.NewHolderID().
	ReplicaID string
	// LeaseTTL is the lifetime of the leases this server takes (the
	// background work's, the repository's): a replica that dies holding
	// one is replaced within LeaseTTL and a third of it. Zero takes
	// lease.DefaultTTL.
	LeaseTTL time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
}

// BackgroundLease is the name of the lease whose holder does the
// background work that must happen once across replicas (Run).
const BackgroundLease = "background"

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
	manufacturers  *x509.CertPool
	gate           *deviceGate
	directorKeys   director.Keys
	// previousDirectorKeys: see Config.PreviousDirectorKeys.
	previousDirectorKeys director.Keys
	// directors is the director service: the current director root and
	// each device's director repository.
	directors *hosteddirector.Service
	// fleet is the fleet service: enrollment, devices, reports,
	// deployments.
	fleet *fleet.Service
	// servedTargets holds the target file names (DIR/HASH.NAME) found
	// published, see handleTarget.
	servedTargets seenSet
	// checkedChunks holds the hashes of chunks whose stored bytes were
	// found to match, see handleChunk.
	checkedChunks seenSet
	// images is the hosted image repository; its lock serialises the
	// writers of the image repository and of the director's root.
	images *hostedrepo.Service
	limits Limits
	// anonymous counts requests in flight without credentials.
	anonymous *budget
	ready     *readiness
	retention Retention
	// reportBudget bounds each device's reports (Limits.ReportBurst,
	// Limits.ReportEvery); auditBudget bounds the refusals of each
	// authenticated actor that are audited one by one.
	reportBudget *keyedLimiter
	auditBudget  *keyedLimiter
	// lastBlobSweep is when ExpireBlobs last ran from Run.
	lastBlobSweep time.Time
	// background is the lease of the work done once across replicas
	// (Run); repository the image repository's (hostedrepo).
	background *lease.Lease
	// backgroundRuns counts the rounds of leased work this server did;
	// onBackground, when set (tests), is called with each round's start
	// and end.
	backgroundRuns atomic.Int64
	onBackground   func(start, end time.Time)
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
	if c.ReplicaID == "" {
		c.ReplicaID = lease.NewHolderID()
	}
	s := &Server{store: c.Store, blobs: c.Blobs, log: c.Log, logVerifierKey: c.LogVerifierKey, online: append([]keys.Signer{c.Snapshot, c.Timestamp}, c.PreviousOnline...), previousDirectorKeys: c.PreviousDirectorKeys,
		expiry: c.Expiry, logger: c.Logger, now: c.Now, metrics: newMetrics(), deviceCA: c.DeviceCA, manufacturers: c.ManufacturerCAs, directorKeys: c.DirectorKeys,
		limits: c.Limits.withDefaults(), ready: &readiness{dir: c.DataDir, logger: c.Logger}, retention: c.Retention.withDefaults(),
		background: lease.New(c.Store, BackgroundLease, c.ReplicaID, c.LeaseTTL)}
	s.images = hostedrepo.New(hostedrepo.Config{Store: c.Store, Blobs: c.Blobs, Log: c.Log, LogVerifierKey: c.LogVerifierKey, Online: s.online,
		Expiry: hostedrepo.Expiry(c.Expiry), Logger: c.Logger, Now: c.Now, Lease: lease.New(c.Store, hostedrepo.LeaseName, c.ReplicaID, c.LeaseTTL)})
	s.fleet = fleet.New(fleet.Config{Store: c.Store, Catalog: catalog{s.images}, DeviceCA: c.DeviceCA, Manufacturers: c.ManufacturerCAs, Now: c.Now,
		OnlineKeys: onlineKeyIDs(s.online, c.DirectorKeys, c.PreviousDirectorKeys), Log: c.Log, LogKey: c.LogVerifierKey})
	s.directors = hosteddirector.New(hosteddirector.Config{Store: c.Store, Keys: c.DirectorKeys, Previous: c.PreviousDirectorKeys,
		ProductRole: s.productRole, Decide: s.fleet.Decide, Now: c.Now})
	s.anonymous = &budget{max: s.limits.MaxUnauthenticated}
	s.reportBudget = newKeyedLimiter(s.limits.ReportBurst, s.limits.ReportEvery, maxTrackedIdentities)
	s.auditBudget = newKeyedLimiter(auditedRefusalBurst, auditedRefusalEvery, maxTrackedIdentities)
	s.gate = newDeviceGate(c.Store, s.metrics.gateLookups)
	if err := s.gate.load(context.Background()); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := s.images.Recover(context.Background()); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rampart_enrolled_devices", Help: "Enrolled devices, revoked ones included.",
	}, func() float64 {
		n, err := s.store.CountDevices(context.Background())
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	s.metrics.reg.MustRegister(newFleetCollector(s.fleet, c.Logger, c.Now))
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rampart_background_lease_held", Help: "1 while this replica holds the lease of the background work done once across replicas (timestamp refresh, retention, rollout advancement), else 0.",
	}, func() float64 {
		if s.background.Held() {
			return 1
		}
		return 0
	}))
	s.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "rampart_background_runs_total", Help: "Rounds of the background work done once across replicas that this replica ran.",
	}, func() float64 { return float64(s.backgroundRuns.Load()) }))
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rampart_http_unauthenticated_in_flight", Help: "Requests without credentials being served (see Limits.MaxUnauthenticated).",
	}, func() float64 { return float64(s.anonymous.n.Load()) }))
	if u, ok := s.blobs.(interface{ Usage() (int64, int64) }); ok {
		s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rampart_blob_bytes", Help: "Bytes of stored blobs.",
		}, func() float64 { b, _ := u.Usage(); return float64(b) }))
	}
	return s, nil
}

// Handler returns the HTTP handler with every route. Each route has a
// policy (routePolicy): the largest body it takes, whether its body is an
// upload, and whether it serves clients without credentials.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Every route is one of api.Routes, and every one of api.Routes is
	// registered: the wire vocabulary and docs/api.md are checked
	// against that list.
	var registered []string
	handle := func(pattern string, p routePolicy, h http.HandlerFunc) {
		registered = append(registered, pattern)
		mux.HandleFunc(pattern, s.route(p, h))
	}
	var (
		// Operator and device routes refuse a request without a
		// token or a device certificate before reading its body.
		noBody  = routePolicy{}
		small   = routePolicy{maxBody: smallBody}
		bigJSON = routePolicy{maxBody: maxJSONBody}
		public  = routePolicy{open: true}
	)
	// Operator API.
	handle("GET /api/v1/keys", public, s.handleKeys)
	handle("PUT /api/v1/blobs/{digest}", routePolicy{maxBody: maxBlob, upload: true}, s.requireRole(s.handlePutBlob, RoleReleaseManager))
	handle("HEAD /api/v1/blobs/{digest}", noBody, s.requireRole(s.handleHeadBlob, RoleReleaseManager))
	handle("POST /api/v1/repo/push", bigJSON, s.requireRole(s.handlePush, RoleReleaseManager))
	handle("GET /api/v1/repo/versions", noBody, s.requireRole(s.handleVersions, RoleReleaseManager, RoleOperator, RoleAuditor))
	handle("POST /api/v1/tokens", small, s.requireRole(s.handleCreateToken))
	handle("GET /api/v1/tokens", noBody, s.requireRole(s.handleListTokens))
	handle("POST /api/v1/tokens/{name}/role", small, s.requireRole(s.handleSetTokenRole))
	handle("POST /api/v1/tokens/{name}/revoke", small, s.requireRole(s.handleRevokeToken))
	handle("GET /api/v1/audit", noBody, s.requireRole(s.handleAudit, RoleAuditor))
	handle("GET /api/v1/audit/anchor", noBody, s.requireRole(s.handleAuditAnchor, RoleAuditor))
	handle("GET /api/v1/log/proof/{target...}", public, s.handleLogProof)
	handle("GET /api/v1/log/consistency", public, s.handleLogConsistency)
	handle("POST /api/v1/devices/tokens", small, s.requireRole(s.handleEnrollToken, RoleOperator))
	handle("GET /api/v1/devices", noBody, s.requireRole(s.handleListDevices, RoleOperator, RoleAuditor))
	handle("GET /api/v1/devices/{id}", noBody, s.requireRole(s.handleGetDevice, RoleOperator, RoleAuditor))
	handle("POST /api/v1/devices/{id}/tags", routePolicy{maxBody: tagsBody}, s.requireRole(s.handleSetTags, RoleOperator))
	handle("GET /api/v1/releases", noBody, s.requireRole(s.handleReleases, RoleReleaseManager, RoleOperator, RoleAuditor))
	handle("POST /api/v1/rollouts", routePolicy{maxBody: rolloutBody}, s.requireRole(s.handleCreateRollout, RoleOperator))
	handle("GET /api/v1/rollouts", noBody, s.requireRole(s.handleListRollouts, RoleOperator, RoleAuditor))
	handle("GET /api/v1/rollouts/{id}", noBody, s.requireRole(s.handleShowRollout, RoleOperator, RoleAuditor))
	handle("POST /api/v1/rollouts/{id}/{action}", small, s.requireRole(s.handleRolloutAction, RoleOperator))
	handle("POST /api/v1/policy", routePolicy{maxBody: policyBody}, s.requireRole(s.handleSetPolicy, RoleOperator))
	handle("GET /api/v1/policy", noBody, s.requireRole(s.handleShowPolicy, RoleOperator, RoleAuditor))
	handle("GET /api/v1/policy/explain", noBody, s.requireRole(s.handleExplainPolicy, RoleOperator, RoleAuditor))
	handle("POST /api/v1/devices/{id}/revoke", small, s.requireRole(s.handleRevokeDevice, RoleOperator))
	handle("DELETE /api/v1/devices/{id}", noBody, s.requireRole(s.handleRemoveDevice, RoleOperator))
	handle("POST /api/v1/deploy", small, s.requireRole(s.handleDeploy, RoleOperator))
	handle("GET /api/v1/fleet/stats", noBody, s.requireRole(s.handleFleetStats, RoleOperator, RoleAuditor))
	handle("POST /api/v1/incidents/revoke-key", small, s.requireRole(s.handleRevokeKey, RoleOperator))
	handle("POST /api/v1/incidents/redeploy", small, s.requireRole(s.handleRedeploy, RoleOperator))
	handle("GET /api/v1/whoami", noBody, s.requireRole(s.handleWhoami, RoleReleaseManager, RoleOperator, RoleAuditor))
	// Device API: enrollment by one-time token or manufacturer
	// certificate, then mTLS.
	handle("POST /api/v1/enroll", routePolicy{maxBody: enrollBody, open: true}, s.handleEnroll)
	handle("POST /api/v1/device/report", routePolicy{maxBody: reportBody}, s.handleReport)
	handle("POST /api/v1/director/root", bigJSON, s.requireRole(s.handleDirectorRoot))
	handle("GET /api/v1/director/root", noBody, s.requireRole(s.handleDirectorRootVersion, RoleReleaseManager, RoleOperator, RoleAuditor))
	handle("GET /director/{file}", noBody, s.handleDirector)
	// The published repository and log: public, cacheable.
	handle("GET /repo/{file}", public, s.handleMetadata)
	handle("GET /repo/targets/{path...}", public, s.handleTarget)
	handle("GET /repo/chunks/{hash}", public, s.handleChunk)
	handle("GET /log/", public, http.StripPrefix("/log", tlog.Handler(s.log.Dir())).ServeHTTP)
	// The operator dashboard: static files only; it calls the operator
	// API above with the token the operator logs in with.
	handle("GET /ui/", public, http.StripPrefix("/ui", dashboard.Handler()).ServeHTTP)
	// Operations: answered even when the budget of requests without
	// credentials is spent, which is when they matter.
	handle("GET /healthz", noBody, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	handle("GET /readyz", noBody, s.handleReady)
	// Metrics need an operator token of any role here; a scraper without
	// one reads MetricsHandler on a listener of its own (metrics_listen).
	handle("GET /metrics", noBody, s.requireRole(s.metrics.handler().ServeHTTP, RoleReleaseManager, RoleOperator, RoleAuditor))
	checkRoutes(registered)
	return requestID(s.guard(s.metrics.instrument(refuseUnsafePaths(routerErrors(mux)))))
}

// checkRoutes panics unless registered are exactly api.Routes: a route
// added here and not there (or the reverse) is a programming error that
// every test constructing a handler finds.
func checkRoutes(registered []string) {
	want := make([]string, len(api.Routes))
	for i, r := range api.Routes {
		want[i] = r.String()
	}
	got := slices.Clone(registered)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		panic(fmt.Sprintf("server: the registered routes %v are not api.Routes %v", got, want))
	}
}

// MetricsHandler serves the metrics without credentials, for a listener
// of their own that only the monitoring system can reach (metrics_listen
// in rampart-server's configuration). No label holds client input, so
// what it serves grows with routes and refusal codes, not with traffic.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	return mux
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

// event is what an audit entry records about a request; the request id
// and the time are added when it is written.
type event struct {
	actor, action, subject, outcome string
	detail                          map[string]string
}

func (s *Server) entry(r *http.Request, ev event) audit.Entry {
	return audit.Entry{
		Time: s.now(), Actor: ev.actor, Action: ev.action, Subject: ev.subject,
		RequestID: r.Header.Get("X-Request-Id"), Outcome: ev.outcome, Detail: ev.detail,
	}
}

// atomically runs an action and appends the audit entry that records it
// in one store transaction: act makes its changes through tx and returns
// the event to record; if act fails, or the audit append fails, nothing
// is committed and the error is returned. act must use only tx.
func (s *Server) atomically(r *http.Request, act func(tx store.Tx) (event, error)) error {
	ctx := r.Context()
	return s.store.Atomic(ctx, func(tx store.Tx) error {
		ev, err := act(tx)
		if err != nil {
			return err
		}
		if _, err := tx.AppendAudit(ctx, s.entry(r, ev)); err != nil {
			return wrapf(err, "audit entry of %s %s", ev.action, ev.subject)
		}
		return nil
	})
}

// audit appends an audit entry on its own, for events that commit nothing
// else: refusals and denied requests. A failure to record one is logged
// loudly; the refusal itself stands.
func (s *Server) audit(r *http.Request, actor, action, subject, outcome string, detail map[string]string) {
	ev := event{actor: actor, action: action, subject: subject, outcome: outcome, detail: detail}
	if _, err := s.store.AppendAudit(r.Context(), s.entry(r, ev)); err != nil {
		s.logger.Error("audit append failed", "action", action, "subject", subject, "request_id", r.Header.Get("X-Request-Id"), "err", err)
	}
}

// refuse answers a refused request with ae and audits the refusal on its
// own, with ae's code and any further detail, within the actor's budget
// of audited refusals (auditRefusal).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, actor, action, subject string, ae *apiError, detail map[string]string) {
	d := map[string]string{"code": ae.Code}
	maps.Copy(d, detail)
	s.auditRefusal(r, actor, action, subject, "refused", d)
	writeError(w, ae)
}

// Budget of refusals audited one by one per authenticated actor (a
// device, an operator token, an enrollment credential): a burst, then
// one a minute. Beyond it a refusal is counted
// (rampart_audit_refusals_suppressed_total) and logged at a bounded rate,
// so a client with credentials cannot grow the audit log by repeating a
// request the server refuses. Actions that change state are always
// audited: they are bounded by what they change.
const (
	auditedRefusalBurst = 20
	auditedRefusalEvery = time.Minute
	// maxTrackedIdentities bounds the per-identity rate limiters'
	// memory (about 100 bytes an identity).
	maxTrackedIdentities = 100000
)

// auditSuppressedLog limits the log lines of refusals not audited.
var auditSuppressedLog rateLog

// auditRefusal audits a refusal or denial of an authenticated actor
// within its budget.
func (s *Server) auditRefusal(r *http.Request, actor, action, subject, outcome string, detail map[string]string) {
	if ok, _ := s.auditBudget.allow(actor); !ok {
		s.metrics.auditSuppressed.Inc()
		auditSuppressedLog.log(s.logger, "refusals over the actor's audit budget are counted, not audited", "actor", actor, "action", action,
			"request_id", r.Header.Get("X-Request-Id"))
		return
	}
	s.audit(r, actor, action, subject, outcome, detail)
}

// operatorAction runs an operator's action with its audit entry in one
// transaction. A refusal is audited on its own (nothing else was
// committed) and answered with its code; any other failure is a 500.
func (s *Server) operatorAction(w http.ResponseWriter, r *http.Request, action, subject string, act func(tx store.Tx) (event, error)) bool {
	return s.operatorDone(w, r, action, subject, s.atomically(r, act))
}

// operatorDone answers the outcome of an operator's action that a
// service committed with its audit entry: true when it succeeded; a
// refusal is audited on its own and answered with its code; any other
// failure is a 500.
func (s *Server) operatorDone(w http.ResponseWriter, r *http.Request, action, subject string, err error) bool {
	if err == nil {
		return true
	}
	if ae := refusal(err); ae != nil {
		s.refuse(w, r, operatorActor(r), action, subject, ae, nil)
		return false
	}
	s.fail(w, r, err)
	return false
}

// fail answers err as an API error. An error that is not a refusal is a
// 500 whose detail goes to the server log only, with the request id the
// client sees (guard logs it when the request ends).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	if ae.Status == http.StatusInsufficientStorage {
		s.metrics.storageRefusals.Inc()
	}
	writeError(w, ae)
}

// refusal returns the API error of a refusal, or nil when err is not one
// (an internal failure).
func refusal(err error) *apiError {
	if ae := toAPIError(err); ae.Status < 500 {
		return ae
	}
	return nil
}

func operatorActor(r *http.Request) string { return "token:" + operator(r.Context()).Name }

// Run does the server's background work until ctx ends, every interval.
// Each replica, whether or not it holds the background lease:
//
//   - reloads the revoked devices, so revocations made by other replicas
//     reach this one's TLS handshakes within an interval;
//   - reloads the director root, so a root another replica accepted is
//     the one this replica signs under within an interval;
//   - removes its own upload files abandoned for a day.
//
// Only the replica holding the background lease (BackgroundLease, kept
// by a goroutine that renews it every third of its TTL) does the work
// that must happen once across replicas (leasedWork): renewing the
// timestamp (and the snapshot) when less than half its lifetime is left,
// retention (audit pruning, blob expiry) and advancing rollouts. A
// replica that takes the lease over starts that work at once. When ctx
// ends the lease is released, so another replica takes over at once; a
// replica that dies leaves it to expire, and another takes over within
// LeaseTTL and a third of it.
func (s *Server) Run(ctx context.Context, interval time.Duration) {
	acquired := make(chan struct{}, 1)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		s.background.Keep(ctx, func() {
			s.logger.Info("took the background lease: this replica now does the background work", "replica", s.background.Holder())
			select {
			case acquired <- struct{}{}:
			default:
			}
		}, func(err error) { s.logger.Error("renewing the background lease", "err", err) })
	}()
	defer func() { <-kept }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.ReloadRevocations(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("reloading revoked devices", "err", err)
		}
		if err := s.directors.ReloadRoot(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("reloading the director root", "err", err)
		}
		s.cleanUploads()
		if s.background.Held() {
			s.leasedWork(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-acquired:
		}
	}
}

// leasedWork is one round of the work done once across replicas, by the
// holder of the background lease. The lease is checked before each step:
// a replica that could not renew it in time (it lost the database)
// stops before another may take over. The round's writes are fenced with
// the term it began in (lease.Fenced): a replica paused past it, while
// another took over, has the rest of them refused by the store.
func (s *Server) leasedWork(ctx context.Context) {
	ctx = s.background.Fenced(ctx)
	start := time.Now()
	s.backgroundRuns.Add(1)
	if _, err := s.RefreshOnline(ctx); err != nil && !errors.Is(err, hostedrepo.ErrNoRepository) && ctx.Err() == nil {
		s.logger.Error("refreshing timestamp", "err", err)
	}
	if s.background.Held() {
		s.enforceRetention(ctx)
	}
	if s.background.Held() {
		if err := s.StepRollouts(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("rollout engine", "err", err)
		}
	}
	if s.onBackground != nil {
		s.onBackground(start, time.Now())
	}
}

// abandonedUpload is how long an upload's temporary file may go unwritten
// before it is taken for abandoned. Far above any upload's deadline
// (Limits), so only the leftovers of a process that died are removed.
const abandonedUpload = 24 * time.Hour

// cleanUploads removes abandoned temporary upload files, when the blob
// store keeps such files.
func (s *Server) cleanUploads() {
	c, ok := s.blobs.(interface {
		CleanTemp(olderThan time.Duration) (int, error)
	})
	if !ok {
		return
	}
	if n, err := c.CleanTemp(abandonedUpload); err != nil {
		s.logger.Error("removing abandoned upload files", "err", err)
	} else if n > 0 {
		s.logger.Info("removed abandoned upload files", "files", n)
	}
}

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// Audit export pages: at most maxAuditPage entries and maxAuditPageBytes
// bytes, whichever comes first (one entry always, so a page moves
// forward). The page is read from the store in batches of auditBatch
// entries or auditBatchBytes and written out between them, so a request
// holds one batch in memory and no read transaction while the client
// reads, however slowly.
const (
	maxAuditPage      = 10000
	maxAuditPageBytes = 4 << 20
	auditBatch        = 256
	auditBatchBytes   = 256 << 10
)

var errPageFull = errors.New("page full")

// handleAudit exports audit entries as JSON lines, after ?after=SEQ
// (default 0), at most ?limit=N (1 to 10000, default 10000) entries and
// maxAuditPageBytes bytes: a page shorter than asked is not the end of
// the log; an empty one is. Sequence numbers are stored as SQLite
// integers, so after is at most 2^63-1. Entries before the retention
// anchor were pruned: asking for them is 410 audit-pruned, naming the
// anchor to verify the rest from (GET /api/v1/audit/anchor).
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	after, bad := parseQueryInt(r, "after", 0, math.MaxInt64, 0)
	if bad != nil {
		writeError(w, bad)
		return
	}
	limit, bad := parseQueryInt(r, "limit", 1, maxAuditPage, maxAuditPage)
	if bad != nil {
		writeError(w, bad)
		return
	}
	ctx := r.Context()
	anchor, err := s.store.AuditAnchor(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if uint64(after) < anchor.Seq {
		writeError(w, errorf(http.StatusGone, "audit-pruned", "audit entries through seq %d were removed by retention (%s); the log continues after seq %d, whose hash is %s (GET /api/v1/audit/anchor): ask for entries after it",
			anchor.Seq, s.retention.auditText(), anchor.Seq, anchor.Hash))
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Cache-Control", "no-store")
	var (
		buf     []byte
		written int64
		count   int
		next    = uint64(after)
		full    bool
	)
	for !full && count < int(limit) {
		buf = buf[:0]
		n, err := s.store.AuditRaw(ctx, next, min(auditBatch, int(limit)-count), auditBatchBytes, func(seq uint64, raw []byte) error {
			if written+int64(len(buf)+len(raw)+1) > maxAuditPageBytes && written+int64(len(buf)) > 0 {
				return errPageFull
			}
			buf = append(append(buf, raw...), '\n')
			next = seq
			return nil
		})
		switch {
		case errors.Is(err, errPageFull):
			full = true
		case err != nil:
			if written == 0 {
				s.fail(w, r, err)
			} else {
				// The answer has started: cut it, so the client sees a
				// broken page rather than a short one.
				s.logger.Error("audit export failed", "request_id", r.Header.Get("X-Request-Id"), "err", err)
				panic(http.ErrAbortHandler)
			}
			return
		}
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return
			}
			written += int64(len(buf))
		}
		count += n
		if n == 0 {
			break // the end of the log
		}
	}
	if written == 0 {
		w.WriteHeader(http.StatusOK)
	}
}

// handleAuditAnchor answers where the retained audit log starts: the seq
// and hash of the last entry pruned (0 and the genesis hash when none
// was), which audit.Verify takes as the entry before the first one.
func (s *Server) handleAuditAnchor(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.AuditAnchor(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := api.AuditAnchor{Seq: a.Seq, Hash: a.Hash, Retention: s.retention.auditText()}
	if !a.At.IsZero() {
		out.PrunedAt = &a.At
	}
	writeJSON(w, http.StatusOK, out)
}
