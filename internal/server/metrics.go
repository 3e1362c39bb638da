package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rampartfw/rampart/internal/pushaccept"
	"github.com/rampartfw/rampart/internal/verify"
)

// Every label value comes from a closed set the server defines (route
// patterns, status codes, refusal codes and classes, outcomes), never
// from what a client or device sends: each distinct value is a series the
// server keeps for good and serves on every scrape.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	pushes       *prometheus.CounterVec
	refusals     closedCounterVec
	authFailures prometheus.Counter
	gateLookups  prometheus.Counter
	busy         prometheus.Counter
	bodyTimeouts prometheus.Counter
	// auditSuppressed counts refusals of authenticated clients that were
	// not audited because their actor was over its audit budget.
	auditSuppressed prometheus.Counter
	auditPruned     prometheus.Counter
	blobsExpired    prometheus.Counter
	storageRefusals prometheus.Counter
}

// closedCounterVec is a counter vector with one label whose values must
// be in a closed set; anything else is counted as "other".
type closedCounterVec struct {
	vec     *prometheus.CounterVec
	allowed map[string]bool
}

// WithLabelValues returns the counter of value, or of "other" when value
// is not in the set.
func (c closedCounterVec) WithLabelValues(value string) prometheus.Counter {
	if !c.allowed[value] {
		value = "other"
	}
	return c.vec.WithLabelValues(value)
}

// refusalLabels are the values rampart_verification_refusals_total may
// carry: the API's refusal codes that can reach it and the verification
// refusal classes devices report.
func refusalLabels() map[string]bool {
	m := map[string]bool{}
	for _, c := range verify.Classes {
		m[string(c)] = true
	}
	for _, c := range []pushaccept.Code{pushaccept.BadSignature, pushaccept.VersionNotNext, pushaccept.Expired, pushaccept.Malformed,
		pushaccept.UnknownRole, pushaccept.ReleaseImmutable, pushaccept.SecurityLowered, pushaccept.OutsideDelegation, pushaccept.NothingPushed} {
		m[string(c)] = true
	}
	for _, c := range []string{
		// enrollment
		"bad-json", "too-large", "timeout", "bad-device-id", "bad-hardware", "bad-enrollment", "bad-token", "token-used",
		"token-expired", "wrong-hardware", "device-exists", "bad-csr", "unsupported-key", "no-manufacturer-ca",
		"manufacturer-unknown-ca", "manufacturer-cert-expired", "bad-manufacturer-cert", "device-id-mismatch",
		"manufacturer-key-mismatch", "hardware-mismatch",
		// reports
		"replayed-report", "counter-jump", "rate-limited", "unknown-installed-release", "wrong-security-version",
		// pushes
		"missing-blob", "blob-mismatch", "bad-index", "online-keys", "conflict", "bad-target", "not-found", "bad-digest",
	} {
		m[c] = true
	}
	return m
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_http_requests_total", Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rampart_http_request_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"route"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_pushes_total", Help: "Repository pushes by outcome.",
		}, []string{"outcome"}),
		refusals: closedCounterVec{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_verification_refusals_total", Help: "Refused enrollments, pushes and device reports, and verification refusals devices report, by refusal code or class (\"other\" for any other).",
		}, []string{"reason"}), allowed: refusalLabels()},
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_auth_failures_total", Help: "Requests with an unknown or revoked token.",
		}),
		gateLookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_device_gate_store_lookups_total",
			Help: "TLS handshakes whose device was not yet in the in-memory registry and was looked up in the store.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_http_busy_refusals_total",
			Help: "Requests without credentials refused with 503 because the server was serving its limit of them.",
		}),
		bodyTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_http_body_timeouts_total",
			Help: "Requests whose body did not arrive in time, or whose upload moved slower than the minimum rate.",
		}),
		auditSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_audit_refusals_suppressed_total",
			Help: "Refusals of authenticated clients not written to the audit log because the client was over its budget of audited refusals.",
		}),
		auditPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_audit_pruned_entries_total", Help: "Audit entries removed by retention.",
		}),
		blobsExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_blobs_expired_total", Help: "Blobs no published release references removed after their grace period.",
		}),
		storageRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_blob_storage_refusals_total", Help: "Blob uploads refused with 507 by the blob quota or the disk reserve.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.pushes, m.refusals.vec, m.authFailures, m.gateLookups, m.busy, m.bodyTimeouts,
		m.auditSuppressed, m.auditPruned, m.blobsExpired, m.storageRefusals,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument records every request under its route pattern (not its raw
// path, which would explode the label space).
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
		m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}
