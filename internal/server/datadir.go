package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/store"
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
}

// InitResult is what init prints once.
type InitResult struct {
	AdminToken string
	// Public holds the online public keys, by role.
	Public map[string]string
}

// ErrInitialized means the data directory already holds a server.
var ErrInitialized = errors.New("data directory is already initialised")

// InitDataDir creates a data directory with fresh keys, CAs, a serving
// certificate, an empty store and an admin token.
func InitDataDir(dir string, o InitOptions) (*InitResult, error) {
	if _, err := os.Stat(filepath.Join(dir, "rampart.db")); err == nil {
		return nil, fmt.Errorf("%s: %w", dir, ErrInitialized)
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	if o.LogOrigin == "" {
		o.LogOrigin = "rampart.local/log"
	}
	for _, d := range []string{dir, filepath.Join(dir, "keys"), filepath.Join(dir, "online")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
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
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	secret, hash := NewToken()
	if err := db.CreateOperatorToken(context.Background(), store.OperatorToken{Hash: hash, Name: "admin", Role: RoleAdmin, CreatedAt: time.Now()}); err != nil {
		return nil, err
	}
	res.AdminToken = secret
	return res, nil
}

// Instance is an opened data directory: a server and its TLS settings.
type Instance struct {
	Server *Server
	TLS    *tls.Config
	Store  store.Store
	Log    *tlog.Log
}

// Close releases the log and the store.
func (in *Instance) Close() error {
	return errors.Join(in.Log.Close(), in.Store.Close())
}

// OpenDataDir opens an initialised data directory.
func OpenDataDir(ctx context.Context, dir string, c Config) (*Instance, error) {
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
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		return nil, err
	}
	lg, err := tlog.Open(ctx, filepath.Join(dir, "log"), signer, signer.Name())
	if err != nil {
		db.Close()
		return nil, err
	}
	in := &Instance{Store: db, Log: lg}
	fail := func(err error) (*Instance, error) { in.Close(); return nil, err }
	blobs, err := blob.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		return fail(err)
	}
	c.Store, c.Blobs, c.Log = db, blobs, lg
	c.DataDir = dir
	if c.DeviceCA, err = pki.LoadCA(filepath.Join(dir, "device-ca.pem"), filepath.Join(dir, "keys", "device-ca.key")); err != nil {
		return fail(err)
	}
	if in.Server, err = New(c); err != nil {
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
	in.TLS, err = pki.ServerTLSConfig(certPEM, keyPEM, dca, in.Server.deviceRevoked)
	if err != nil {
		return fail(err)
	}
	return in, nil
}
