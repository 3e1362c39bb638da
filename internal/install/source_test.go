package install_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/install/sourcetest"
)

// TestHTTPSourceConformance runs the Source suite against HTTPSource over
// a server that answers Range requests from the suite's medium, as a file
// server does (http.ServeContent).
func TestHTTPSourceConformance(t *testing.T) {
	sourcetest.Run(t, func(t testing.TB, m sourcetest.Medium) install.Source {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "fw.img", time.Time{}, io.NewSectionReader(m, 0, m.Size))
		}))
		t.Cleanup(srv.Close)
		return &install.HTTPSource{Client: srv.Client(), URL: srv.URL, MaxRetries: 1, Backoff: func(int) time.Duration { return 0 }}
	}, sourcetest.Options{IsFailure: func(err error) bool {
		var fe *install.FetchError
		return errors.As(err, &fe) && errors.Is(err, install.ErrFetch)
	}})
}
