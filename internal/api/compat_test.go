package api_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rampartfw/rampart/internal/api"
)

// The answers that were map literals before they had types encode to the
// same bytes.
func TestAnswersKeepTheirBytes(t *testing.T) {
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
