package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	pushes       *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	authFailures prometheus.Counter
	gateLookups  prometheus.Counter
	busy         prometheus.Counter
	bodyTimeouts prometheus.Counter
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
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_verification_refusals_total", Help: "Refused pushes and device reports by reason.",
		}, []string{"reason"}),
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
	}
	m.reg.MustRegister(m.requests, m.latency, m.pushes, m.refusals, m.authFailures, m.gateLookups, m.busy, m.bodyTimeouts,
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
