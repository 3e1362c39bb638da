package datadir

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// ErrStoreInitialized means init was given a PostgreSQL database that
// already holds a server's store.
var ErrStoreInitialized = errors.New("the PostgreSQL database already holds a server's store")

// ErrStoreEmpty means serve was given a PostgreSQL database that no init
// prepared (it has no operator token).
var ErrStoreEmpty = errors.New("the PostgreSQL database holds no server's store")

// openStore opens the metadata store dsn names: DIR/rampart.db when it
// is empty, else the PostgreSQL database.
func openStore(ctx context.Context, dir, dsn string) (store.Store, error) {
	if dsn == "" {
		return sqlite.Open(filepath.Join(dir, "rampart.db"))
	}
	return postgres.Open(ctx, dsn)
}

// initWithStore initialises dir as initDir does and gives the PostgreSQL
// database o.Store the same admin token. The database must hold no
// operator token. The token is added after the directory is complete;
// if that step is cut short, init with the same --store runs it again on
// the complete directory (as it does for a directory whose SQLite store
// is still as init left it, so a new server's data directory can move to
// PostgreSQL before it is used), and prints a new admin token.
func initWithStore(dir string, o InitOptions) (*InitResult, error) {
	ctx := context.Background()
	pg, err := postgres.Open(ctx, o.Store)
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	toks, err := pg.OperatorTokens(ctx)
	if err != nil {
		return nil, err
	}
	if len(toks) > 0 {
		return nil, fmt.Errorf("%s: %w (it has operator tokens); give each server a new, empty database, or, for another replica of that server, copy its data directory and serve it with the same --store", postgres.Redact(o.Store), ErrStoreInitialized)
	}
	state, err := inspectDataDir(dir)
	if err != nil {
		return nil, err
	}
	var res *InitResult
	if state == dirComplete {
		if err := checkUnused(ctx, dir); err != nil {
			return nil, err
		}
		if res, err = publicKeys(dir); err != nil {
			return nil, err
		}
		res.AdminToken, _ = server.NewToken()
	} else if res, err = initDir(dir, o); err != nil {
		return nil, err
	}
	err = pg.CreateOperatorToken(ctx, store.OperatorToken{Hash: server.HashToken(res.AdminToken), Name: "admin", Role: server.RoleAdmin, CreatedAt: time.Now()})
	if err != nil {
		return nil, fmt.Errorf("%s is initialised, but its admin token could not be stored in %s: %w; run rampart-server init --data %s --store DSN again", dir, postgres.Redact(o.Store), err, dir)
	}
	return res, nil
}

// checkUnused refuses a data directory whose SQLite store holds more
// than init put there: its data would not follow it to PostgreSQL.
func checkUnused(ctx context.Context, dir string) error {
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.CountDevices(ctx)
	if err != nil {
		return err
	}
	es, err := db.AuditEntries(ctx, 0, 1)
	if err != nil {
		return err
	}
	_, derr := db.Doc(ctx, "image", "root", 0)
	if n > 0 || len(es) > 0 || !errors.Is(derr, store.ErrNotFound) {
		return fmt.Errorf("%s: %w, and its SQLite store (rampart.db) is in use: to move it to PostgreSQL, stop the server and run rampart-server copy-store --data %s --store DSN", dir, ErrInitialized, dir)
	}
	return nil
}

// publicKeys reads the online public keys init printed.
func publicKeys(dir string) (*InitResult, error) {
	res := &InitResult{Public: map[string]string{}}
	for _, role := range []string{"snapshot", "timestamp", "log"} {
		b, err := os.ReadFile(filepath.Join(dir, "online", role+".pub"))
		if err != nil {
			return nil, err
		}
		res.Public[role] = string(b)
	}
	res.Public["log"] = strings.TrimSpace(res.Public["log"])
	return res, nil
}

// CopyStore copies the SQLite store of the data directory dir into the
// PostgreSQL database dsn, which must be empty (ErrStoreInitialized
// otherwise; init --store is for a new directory): every device, token,
// release, rollout and audit entry, so that the operator tokens in use go
// on working and the audit chain goes on from its last entry. The server
// must be stopped; SQLite's write lock is held for the copy, so a server
// still running waits rather than writing what the copy would miss.
// dir/rampart.db is left as it was. It returns the rows copied per table.
func CopyStore(ctx context.Context, dir, dsn string) (map[string]int64, error) {
	state, err := inspectDataDir(dir)
	if err != nil {
		return nil, err
	}
	if state != dirComplete {
		return nil, fmt.Errorf("%s is not an initialised data directory with a SQLite store", dir)
	}
	path := filepath.Join(dir, "rampart.db")
	// Opening migrates the store to its newest schema, the one the
	// PostgreSQL store's migrations mirror.
	lite, err := sqlite.Open(path)
	if err != nil {
		return nil, err
	}
	if err := lite.Close(); err != nil {
		return nil, err
	}
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	src, err := raw.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is the server still running? stop it first)", path, err)
	}
	defer src.Rollback() //nolint:errcheck // read only
	pg, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	n, err := pg.Import(ctx, src)
	if errors.Is(err, postgres.ErrImportNotEmpty) {
		return nil, fmt.Errorf("%s: %w: %w", postgres.Redact(dsn), ErrStoreInitialized, err)
	}
	return n, err
}
