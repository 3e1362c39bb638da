package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
	"github.com/rampartfw/rampart/internal/tlog"
)

type env struct {
	t         *testing.T
	srv       *server.Server
	ts        *httptest.Server
	db        store.Store
	admin     string
	now       time.Time
	verifier  note.Verifier
	origin    string
	repoDir   string
	rel       []keys.Signer
	snap, tsk keys.Signer
	dbPath    string
	lg        *tlog.Log
}

func key(t *testing.T) keys.Signer {
	s, err := keys.Generate(keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	return keys.InMemory(s)
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, now: time.Now().UTC().Truncate(time.Second), origin: "rampart.test/log"}
	dir := t.TempDir()
	e.dbPath = filepath.Join(dir, "rampart.db")
	db, err := sqlite.Open(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	blobs, err := blob.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := tlog.GenerateKey(e.origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	e.verifier, _ = note.NewVerifier(vkey)
	lg, err := tlog.Open(context.Background(), filepath.Join(dir, "log"), signer, e.origin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	e.lg = lg
	e.snap, e.tsk = key(t), key(t)
	e.srv, err = server.New(server.Config{Store: db, Blobs: blobs, Log: lg, LogVerifierKey: vkey, Snapshot: e.snap, Timestamp: e.tsk, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	secret, hash := server.NewToken()
	if err := db.CreateOperatorToken(context.Background(), store.OperatorToken{Hash: hash, Name: "admin", Role: server.RoleAdmin, CreatedAt: e.now}); err != nil {
		t.Fatal(err)
	}
	e.admin = secret
	e.ts = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.ts.Close)
	return e
}

func (e *env) do(method, path, token string, body io.Reader) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.ts.URL+path, body)
	return e.send(req, token)
}

// send makes req with the operator token (none if ""), and returns the
// response with its body read.
func (e *env) send(req *http.Request, token string) (*http.Response, []byte) {
	e.t.Helper()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func (e *env) token(name, role string) string {
	resp, b := e.do("POST", "/api/v1/tokens", e.admin, strings.NewReader(fmt.Sprintf(`{"name":%q,"role":%q}`, name, role)))
	if resp.StatusCode != 201 {
		e.t.Fatalf("create token: %d %s", resp.StatusCode, b)
	}
	var out struct{ Token string }
	json.Unmarshal(b, &out)
	return out.Token
}

// ceremony runs the offline signing with the server's online keys and
// returns the staged documents, ready to push.
func (e *env) ceremony(image []byte) {
	t := e.t
	root, targets := key(t), key(t)
	e.rel = []keys.Signer{key(t), key(t), key(t)}
	e.repoDir = filepath.Join(t.TempDir(), "repo")
	pub := func(ss ...keys.Signer) (out []crypto.PublicKey) {
		for _, s := range ss {
			out = append(out, s.Public())
		}
		return
	}
	r, err := offlinerepo.Init(e.repoDir, offlinerepo.InitOptions{RootKeys: pub(root), RootThreshold: 1, TargetsKeys: pub(targets), TargetsThreshold: 1, SnapshotKeys: pub(e.snap), TimestampKeys: pub(e.tsk)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Sign("root", root)
	if err := r.Delegate("acme-gw", pub(e.rel...), 2); err != nil {
		t.Fatal(err)
	}
	r.Sign("targets", targets)
	img := filepath.Join(t.TempDir(), "fw.img")
	os.WriteFile(img, image, 0o644)
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "2.4.1", SecurityVersion: 7, Hardware: []string{"acme-gw-rev2"}}); err != nil {
		t.Fatal(err)
	}
	r.Sign("acme-gw", e.rel[0])
	r.Sign("acme-gw", e.rel[2])
}

func (e *env) staged(name string) []byte {
	b, err := os.ReadFile(filepath.Join(e.repoDir, "staged", name))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) uploadBlobs(token string) {
	entries, _ := os.ReadDir(filepath.Join(e.repoDir, "staged", "blobs"))
	for _, ent := range entries {
		b, _ := os.ReadFile(filepath.Join(e.repoDir, "staged", "blobs", ent.Name()))
		resp, body := e.do("PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", ent.Name(), len(b)), token, bytes.NewReader(b))
		if resp.StatusCode != 201 {
			e.t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
	}
}

func pushBody(roots [][]byte, targets []byte, roles map[string][]byte) io.Reader {
	b, _ := json.Marshal(map[string]any{"roots": roots, "targets": targets, "roles": roles})
	return bytes.NewReader(b)
}

func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var out struct {
		Error struct{ Code, Message string }
	}
	if resp.StatusCode != status || json.Unmarshal(body, &out) != nil || out.Error.Code != code || out.Error.Message == "" {
		t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, status, code)
	}
}

func TestPushServeAndClient(t *testing.T) {
	e := newEnv(t)
	image := make([]byte, 3<<20+100)
	rand.Read(image)
	e.ceremony(image)
	rm := e.token("ci", server.RoleReleaseManager)
	first := pushBody([][]byte{e.staged("root.json")}, e.staged("targets.json"), map[string][]byte{"acme-gw": e.staged("roles/acme-gw.json")})
	firstBytes, _ := io.ReadAll(first)

	// Without its blobs the push is refused and nothing is stored.
	resp, body := e.do("POST", "/api/v1/repo/push", rm, bytes.NewReader(firstBytes))
	wantError(t, resp, body, 422, "missing-blob")
	if _, err := e.db.Doc(context.Background(), "image", "timestamp", 0); err == nil {
		t.Fatal("a refused push stored a timestamp")
	}
	e.uploadBlobs(rm)
	resp, body = e.do("POST", "/api/v1/repo/push", rm, bytes.NewReader(firstBytes))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"releases":["acme-gw/2.4.1/fw.img"]`) {
		t.Fatalf("push: %d %s", resp.StatusCode, body)
	}
	// The same push again is a replay.
	resp, body = e.do("POST", "/api/v1/repo/push", rm, bytes.NewReader(firstBytes))
	wantError(t, resp, body, 409, "version-not-next")

	// go-tuf's own client reads the served repository and downloads the
	// release, following the delegation and consistent snapshots.
	md := t.TempDir()
	cfg, err := config.New(e.ts.URL+"/repo/", e.staged("root.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LocalMetadataDir, cfg.LocalTargetsDir = md, t.TempDir()
	cfg.RemoteTargetsURL = e.ts.URL + "/repo/targets/"
	cfg.PrefixTargetsWithHash = true
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		t.Fatal(err)
	}
	ti, err := up.GetTargetInfo("acme-gw/2.4.1/fw.img")
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := up.DownloadTarget(ti, "", "")
	if err != nil || !bytes.Equal(got, image) {
		t.Fatalf("download: %v", err)
	}

	// Range requests on payloads, immutable caching.
	sum := sha256.Sum256(image)
	req, _ := http.NewRequest("GET", e.ts.URL+"/repo/targets/acme-gw/2.4.1/"+hex.EncodeToString(sum[:])+".fw.img", nil)
	req.Header.Set("Range", "bytes=1048576-1048585")
	rr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rr.Body)
	rr.Body.Close()
	if rr.StatusCode != 206 || !bytes.Equal(part, image[1<<20:1<<20+10]) || !strings.Contains(rr.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("range: %d %q", rr.StatusCode, rr.Header.Get("Cache-Control"))
	}
	// Only content named by the metadata is served.
	resp, _ = e.do("GET", "/repo/targets/acme-gw/2.4.1/"+strings.Repeat("0", 64)+".fw.img", "", nil)
	if resp.StatusCode != 404 {
		t.Fatalf("unnamed blob served: %d", resp.StatusCode)
	}

	// The release is in the transparency log.
	resp, body = e.do("GET", "/api/v1/log/proof/acme-gw/2.4.1/fw.img", "", nil)
	var lp struct {
		Statement string
		Proof     logproof.Proof
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &lp) != nil {
		t.Fatalf("proof: %d %s", resp.StatusCode, body)
	}
	if _, err := logproof.VerifyInclusion(e.origin, e.verifier, []byte(lp.Statement), &lp.Proof); err != nil {
		t.Fatal(err)
	}
	st, err := logproof.ParseStatement([]byte(lp.Statement))
	if err != nil || st.SHA256 != hex.EncodeToString(sum[:]) || st.SecurityVersion != 7 || len(st.SignerKeyIDs) != 2 {
		t.Fatalf("%+v %v", st, err)
	}

	// Timestamp refresh: nothing to do now, a new timestamp after 13 hours,
	// and the client accepts it.
	if changed, err := e.srv.RefreshOnline(context.Background()); err != nil || changed {
		t.Fatalf("refresh now: %v %v", changed, err)
	}
	e.now = e.now.Add(13 * time.Hour)
	if changed, err := e.srv.RefreshOnline(context.Background()); err != nil || !changed {
		t.Fatalf("refresh later: %v %v", changed, err)
	}
	up2, _ := updater.New(cfg)
	if err := up2.Refresh(); err != nil {
		t.Fatalf("client after refresh: %v", err)
	}
	if v := up2.GetTrustedMetadataSet().Timestamp.Signed.Version; v != 2 {
		t.Fatalf("timestamp version %d", v)
	}

	// The audit log recorded it all and verifies.
	resp, body = e.do("GET", "/api/v1/audit", e.token("aud", server.RoleAuditor), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("audit export: %d %s", resp.StatusCode, body)
	}
	var es []audit.Entry
	dec := json.NewDecoder(bytes.NewReader(body))
	for dec.More() {
		var a audit.Entry
		if err := dec.Decode(&a); err != nil {
			t.Fatal(err)
		}
		es = append(es, a)
	}
	if err := audit.Verify(nil, es); err != nil || len(es) < 5 {
		t.Fatalf("%d entries: %v", len(es), err)
	}
	for _, a := range es {
		if len(a.RequestID) != 16 {
			t.Fatalf("audit entry without a request id: %+v", a)
		}
	}
	var pushes []string
	for _, a := range es {
		if a.Action == "push" {
			pushes = append(pushes, a.Outcome)
		}
	}
	if strings.Join(pushes, ",") != "refused,accepted,refused" {
		t.Fatalf("audited pushes: %v", pushes)
	}
}

func TestAPIRefusals(t *testing.T) {
	e := newEnv(t)
	image := make([]byte, 100000)
	rand.Read(image)
	e.ceremony(image)
	rm := e.token("ci", server.RoleReleaseManager)
	aud := e.token("aud", server.RoleAuditor)
	ops := e.token("ops", server.RoleOperator)
	body := func() io.Reader {
		return pushBody([][]byte{e.staged("root.json")}, e.staged("targets.json"), map[string][]byte{"acme-gw": e.staged("roles/acme-gw.json")})
	}
	resp, b := e.do("POST", "/api/v1/repo/push", "", body())
	wantError(t, resp, b, 401, "unauthenticated")
	resp, b = e.do("POST", "/api/v1/repo/push", "rmp_not-a-token", body())
	wantError(t, resp, b, 401, "unauthenticated")
	resp, b = e.do("POST", "/api/v1/repo/push", aud, body())
	wantError(t, resp, b, 403, "forbidden")
	resp, b = e.do("POST", "/api/v1/repo/push", ops, body())
	wantError(t, resp, b, 403, "forbidden")
	resp, b = e.do("GET", "/api/v1/audit", rm, nil)
	wantError(t, resp, b, 403, "forbidden")
	resp, b = e.do("POST", "/api/v1/tokens", rm, strings.NewReader(`{"name":"x","role":"admin"}`))
	wantError(t, resp, b, 403, "forbidden")
	resp, b = e.do("POST", "/api/v1/repo/push", rm, strings.NewReader(`{"roots": [`))
	wantError(t, resp, b, 400, "bad-json")
	resp, b = e.do("POST", "/api/v1/repo/push", rm, strings.NewReader(`{"bogus": 1}`))
	wantError(t, resp, b, 400, "bad-json")
	resp, b = e.do("POST", "/api/v1/repo/push", rm, strings.NewReader(`{"roots":["`+strings.Repeat("A", 33<<20)+`"]}`))
	wantError(t, resp, b, 413, "too-large")
	resp, b = e.do("POST", "/api/v1/repo/push", rm, pushBody([][]byte{[]byte("{}")}, nil, nil))
	wantError(t, resp, b, 422, "malformed")
	resp, b = e.do("POST", "/api/v1/tokens", e.admin, strings.NewReader(`{"name":"x","role":"god"}`))
	wantError(t, resp, b, 400, "bad-role")
	resp, b = e.do("POST", "/api/v1/tokens", e.admin, strings.NewReader(`{"name":"ci","role":"auditor"}`))
	wantError(t, resp, b, 409, "exists")

	// Blob uploads are checked against their digest and length.
	good := sha256.Sum256(image)
	d := hex.EncodeToString(good[:])
	resp, b = e.do("PUT", "/api/v1/blobs/"+d+"?length=100000", rm, bytes.NewReader(append(bytes.Clone(image[:99999]), 0)))
	wantError(t, resp, b, 422, "blob-mismatch")
	resp, b = e.do("PUT", "/api/v1/blobs/../../etc?length=1", rm, strings.NewReader("x"))
	wantError(t, resp, b, 400, "bad-path")
	resp, b = e.do("PUT", "/api/v1/blobs/"+strings.Repeat("g", 64)+"?length=1", rm, strings.NewReader("x"))
	wantError(t, resp, b, 400, "bad-digest")
	resp, b = e.do("PUT", "/api/v1/blobs/"+d, rm, bytes.NewReader(image))
	wantError(t, resp, b, 400, "bad-length")

	// A target name with a traversal is not served (more in
	// TestUnsafeTargetPathsRefused).
	resp, b = e.do("GET", "/repo/targets/../../rampart.db", "", nil)
	wantError(t, resp, b, 400, "bad-path")
	resp, b = e.do("GET", "/repo/1.root.json/../x", "", nil)
	wantError(t, resp, b, 400, "bad-path")
	// Health and metrics.
	if resp, _ := e.do("GET", "/healthz", "", nil); resp.StatusCode != 200 {
		t.Fatal("healthz")
	}
	resp, b = e.do("GET", "/metrics", e.admin, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `rampart_http_requests_total{code="403",route="POST /api/v1/repo/push"} 2`) || !strings.Contains(string(b), "rampart_auth_failures_total 1") || !strings.Contains(string(b), "rampart_enrolled_devices 0") {
		t.Fatalf("metrics:\n%s", b)
	}
}
