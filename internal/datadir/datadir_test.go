package datadir_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

func quietConfig() server.Config {
	return server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// open opens dir as serve would and checks that token is its admin's.
func openWithAdmin(t *testing.T, dir, token string) {
	t.Helper()
	in, err := datadir.Open(context.Background(), dir, quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tok, err := in.Store.OperatorToken(context.Background(), server.HashToken(token))
	if err != nil || tok.Role != server.RoleAdmin {
		t.Fatalf("admin token: %+v %v", tok, err)
	}
}

// rawExec runs q on dir's store as an operator with sqlite3 would.
func rawExec(t *testing.T, dir, q string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

func wantIncomplete(t *testing.T, dir string) {
	t.Helper()
	in, err := datadir.Open(context.Background(), dir, quietConfig())
	if err == nil {
		in.Close()
		t.Fatalf("%s opened", dir)
	}
	if !errors.Is(err, datadir.ErrIncomplete) || !strings.Contains(err.Error(), "rampart-server init --data "+dir) {
		t.Fatalf("opening an incomplete directory: %v", err)
	}
}

// A directory whose init was killed before its admin token (what init
// did until now: store first, token last) is refused by serve with a way
// out, and init recovers it.
func TestInitRecoversAStoreWithoutToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv")
	if _, err := datadir.Init(dir, datadir.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	rawExec(t, dir, `DELETE FROM operator_tokens`)
	wantIncomplete(t, dir)
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatalf("init did not recover: %v", err)
	}
	openWithAdmin(t, dir, res.AdminToken)
	if _, err := datadir.Init(dir, datadir.InitOptions{}); !errors.Is(err, datadir.ErrInitialized) {
		t.Fatalf("a third init: %v", err)
	}
}

// A store without a token that holds anything else is not an unfinished
// init: init leaves it alone.
func TestInitLeavesAStoreWithDataAlone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv")
	if _, err := datadir.Init(dir, datadir.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.AppendAudit(context.Background(), audit.Entry{Time: time.Now(), Actor: "token:admin", Action: "x", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	rawExec(t, dir, `DELETE FROM operator_tokens`)
	before, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if _, err := datadir.Init(dir, datadir.InitOptions{}); err == nil || !strings.Contains(err.Error(), "left alone") {
		t.Fatalf("init on a store with data: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(after) != string(before) {
		t.Fatal("init changed a directory it should have left alone")
	}
}

// An existing directory (a mount point, say) is initialised in place: the
// directory itself stays. A kill in the middle leaves it marked
// incomplete; serve refuses it and init starts it afresh, keeping what is
// not init's.
func TestInitInPlace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv")
	os.Mkdir(dir, 0o700)
	fi, _ := os.Stat(dir)
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := os.Stat(dir); !os.SameFile(fi, now) {
		t.Fatal("the existing directory was replaced")
	}
	openWithAdmin(t, dir, res.AdminToken)
	if names := dirNames(t, dir); strings.Contains(names, ".rampart-") {
		t.Fatalf("init left %s", names)
	}

	// What an interrupted in-place init leaves: its mark, half its
	// files, its staging directory.
	dir2 := filepath.Join(t.TempDir(), "srv")
	os.MkdirAll(filepath.Join(dir2, "keys"), 0o700)
	os.MkdirAll(filepath.Join(dir2, ".rampart-staging-123", "keys"), 0o700)
	os.WriteFile(filepath.Join(dir2, ".rampart-init-incomplete"), nil, 0o600)
	os.WriteFile(filepath.Join(dir2, "keys", "snapshot.key"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir2, "rampart.db"), []byte("not a database"), 0o600)
	os.WriteFile(filepath.Join(dir2, "lost+found"), []byte("not init's"), 0o600)
	wantIncomplete(t, dir2)
	res, err = datadir.Init(dir2, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	openWithAdmin(t, dir2, res.AdminToken)
	if b, _ := os.ReadFile(filepath.Join(dir2, "lost+found")); string(b) != "not init's" {
		t.Fatal("init removed an entry it did not make")
	}
	if names := dirNames(t, dir2); strings.Contains(names, ".rampart-") {
		t.Fatalf("init left %s", names)
	}
}

func dirNames(t *testing.T, dir string) string {
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

// Without evidence that init made them, entries init would make are not
// removed: init refuses.
func TestInitRefusesADirectoryThatIsNotItsOwn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	os.MkdirAll(filepath.Join(dir, "keys"), 0o700)
	os.WriteFile(filepath.Join(dir, "keys", "mine.key"), []byte("precious"), 0o600)
	_, err := datadir.Init(dir, datadir.InitOptions{})
	if err == nil || !strings.Contains(err.Error(), "keys") {
		t.Fatalf("init in a directory holding keys/: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "keys", "mine.key")); string(b) != "precious" {
		t.Fatal("init removed a file it did not make")
	}
}

// A new directory is built beside its place and renamed into it: what a
// killed init left there is removed by the next one.
func TestInitRemovesAKilledInitsStaging(t *testing.T) {
	parent := t.TempDir()
	stale := filepath.Join(parent, ".srv.init-12345")
	os.MkdirAll(filepath.Join(stale, "keys"), 0o700)
	res, err := datadir.Init(filepath.Join(parent, "srv"), datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale staging directory: %v", err)
	}
	if names := dirNames(t, parent); names != "srv" {
		t.Fatalf("beside the data directory: %s", names)
	}
	if fi, _ := os.Stat(filepath.Join(parent, "srv")); fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v", fi.Mode())
	}
	openWithAdmin(t, filepath.Join(parent, "srv"), res.AdminToken)
}

// Temporary files of uploads cut by a kill are removed when the server
// starts; while it runs, those untouched for a day.
func TestUploadLeftoversRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv")
	if _, err := datadir.Init(dir, datadir.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "blobs", "tmp")
	os.MkdirAll(tmp, 0o755)
	os.WriteFile(filepath.Join(tmp, "put-killed"), make([]byte, 1000), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in, err := datadir.Open(ctx, dir, quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if names := dirNames(t, tmp); names != "" {
		t.Fatalf("left at start-up: %s", names)
	}
	old, fresh := filepath.Join(tmp, "put-old"), filepath.Join(tmp, "put-fresh")
	os.WriteFile(old, nil, 0o644)
	os.WriteFile(fresh, nil, 0o644)
	os.Chtimes(old, time.Now().Add(-25*time.Hour), time.Now().Add(-25*time.Hour))
	done := make(chan struct{})
	go func() { in.Server.Run(ctx, 10*time.Millisecond); close(done) }()
	waitFor(t, func() bool { return dirNames(t, tmp) == "put-fresh" })
	cancel()
	<-done
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 10 s")
}

// OpenWith refuses a blob store it cannot use before serving anything:
// a URL it does not understand, S3 without credentials, and the
// filesystem store's limits given to S3. (internal/blob/s3blob and
// cmd/rampart-server's TestServeBlobsOnS3 open a real bucket.)
func TestOpenRefusesBadBlobStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv")
	if _, err := datadir.Init(dir, datadir.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	limited := quietConfig()
	limited.BlobLimits = &blob.Limits{Quota: 1000}
	for _, c := range []struct {
		url  string
		cfg  server.Config
		want string
	}{
		{"ftp://bucket/x", quietConfig(), "is not an s3://"},
		{"s3://bucket/x?endpont=http://127.0.0.1:1", quietConfig(), `unknown parameter "endpont"`},
		{"s3://bucket/x?endpoint=http://127.0.0.1:1", quietConfig(), "no credentials"},
		{"s3://bucket/x?endpoint=http://127.0.0.1:1", limited, "blob_quota"},
	} {
		in, err := datadir.OpenWith(context.Background(), dir, c.cfg, datadir.OpenOptions{BlobStore: c.url})
		if err == nil {
			in.Close()
			t.Errorf("%s: opened", c.url)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.url, err, c.want)
		}
	}
	// And it left the directory usable.
	in, err := datadir.Open(context.Background(), dir, quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
}
