package api_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/verify"
)

// The answers that were map literals before they had types encode to the
// same bytes (the device's gained state, tags and last_refusal since).
func TestAnswersKeepTheirBytes(t *testing.T) {
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	for name, c := range map[string]struct{ typed, was any }{
		"keys": {
			api.Keys{Snapshot: "s", Timestamp: "t", DirectorTargets: "dt", DirectorSnapshot: "ds", DirectorTimestamp: "dts", LogKey: "lk", LogOrigin: "lo"},
			map[string]string{"snapshot": "s", "timestamp": "t", "director-targets": "dt", "director-snapshot": "ds", "director-timestamp": "dts", "log_key": "lk", "log_origin": "lo"},
		},
		"keys without director": {
			api.Keys{Snapshot: "s", Timestamp: "t", LogOrigin: "lo"},
			map[string]string{"snapshot": "s", "timestamp": "t", "log_key": "", "log_origin": "lo"},
		},
		"versions":         {api.VersionsResponse{Versions: map[string]int64{"root": 1, "acme-gw": 3}}, map[string]any{"versions": map[string]int64{"root": 1, "acme-gw": 3}}},
		"director root":    {api.DirectorRootResponse{Root: 2}, map[string]int64{"root": 2}},
		"director version": {api.DirectorVersionResponse{Director: 0}, map[string]int64{"director": 0}},
		"token created":    {api.TokenCreated{Name: "ci", Role: "operator", Token: "rmp_x"}, map[string]string{"name": "ci", "role": "operator", "token": "rmp_x"}},
		"enroll token":     {api.EnrollToken{Token: "rmp_x", Hardware: "hw", Expires: at}, map[string]any{"token": "rmp_x", "hardware": "hw", "expires": at}},
		"enrolled":         {api.Enrolled{DeviceID: "d", Hardware: "hw", Certificate: "PEM"}, map[string]any{"device_id": "d", "hardware": "hw", "certificate": "PEM"}},
		"deployed":         {api.Deployed{Target: "p/1", Devices: 2, Changed: 1}, map[string]any{"target": "p/1", "devices": 2, "changed": 1}},
		"device": {
			api.Device{ID: "d", Hardware: "hw", State: "installed", EnrolledAt: at, Version: "1.0.0", SecurityVersion: 3, LastStatus: "installed", LastSeen: at, Assigned: "p/1/f",
				Anomalies: 1, LastAnomaly: "x", Reports: []api.Report{{Counter: 1, Status: "installed", At: at}}, ReportCounts: map[string]uint64{"installed": 1}},
			map[string]any{"id": "d", "hardware": "hw", "enrolled_at": at, "revoked": false, "version": "1.0.0", "security_version": 3, "last_status": "installed", "state": "installed",
				"last_seen": at, "assigned": "p/1/f", "anomalies": 1, "last_anomaly": "x", "reports": []api.Report{{Counter: 1, Status: "installed", At: at}},
				"report_counts": map[string]uint64{"installed": 1}},
		},
		"audit anchor": {api.AuditAnchor{Seq: 4, Hash: "h", Retention: "r", PrunedAt: &at}, map[string]any{"seq": 4, "hash": "h", "retention": "r", "pruned_at": at}},
		"consistency":  {api.Consistency{Hashes: [][]byte{{1}}}, map[string]any{"hashes": [][]byte{{1}}}},
		"ready":        {api.Ready{Ready: true}, map[string]bool{"ready": true}},
		"not ready": {api.Ready{Reason: "r", Error: &api.Error{Code: api.NotReady, Message: "r"}},
			map[string]any{"ready": false, "reason": "r", "error": map[string]string{"code": "not-ready", "message": "r"}}},
		"error": {api.ErrorBody{Error: api.Error{Code: api.Forbidden, Message: "m", Role: "operator"}},
			map[string]any{"error": map[string]string{"code": "forbidden", "message": "m", "role": "operator"}}},
	} {
		a, err := json.Marshal(c.typed)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(c.was)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: %s, was %s", name, a, b)
		}
	}
}

// The refusal classes the server accepts in reports are exactly the ones
// the device's verification gives.
func TestRefusalClassesAreVerifys(t *testing.T) {
	var want []api.RefusalClass
	for _, c := range verify.Classes {
		want = append(want, api.RefusalClass(c))
	}
	if !slices.Equal(api.RefusalClasses, want) {
		t.Errorf("api.RefusalClasses = %v, verify.Classes = %v", api.RefusalClasses, want)
	}
}
