package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A report the server refuses for good (400 malformed, 409 replay or
// counter jump, 422 a release it never published or a wrong security
// version) is dropped, so it cannot block every later report; a server
// error keeps it for the next check-in.
func TestReportRefusedForGoodIsDropped(t *testing.T) {
	for _, tc := range []struct {
		status int
		kept   bool
	}{{400, false}, {409, false}, {422, false}, {500, true}, {503, true}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(tc.status) }))
		a := &Agent{HTTP: srv.Client(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Config: &Config{}}
		a.Config.Server.URL = srv.URL
		err := a.send(context.Background(), Report{Status: "installed", Version: "9.9.9"})
		if kept := err != nil; kept != tc.kept {
			t.Errorf("HTTP %d: kept %v (err %v), want %v", tc.status, kept, err, tc.kept)
		}
		srv.Close()
	}
}
