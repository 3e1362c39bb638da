package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
	"github.com/rampartfw/rampart/internal/syncbuf"
	"github.com/rampartfw/rampart/internal/tlog"
)

// Numeric query parameters out of range are a 400 naming the parameter,
// never a 500 and never silently replaced by a default.
func TestQueryNumbersRefusedPrecisely(t *testing.T) {
	e := newLive(t, server.Limits{})
	c := e.client(nil, false)
	for _, tc := range []struct{ query, code string }{
		{"after=9223372036854775808", "bad-after"},
		{"after=18446744073709551616", "bad-after"},
		{"after=-1", "bad-after"},
		{"after=abc", "bad-after"},
		{"after=", "bad-after"},
		{"limit=0", "bad-limit"},
		{"limit=-5", "bad-limit"},
		{"limit=10001", "bad-limit"},
		{"limit=99999999999999999999", "bad-limit"},
		{"after=0&limit=1e3", "bad-limit"},
	} {
		resp, b := e.do(c, "GET", "/api/v1/audit?"+tc.query, e.admin, nil)
		wantAPIError(t, resp, b, 400, tc.code)
		name := strings.TrimPrefix(tc.code, "bad-")
		if !strings.Contains(string(b), name+"=") {
			t.Fatalf("%s: the message does not name %s: %s", tc.query, name, b)
		}
	}
	for _, q := range []string{"", "after=9223372036854775807", "after=0&limit=10000", "limit=1"} {
		if resp, b := e.do(c, "GET", "/api/v1/audit?"+q, e.admin, nil); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, b)
		}
	}
	// Tree sizes of the log's consistency proofs: refused, not failed.
	for _, q := range []string{"from=0&to=18446744073709551615", "from=9223372036854775808&to=9223372036854775809", "from=-1&to=1", "from=2&to=1"} {
		resp, b := e.do(c, "GET", "/api/v1/log/consistency?"+q, "", nil)
		wantAPIError(t, resp, b, 400, "bad-range")
	}
}

// Every 500 is logged with the request id the client saw, whatever the
// handler: here the audit export, which used to log nothing.
func TestEvery500IsLoggedWithItsRequestID(t *testing.T) {
	e := newLive(t, server.Limits{})
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "rampart.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A fault the server cannot refuse: the audit table is gone.
	if _, err := raw.Exec(`ALTER TABLE audit RENAME TO audit_gone`); err != nil {
		t.Fatal(err)
	}
	resp, b := e.do(e.client(nil, false), "GET", "/api/v1/audit", e.admin, nil)
	wantAPIError(t, resp, b, 500, "internal")
	id := resp.Header.Get("X-Request-Id")
	var logged map[string]any
	for line := range strings.SplitSeq(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request failed" && m["request_id"] == id {
			logged = m
		}
	}
	if logged == nil || logged["route"] != "GET /api/v1/audit" || !strings.Contains(logged["err"].(string), "audit") || strings.Contains(string(b), "audit_gone") {
		t.Fatalf("the 500 (request id %s, answer %s) was not logged with its cause:\n%s", id, b, e.logs.String())
	}
	t.Logf("logged: %v", logged)
}

// panicStore is a store whose audit export panics: a bug no request can
// cause on purpose, standing in for any handler's.
type panicStore struct{ store.Store }

func (panicStore) AuditRaw(context.Context, uint64, int, int64, func(uint64, []byte) error) (int, error) {
	panic("injected bug")
}

// A handler's panic is a 500 in the API's error shape, logged once with
// its cause and the request id; the connection and the server go on.
func TestPanicIsA500LoggedWithItsRequestID(t *testing.T) {
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	blobs, _ := blob.NewFS(filepath.Join(dir, "blobs"))
	skey, vkey, _ := tlog.GenerateKey("rampart.test/log")
	signer, _ := note.NewSigner(skey)
	lg, err := tlog.Open(context.Background(), filepath.Join(dir, "log"), signer, "rampart.test/log")
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	logs := &syncbuf.Buffer{}
	srv, err := server.New(server.Config{Store: panicStore{db}, Blobs: blobs, Log: lg, LogVerifierKey: vkey, Snapshot: key(t), Timestamp: key(t),
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	secret, hash := server.NewToken()
	db.CreateOperatorToken(context.Background(), store.OperatorToken{Hash: hash, Name: "admin", Role: server.RoleAdmin, CreatedAt: time.Now()})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	req, _ := http.NewRequest("GET", ts.URL+"/api/v1/audit", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("X-Request-Id", "req-42")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("the panic cost the client its answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantAPIError(t, resp, b, 500, "internal")
	if strings.Contains(string(b), "injected") {
		t.Fatalf("the answer shows the panic: %s", b)
	}
	var n int
	for line := range strings.SplitSeq(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request failed" {
			n++
			if m["request_id"] != "req-42" || !strings.HasPrefix(m["err"].(string), "panic: injected bug") {
				t.Fatalf("logged: %s", line)
			}
		}
	}
	if n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.String())
	}
	if resp, err := ts.Client().Get(ts.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the panic: %v", err)
	}
}
