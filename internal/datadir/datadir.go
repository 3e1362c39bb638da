// Package datadir owns rampart-server's data directory: its layout, the
// atomic init that creates it, opening it (which metadata store, blob
// store, transparency log, online keys, CAs and serving certificate) into
// a running server, and the rotation of the online and log keys kept in
// it. It is the server's wiring: the HTTP package (server) takes the
// pieces it needs as interfaces and never knows where they live, so
// another metadata store is a change here only.
package datadir

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/blob/s3blob"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/hostedrepo"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres"
	"github.com/rampartfw/rampart/internal/store/sqlite"
	"github.com/rampartfw/rampart/internal/tlog"
)

// The data directory holds everything a server instance needs:
//
//	rampart.db                 metadata store (SQLite)
//	blobs/                     payloads and chunk indexes
//	log/                       transparency log tiles and checkpoints
//	keys/ (0700)               private keys: snapshot, timestamp, log,
//	                           ca, tls, device-ca
//	ca.pem                     the server CA, which clients pin
//	tls.crt                    the serving certificate
//	device-ca.pem              the CA of device client certificates
//	online/                    public keys for the offline ceremony:
//	                           snapshot.pub, timestamp.pub, log.pub

// InitOptions configure a new data directory.
type InitOptions struct {
	// Hosts are the DNS names and IP addresses of the serving certificate.
	Hosts []string
	// LogOrigin names the transparency log in its checkpoints.
	LogOrigin string
	// Store is where the metadata lives: empty for DIR/rampart.db
	// (SQLite), or a PostgreSQL DSN (postgres://...), which gets the
	// admin token (see InitStore).
	Store string
}

// InitResult is what init prints once.
type InitResult struct {
	AdminToken string
	// Public holds the online public keys, by role.
	Public map[string]string
}

// ErrInitialized means the data directory already holds a server.
var ErrInitialized = errors.New("data directory is already initialised")

// ErrIncomplete means the data directory was left by an init that did not
// finish: serve refuses it, and init starts it afresh.
var ErrIncomplete = errors.New("data directory is incomplete: rampart-server init did not finish")

// Init is atomic: a kill at any moment leaves no data directory or a
// complete one. A new directory is built beside its final place and
// renamed into it. An existing (empty) directory, such as a mount point,
// cannot be replaced by a rename; init then marks it incomplete first
// (initMarker), builds inside it, moves the entries into place with
// rampart.db last, and removes the mark.
const (
	// initMarker marks a data directory whose init has not finished.
	initMarker = ".rampart-init-incomplete"
	// stagingPrefix names the directory an in-place init builds in.
	stagingPrefix = ".rampart-staging-"
)

// initEntries are the entries init makes, and the only ones a recovering
// init removes.
var initEntries = []string{"rampart.db", "rampart.db-wal", "rampart.db-shm", "rampart.db-journal",
	"blobs", "log", "keys", "online", "ca.pem", "tls.crt", "device-ca.pem"}

// Init creates a data directory with fresh keys, CAs, a serving
// certificate, an empty store and an admin token. It recovers a directory
// left by an init that did not finish (ErrIncomplete) by starting afresh:
// nothing in one was usable, as its admin token was never shown.
func Init(dir string, o InitOptions) (*InitResult, error) {
	dir = filepath.Clean(dir)
	if o.Store != "" {
		return initWithStore(dir, o)
	}
	return initDir(dir, o)
}

func initDir(dir string, o InitOptions) (*InitResult, error) {
	state, err := inspectDataDir(dir)
	if err != nil {
		return nil, err
	}
	if state == dirComplete {
		return nil, fmt.Errorf("%s: %w", dir, ErrInitialized)
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	if o.LogOrigin == "" {
		o.LogOrigin = "rampart.local/log"
	}
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	siblingPrefix := "." + base + ".init-"
	// Left by a killed init of a new directory: never a data directory.
	if names, err := fsys.OS.ReadDir(parent); err == nil {
		for _, n := range names {
			if strings.HasPrefix(n, siblingPrefix) {
				os.RemoveAll(filepath.Join(parent, n))
			}
		}
	}
	if state == dirAbsent {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, err
		}
		staging, err := os.MkdirTemp(parent, siblingPrefix)
		if err != nil {
			return nil, err
		}
		res, err := buildDataDir(staging, o)
		if err == nil {
			err = atomicfile.Rename(staging, dir)
		}
		if err != nil {
			os.RemoveAll(staging)
			return nil, fmt.Errorf("init %s: %w", dir, err)
		}
		return res, nil
	}
	// In place: mark, clear what an interrupted init left, build, move.
	marker := filepath.Join(dir, initMarker)
	if err := atomicfile.WriteFile(marker, []byte("rampart-server init has not finished here; run it again to start afresh\n"), 0o600); err != nil {
		return nil, err
	}
	if err := clearInitEntries(dir); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(dir, stagingPrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	res, err := buildDataDir(staging, o)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	names, err := fsys.OS.ReadDir(staging)
	if err != nil {
		return nil, err
	}
	// rampart.db last: until it is there, serve finds no data directory.
	names = append(slices.DeleteFunc(names, func(n string) bool { return n == "rampart.db" }), "rampart.db")
	for _, n := range names {
		if err := os.Rename(filepath.Join(staging, n), filepath.Join(dir, n)); err != nil {
			return nil, fmt.Errorf("init %s: %w", dir, err)
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, err
	}
	if err := os.Remove(marker); err != nil {
		return nil, err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, err
	}
	return res, nil
}

type dirState int

const (
	dirAbsent dirState = iota
	// dirEmpty: exists, holding nothing init makes.
	dirEmpty
	// dirInterrupted: left by an init that did not finish.
	dirInterrupted
	dirComplete
)

// inspectDataDir says what dir holds. It refuses (with an error) a
// directory that holds entries init makes without evidence that an init
// made them, rather than remove what may be someone else's.
func inspectDataDir(dir string) (dirState, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return dirAbsent, nil
	} else if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is not a directory", dir)
	}
	if _, err := os.Lstat(filepath.Join(dir, initMarker)); err == nil {
		return dirInterrupted, nil
	}
	if _, err := os.Lstat(filepath.Join(dir, "rampart.db")); err == nil {
		return inspectStore(dir)
	}
	var ours []string
	for _, n := range initEntries {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			ours = append(ours, n)
		}
	}
	if len(ours) > 0 {
		return 0, fmt.Errorf("%s holds %s but no rampart.db: not a data directory (or one from an init of an older version that did not finish); remove those entries, or choose an empty or new directory", dir, strings.Join(ours, ", "))
	}
	return dirEmpty, nil
}

// inspectStore tells a complete data directory (its store has an
// operator token: init adds the admin token last, and the last admin
// token can never be revoked) from one whose init was killed before the
// token, which holds nothing else.
func inspectStore(dir string) (dirState, error) {
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	ctx := context.Background()
	toks, err := db.OperatorTokens(ctx)
	if err != nil {
		return 0, err
	}
	if len(toks) > 0 {
		return dirComplete, nil
	}
	devices, err := db.CountDevices(ctx)
	if err != nil {
		return 0, err
	}
	entries, err := db.AuditEntries(ctx, 0, 1)
	if err != nil {
		return 0, err
	}
	if devices > 0 || len(entries) > 0 {
		return 0, fmt.Errorf("%s: its store has no operator token but holds devices or audit entries: it is not an unfinished init and is left alone; restore it from a backup", dir)
	}
	return dirInterrupted, nil
}

// clearInitEntries removes what an unfinished init left in dir.
func clearInitEntries(dir string) error {
	names, err := fsys.OS.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if slices.Contains(initEntries, n) || strings.HasPrefix(n, stagingPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return atomicfile.SyncDir(dir)
}

// buildDataDir makes a complete data directory's content in dir (an
// empty directory), every file and directory synced.
func buildDataDir(dir string, o InitOptions) (*InitResult, error) {
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(dir, "keys"), filepath.Join(dir, "online")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	res := &InitResult{Public: map[string]string{}}
	for _, role := range []string{"snapshot", "timestamp", "director-targets", "director-snapshot", "director-timestamp"} {
		priv, err := keys.Generate(keys.Ed25519)
		if err != nil {
			return nil, err
		}
		pem, err := keys.MarshalPrivate(priv, "")
		if err != nil {
			return nil, err
		}
		if err := atomicfile.CreateNew(filepath.Join(dir, "keys", role+".key"), pem, 0o600); err != nil {
			return nil, err
		}
		pub, err := keys.MarshalPublic(priv.Public())
		if err != nil {
			return nil, err
		}
		if err := atomicfile.CreateNew(filepath.Join(dir, "online", role+".pub"), pub, 0o644); err != nil {
			return nil, err
		}
		res.Public[role] = string(pub)
	}
	skey, vkey, err := tlog.GenerateKey(o.LogOrigin)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.CreateNew(filepath.Join(dir, "keys", "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateNew(filepath.Join(dir, "online", "log.pub"), []byte(vkey+"\n"), 0o644); err != nil {
		return nil, err
	}
	res.Public["log"] = vkey
	ca, err := pki.NewCA("rampart server CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := ca.Save(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "keys", "ca.key")); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.IssueServer(o.Hosts, 2*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.CreateNew(filepath.Join(dir, "tls.crt"), certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateNew(filepath.Join(dir, "keys", "tls.key"), keyPEM, 0o600); err != nil {
		return nil, err
	}
	dca, err := pki.NewCA("rampart device CA", 20*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := dca.Save(filepath.Join(dir, "device-ca.pem"), filepath.Join(dir, "keys", "device-ca.key")); err != nil {
		return nil, err
	}
	for _, d := range []string{"blobs", "log"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		return nil, err
	}
	secret, hash := server.NewToken()
	err = db.CreateOperatorToken(context.Background(), store.OperatorToken{Hash: hash, Name: "admin", Role: server.RoleAdmin, CreatedAt: time.Now()})
	// Closing checkpoints the WAL into rampart.db and removes it, so
	// the store is one file when it is moved into place.
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"keys", "online", "blobs", "log", "."} {
		if err := atomicfile.SyncDir(filepath.Join(dir, d)); err != nil {
			return nil, err
		}
	}
	res.AdminToken = secret
	return res, nil
}

// Instance is an opened data directory: a server and its TLS settings.
type Instance struct {
	Server *server.Server
	TLS    *tls.Config
	Store  store.Store
	Log    *tlog.Log
}

// Close releases the log and the store.
func (in *Instance) Close() error {
	return errors.Join(in.Log.Close(), in.Store.Close())
}

// Open opens an initialised data directory with the default
// implementations (OpenWith with no options).
func Open(ctx context.Context, dir string, c server.Config) (*Instance, error) {
	return OpenWith(ctx, dir, c, OpenOptions{})
}

// OpenOptions pick the implementations behind the server.
type OpenOptions struct {
	// BlobStore says where payloads and chunk indexes live: empty for
	// the filesystem store in DIR/blobs (the default), or an S3 URL,
	// s3://BUCKET/PREFIX?endpoint=...&region=... (s3blob.ParseURL).
	BlobStore string
	// BlobCredentials is an AWS shared-credentials file the S3 store
	// reads when the environment has no AWS_ACCESS_KEY_ID.
	BlobCredentials string
	// Store says where the metadata lives: empty for DIR/rampart.db
	// (SQLite, the default), or a PostgreSQL DSN, postgres://USER:PASSWORD@HOST:PORT/DATABASE
	// (postgres.Open), shared by every replica.
	Store string
	// LogDir is the transparency log's directory: empty for DIR/log. With
	// a PostgreSQL store the log is opened shared (tlog.Shared): replicas
	// over one database mount one log directory on shared storage, write
	// it one at a time under the repository's lease, and read it all.
	LogDir string
}

// OpenWith opens an initialised data directory: it loads the online keys
// (and those a rotation replaced), the store, the log and the blob store
// o names into c and builds the server and its TLS settings.
func OpenWith(ctx context.Context, dir string, c server.Config, o OpenOptions) (*Instance, error) {
	if _, err := os.Lstat(filepath.Join(dir, initMarker)); err == nil {
		return nil, fmt.Errorf("%s: %w; run rampart-server init --data %s again: it starts the directory afresh", dir, ErrIncomplete, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "rampart.db")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s has no rampart.db; create it with rampart-server init --data %s", dir, dir)
	}
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }
	loadSigner := func(name string) (keys.Signer, error) {
		return keys.OpenFile(filepath.Join(dir, "keys", name), nil)
	}
	var err error
	if c.Snapshot, err = loadSigner("snapshot.key"); err != nil {
		return nil, err
	}
	if c.Timestamp, err = loadSigner("timestamp.key"); err != nil {
		return nil, err
	}
	for _, k := range []struct {
		name string
		dst  *[]keys.Signer
	}{{"director-targets.key", &c.DirectorKeys.Targets}, {"director-snapshot.key", &c.DirectorKeys.Snapshot}, {"director-timestamp.key", &c.DirectorKeys.Timestamp}} {
		sg, err := loadSigner(k.name)
		if err != nil {
			return nil, err
		}
		*k.dst = []keys.Signer{sg}
	}
	if err := loadPrevious(dir, &c); err != nil {
		return nil, err
	}
	skey, err := read("keys/log.key")
	if err != nil {
		return nil, err
	}
	vkey, err := read("online/log.pub")
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, fmt.Errorf("keys/log.key: %w", err)
	}
	c.LogVerifierKey = strings.TrimSpace(string(vkey))
	db, err := openStore(ctx, dir, o.Store)
	if err != nil {
		return nil, err
	}
	// An older init that was killed before its last step left a store
	// without the admin token: a server nobody can administer.
	if toks, err := db.OperatorTokens(ctx); err != nil || len(toks) == 0 {
		db.Close()
		if err != nil {
			return nil, err
		}
		if o.Store != "" {
			return nil, fmt.Errorf("%w: the PostgreSQL store %s has no operator token; run rampart-server init --data %s --store DSN: it creates the admin token there", ErrStoreEmpty, postgres.Redact(o.Store), dir)
		}
		return nil, fmt.Errorf("%s: %w (its store has no operator token); run rampart-server init --data %s again: it starts the directory afresh", dir, ErrIncomplete, dir)
	}
	logDir := o.LogDir
	if logDir == "" {
		logDir = filepath.Join(dir, "log")
	}
	var logOpts []tlog.Option
	if o.Store != "" {
		logOpts = append(logOpts, tlog.Shared(repositoryTerm))
	}
	lg, err := tlog.Open(ctx, logDir, signer, signer.Name(), logOpts...)
	if err != nil {
		db.Close()
		return nil, err
	}
	in := &Instance{Store: db, Log: lg}
	fail := func(err error) (*Instance, error) { in.Close(); return nil, err }
	blobs, err := openBlobs(ctx, dir, c, o)
	if err != nil {
		return fail(err)
	}
	c.Store, c.Blobs, c.Log = db, blobs, lg
	c.DataDir = dir
	if c.DeviceCA, err = pki.LoadCA(filepath.Join(dir, "device-ca.pem"), filepath.Join(dir, "keys", "device-ca.key")); err != nil {
		return fail(err)
	}
	if in.Server, err = server.New(c); err != nil {
		return fail(err)
	}
	certPEM, err := read("tls.crt")
	if err != nil {
		return fail(err)
	}
	keyPEM, err := read("keys/tls.key")
	if err != nil {
		return fail(err)
	}
	dcaPEM, err := read("device-ca.pem")
	if err != nil {
		return fail(err)
	}
	dca, err := pki.ParseCertPEM(dcaPEM)
	if err != nil {
		return fail(err)
	}
	in.TLS, err = pki.ServerTLSConfig(certPEM, keyPEM, dca, in.Server.DeviceRevoked)
	if err != nil {
		return fail(err)
	}
	return in, nil
}

// openBlobs opens the blob store o names.
func openBlobs(ctx context.Context, dir string, c server.Config, o OpenOptions) (blob.Store, error) {
	if o.BlobStore != "" {
		if c.BlobLimits != nil {
			return nil, errors.New("blob_quota and disk_reserve bound the filesystem blob store; an S3 bucket's size is bounded by the bucket's own quota")
		}
		cfg, err := s3blob.ParseURL(o.BlobStore, o.BlobCredentials)
		if err != nil {
			return nil, err
		}
		// No CleanTemp(0) here: other replicas may be uploading. The
		// server aborts uploads abandoned for a day (and a bucket
		// lifecycle rule may too).
		return s3blob.New(ctx, cfg)
	}
	lim := server.DefaultBlobLimits(filepath.Join(dir, "blobs"))
	if c.BlobLimits != nil {
		lim = *c.BlobLimits
	}
	blobs, err := blob.NewLimitedFS(filepath.Join(dir, "blobs"), lim)
	if err != nil {
		return nil, err
	}
	// Uploads cut by a kill left their temporary files; no upload runs
	// before the server does.
	if n, err := blobs.CleanTemp(0); err != nil {
		return nil, err
	} else if n > 0 && c.Logger != nil {
		c.Logger.Info("removed temporary files of unfinished uploads", "files", n)
	}
	return blobs, nil
}

// repositoryTerm is the term of the repository's lease that ctx carries,
// by which a shared log fences its writers (tlog.Shared): only work done
// under that lease writes the log. Another lease's fence is no term of
// it, so the log refuses the write.
func repositoryTerm(ctx context.Context) (int64, bool) {
	f, ok := store.FenceFrom(ctx)
	if !ok {
		return 0, false
	}
	if f.Lease != hostedrepo.LeaseName {
		return 0, true
	}
	return f.Token, true
}
