// Command rampart-server runs Rampart's update server: the hosted image
// repository, the transparency and audit logs and the operator API. This
// file parses configuration and wires internal/server; behaviour lives
// there.
//
// Configuration comes from flags, then environment variables, then an
// optional JSON file (--config), in that order of precedence.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	// The zone database, for maintenance windows on hosts without one
	// (a scratch or distroless image): about 450 KB.
	_ "time/tzdata"

	"k8s.io/klog/v2"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/command"
	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/lease"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres"
)

// program is the shared help, version and command lookup (internal/command).
var program = &command.Program{
	Name:  "rampart-server",
	Intro: "rampart-server runs Rampart's update server: the hosted image repository, each device's director repository, the transparency and audit logs, enrollment and the operator API.",
	More:  "docs/server.md describes the data directory, configuration and operation.",
	Commands: []*command.Command{
		{Name: "init", Summary: "create a data directory: store, logs, online keys, CAs, an admin token", Usage: `
Usage: rampart-server init --data DIR [--host NAME...] [--log-origin NAME] [--store DSN] [--config FILE]

Creates DIR with the metadata store, the blob and log directories, the
online keys (snapshot, timestamp, log), the server CA (DIR/ca.pem, which
clients pin), a serving certificate for the hosts, and the device CA, and
prints the online public keys and an admin token, once.

Flags:
    --data DIR          the data directory (or RAMPART_DATA)
    --host NAME         a DNS name or IP address of the serving certificate (repeat)
    --log-origin NAME   the transparency log's origin line
    --store DSN         keep the metadata in PostgreSQL, postgres://USER:PASSWORD@HOST:PORT/DATABASE
                        (or RAMPART_STORE), an empty database that gets the admin token;
                        SQLite in DIR/rampart.db when left out
    --config FILE       a JSON file with "data", "hosts", "log_origin", "store" (or RAMPART_CONFIG)

Example:
    rampart-server init --data srv --host updates.example.com
`},
		{Name: "serve", Summary: "serve HTTPS until SIGINT or SIGTERM", Usage: `
Usage: rampart-server serve --data DIR [--listen ADDR] [--store DSN] [--manufacturer-ca FILE] [--config FILE]

Serves HTTPS on ADDR (default 127.0.0.1:8443) until SIGINT or SIGTERM,
then drains requests for up to 30 seconds. With --manufacturer-ca FILE
(PEM, one or more CA certificates), devices may also enroll with a
certificate from one of those manufacturer CAs instead of a one-time token.

Flags:
    --data DIR                the data directory (or RAMPART_DATA)
    --listen ADDR             HOST:PORT to listen on (or RAMPART_LISTEN)
    --store DSN               the metadata store: SQLite in DIR/rampart.db by default,
                              or PostgreSQL, postgres://USER:PASSWORD@HOST:PORT/DATABASE
                              (or RAMPART_STORE, or "store"), which init --store
                              prepared; several replicas may share it (docs/scaling.md)
    --manufacturer-ca FILE    manufacturer CA certificates (or RAMPART_MANUFACTURER_CA)
    --config FILE             a JSON file with "data", "listen", "hosts",
                              "log_origin", "manufacturer_ca" (or RAMPART_CONFIG);
                              flags win over the environment, which wins over the file.
                              It may also bound slow and anonymous clients:
                              "body_timeout" (default "30s"), "response_timeout"
                              ("2m"), "min_transfer_rate" (bytes/s, 1024) and
                              "max_unauthenticated" (concurrent requests without
                              credentials; a quarter of the open-file limit),
                              "report_burst" (30) and "report_interval" ("1m") per
                              device; storage: "blob_quota" (bytes; none),
                              "disk_reserve" (bytes kept free; 1 GiB or 5 % of the
                              disk), "blob_grace" ("24h" before an unreferenced blob
                              expires), "audit_retention" ("8760h", or "forever");
                              and "metrics_listen" (HOST:PORT serving /metrics over
                              plain HTTP without a token; on the API listener
                              /metrics needs an operator token); "blob_store"
                              (or RAMPART_BLOB_STORE): DATA/blobs by default, or
                              "s3://BUCKET/PREFIX?endpoint=https://HOST:PORT" with
                              credentials from AWS_ACCESS_KEY_ID and
                              AWS_SECRET_ACCESS_KEY or the AWS credentials file
                              "blob_store_credentials"; see docs/server.md;
                              "log_dir" (or RAMPART_LOG_DIR): the transparency
                              log, DATA/log by default; replicas over one
                              PostgreSQL mount one directory on shared storage
                              here (docs/scaling.md); "lease_ttl" ("30s"): a
                              replica that dies holding the background work or a
                              push is replaced within it and a third of it;
                              "background_interval" ("1m", 1s to 1h): how often
                              each replica reloads revocations and the director
                              root, and the lease holder refreshes timestamps and
                              steps rollouts

Example:
    rampart-server serve --data srv --listen 127.0.0.1:8443
    rampart-server serve --data srv --store postgres://rampart:PASSWORD@db.example.com:5432/rampart
    rampart-server serve --data srv --manufacturer-ca acme-factory-ca.pem
`},
		{Name: "copy-store", Summary: "copy the SQLite store into an empty PostgreSQL database", Usage: `
Usage: rampart-server copy-store --data DIR --store DSN

Copies everything in DIR/rampart.db (devices, tokens, releases, rollouts,
the audit log) into the PostgreSQL database DSN, which must be empty, in
one transaction: the copy is whole or absent. Operator tokens in use go on
working and the audit chain goes on from its last entry. Stop the server
first; afterwards serve DIR with --store DSN (or "store" in the config
file). DIR/rampart.db is left as it was: do not serve it again, it would
miss whatever the PostgreSQL store records from then on. The transparency
log and the blobs stay where they are (log_dir, blob_store).

Flags:
    --data DIR    the data directory (or RAMPART_DATA)
    --store DSN   postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full
                  (or RAMPART_STORE, or "store" in the config file)

Example:
    systemctl stop rampart-server
    rampart-server copy-store --data srv --store postgres://rampart@db.example.com:5432/rampart
`},
		{Name: "rotate-keys", Summary: "replace the online keys (after a compromise, or on schedule)", Usage: `
Usage: rampart-server rotate-keys --data DIR [--image] [--director] [--log]

Generates new online keys in DIR: --image the image repository's snapshot
and timestamp keys, --director the director's targets, snapshot and
timestamp keys, --log the transparency log's key. Each replaced key is
kept in DIR/keys/previous/ (its public key in DIR/online/previous/).
Prints the new key ids and public key files.

Online keys (--image, --director): restart the server afterwards. It
keeps signing with the previous keys while the root still names them,
and with the new ones alone once the root key holders have pushed a root
naming them (rampart repo rotate, repo sign, repo push; for the director,
director push-root). Devices walk to the new root at their next check-in
and drop whatever the old keys signed, whatever its version.

The log key (--log) needs the server stopped (every replica): the log's
checkpoint, in DATA/log or the configured log_dir, is re-signed with the
new key; then the root key holders name it in the image repository's root
(rampart repo set-log-key, repo sign, repo push), and devices discard the
checkpoint of the retired key. With replicas, copy DATA/keys and
DATA/online to every replica's data directory before restarting them.

docs/incident-response.md has the whole ceremony for each key.

Flags:
    --data DIR    the data directory (or RAMPART_DATA)
    --image       rotate the image repository's online keys
    --director    rotate the director's online keys
    --log         rotate the transparency log's key (server stopped)
    --config FILE the configuration file (or RAMPART_CONFIG): its log_dir
                  (or RAMPART_LOG_DIR) is the log re-signed

Example:
    rampart-server rotate-keys --data srv --image --director
`},
		{Name: "version", Summary: "print the version", Usage: `
Usage: rampart-server version

Example:
    rampart-server version
`},
	},
	ExitStatus: `    0  success
    2  usage or configuration error (flags, config file, an initialised directory
       or database, a malformed --store DSN)
    3  environment error (data directory, keys, network, PostgreSQL unreachable)`,
}

type fileConfig struct {
	Data           string   `json:"data"`
	Listen         string   `json:"listen"`
	Hosts          []string `json:"hosts"`
	LogOrigin      string   `json:"log_origin"`
	ManufacturerCA string   `json:"manufacturer_ca"`
	// Limits on slow clients (server.Limits); durations as "30s".
	BodyTimeout        string `json:"body_timeout"`
	ResponseTimeout    string `json:"response_timeout"`
	MinTransferRate    int64  `json:"min_transfer_rate"`
	MaxUnauthenticated int    `json:"max_unauthenticated"`
	// Per-device report rate.
	ReportBurst    int    `json:"report_burst"`
	ReportInterval string `json:"report_interval"`
	// Storage and retention.
	BlobQuota      int64  `json:"blob_quota"`
	DiskReserve    *int64 `json:"disk_reserve"`
	BlobGrace      string `json:"blob_grace"`
	AuditRetention string `json:"audit_retention"`
	// MetricsListen serves /metrics without a token on its own address.
	MetricsListen string `json:"metrics_listen"`
	// BlobStore is where blobs live: empty for DATA/blobs, or
	// s3://BUCKET/PREFIX?endpoint=...; BlobStoreCredentials an AWS
	// shared-credentials file for it (the environment wins).
	BlobStore            string `json:"blob_store"`
	BlobStoreCredentials string `json:"blob_store_credentials"`
	// Store is the metadata store: empty for DATA/rampart.db, or a
	// PostgreSQL DSN.
	Store string `json:"store"`
	// LogDir is the transparency log's directory: empty for DATA/log;
	// with replicas, one directory on shared storage that all mount.
	LogDir string `json:"log_dir"`
	// LeaseTTL is the lifetime of the leases replicas take (the
	// background work's, a push's): a replica that dies holding one is
	// replaced within it and a third of it. Empty for 30s.
	LeaseTTL string `json:"lease_ttl"`
	// BackgroundInterval is how often the background work runs: each
	// replica's reloads (revocations, the director root) and the lease
	// holder's rounds. Empty for a minute.
	BackgroundInterval string `json:"background_interval"`
}

// limits returns the file's limits; what it leaves out takes the default.
func (fc fileConfig) limits() (server.Limits, error) {
	var l server.Limits
	for _, d := range []struct {
		name, v string
		dst     *time.Duration
	}{{"body_timeout", fc.BodyTimeout, &l.BodyTimeout}, {"response_timeout", fc.ResponseTimeout, &l.ResponseTimeout}} {
		if d.v == "" {
			continue
		}
		t, err := time.ParseDuration(d.v)
		if err != nil || t <= 0 {
			return l, fmt.Errorf("%s %q is not a positive duration such as \"30s\"", d.name, d.v)
		}
		*d.dst = t
	}
	if fc.MinTransferRate < 0 || fc.MaxUnauthenticated < 0 || fc.ReportBurst < 0 {
		return l, errors.New("min_transfer_rate, max_unauthenticated and report_burst must be positive (or left out for the default)")
	}
	l.MinRate, l.MaxUnauthenticated, l.ReportBurst = fc.MinTransferRate, fc.MaxUnauthenticated, fc.ReportBurst
	if fc.ReportInterval != "" {
		d, err := time.ParseDuration(fc.ReportInterval)
		if err != nil || d <= 0 {
			return l, fmt.Errorf("report_interval %q is not a positive duration such as \"1m\"", fc.ReportInterval)
		}
		l.ReportEvery = d
	}
	return l, nil
}

// storage returns the file's retention and blob limits (nil: the
// defaults); what it leaves out takes the default.
func (fc fileConfig) storage() (server.Retention, *blob.Limits, error) {
	var r server.Retention
	if fc.BlobGrace != "" {
		d, err := time.ParseDuration(fc.BlobGrace)
		if err != nil || d <= 0 {
			return r, nil, fmt.Errorf("blob_grace %q is not a positive duration such as \"24h\"", fc.BlobGrace)
		}
		r.BlobGrace = d
	}
	switch fc.AuditRetention {
	case "":
	case "forever":
		r.Audit = -1
	default:
		d, err := time.ParseDuration(fc.AuditRetention)
		if err != nil || d <= 0 {
			return r, nil, fmt.Errorf("audit_retention %q is not a positive duration such as \"8760h\", or \"forever\"", fc.AuditRetention)
		}
		r.Audit = d
	}
	if fc.BlobQuota < 0 || fc.DiskReserve != nil && *fc.DiskReserve < 0 {
		return r, nil, errors.New("blob_quota and disk_reserve are bytes, 0 or more")
	}
	if fc.BlobQuota == 0 && fc.DiskReserve == nil {
		return r, nil, nil
	}
	lim := &blob.Limits{Quota: fc.BlobQuota, Reserve: -1}
	if fc.DiskReserve != nil {
		lim.Reserve = *fc.DiskReserve
	}
	return r, lim, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	// tessera logs through klog, in its own plain-text format on stderr;
	// send it to stderr as JSON lines like the server's own log. (Once,
	// here: klog's logger is global and not safe to swap while in use.)
	klog.SetSlogLogger(slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "tessera"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs one command; serve stops when ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, args, done, err := program.Resolve(args, stdout)
	if done {
		return 0
	}
	var unknown *command.UnknownError
	if errors.As(err, &unknown) {
		return fail(stderr, 2, err, unknown.Hint())
	}
	args = append([]string{cmd.Name}, args...)
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "")
	listen := fs.String("listen", "", "")
	cfgFile := fs.String("config", "", "")
	origin := fs.String("log-origin", "", "")
	storeDSN := fs.String("store", "", "")
	manufacturerCA := fs.String("manufacturer-ca", "", "")
	rotImage := fs.Bool("image", false, "")
	rotDirector := fs.Bool("director", false, "")
	rotLog := fs.Bool("log", false, "")
	var hosts multiFlag
	fs.Var(&hosts, "host", "")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			program.Help(stdout, cmd)
			return 0
		}
		return fail(stderr, 2, err, "rampart-server "+cmd.Name+" --help shows the options")
	}
	// Precedence: flags, then environment, then the config file.
	var fc fileConfig
	if *cfgFile == "" {
		*cfgFile = os.Getenv("RAMPART_CONFIG")
	}
	if *cfgFile != "" {
		b, err := os.ReadFile(*cfgFile)
		if err != nil {
			return fail(stderr, 2, err, "check --config")
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return fail(stderr, 2, fmt.Errorf("%s: %w", *cfgFile, err), `the config file is JSON with "data", "listen", "hosts", "log_origin", "manufacturer_ca", "body_timeout", "response_timeout", "min_transfer_rate", "max_unauthenticated", "report_burst", "report_interval", "blob_quota", "disk_reserve", "blob_grace", "audit_retention", "metrics_listen", "blob_store", "blob_store_credentials", "store", "log_dir", "lease_ttl", "background_interval"`)
		}
	}
	pick := func(flagVal, env, file, def string) string {
		for _, v := range []string{flagVal, os.Getenv(env), file} {
			if v != "" {
				return v
			}
		}
		return def
	}
	dir := pick(*data, "RAMPART_DATA", fc.Data, "")
	if dir == "" {
		return fail(stderr, 2, errors.New("no data directory"), "give --data DIR (or RAMPART_DATA)")
	}
	if len(hosts) == 0 {
		hosts = fc.Hosts
	}
	storeDB := pick(*storeDSN, "RAMPART_STORE", fc.Store, "")
	if storeDB == "sqlite" {
		storeDB = ""
	}
	if storeDB != "" && !postgres.IsDSN(storeDB) {
		return fail(stderr, 2, fmt.Errorf("--store %s is not a PostgreSQL DSN", postgres.Redact(storeDB)), storeHint)
	}
	switch args[0] {
	case "init":
		res, err := datadir.Init(dir, datadir.InitOptions{Hosts: hosts, LogOrigin: pick(*origin, "", fc.LogOrigin, ""), Store: storeDB})
		if err != nil {
			return fail(stderr, exitFor(err), err, hintFor(err))
		}
		fmt.Fprintf(stdout, "initialised %s\n\nonline public keys (for the offline root ceremony; also in %s/online/):\n", dir, dir)
		for _, role := range []string{"snapshot", "timestamp"} {
			fmt.Fprintf(stdout, "%s:\n%s", role, res.Public[role])
		}
		fmt.Fprintf(stdout, "transparency log key: %s\n\nadmin token (shown once, store it now):\n%s\n", res.Public["log"], res.AdminToken)
		return 0
	case "copy-store":
		dsn := storeDB
		if dsn == "" {
			return fail(stderr, 2, errors.New("copy-store needs the PostgreSQL database to copy into"), "give --store postgres://USER:PASSWORD@HOST:PORT/DATABASE")
		}
		n, err := datadir.CopyStore(ctx, dir, dsn)
		if err != nil {
			return fail(stderr, exitFor(err), err, hintFor(err))
		}
		var total int64
		for _, c := range n {
			total += c
		}
		fmt.Fprintf(stdout, "copied %s into %s: %d devices, %d audit entries, %d rows in all\nserve it with: rampart-server serve --data %s --store DSN\n",
			filepath.Join(dir, "rampart.db"), postgres.Redact(dsn), n["devices"], n["audit"], total, dir)
		return 0
	case "rotate-keys":
		var roles []string
		if *rotImage {
			roles = append(roles, datadir.ImageRoles...)
		}
		if *rotDirector {
			roles = append(roles, datadir.DirectorRoles...)
		}
		if len(roles) == 0 && !*rotLog {
			return fail(stderr, 2, errors.New("nothing to rotate"), "give --image, --director and/or --log")
		}
		if len(roles) > 0 {
			rot, err := datadir.RotateKeys(dir, roles)
			if err != nil {
				return fail(stderr, 3, err, "")
			}
			for _, r := range rot {
				fmt.Fprintf(stdout, "%s: new key %s (was %s), public key %s\n", r.Role, r.NewID, r.PreviousID, r.PublicFile)
			}
		}
		if *rotLog {
			// The shared log of replicas is where serve finds it.
			vkey, err := datadir.RotateLogKey(dir, pick("", "RAMPART_LOG_DIR", fc.LogDir, ""))
			if err != nil {
				return fail(stderr, 3, err, "stop the server first; run rotate-keys --log again to finish a rotation that was cut short")
			}
			fmt.Fprintf(stdout, "log: new verifier key %s (in %s)\n", vkey, filepath.Join(dir, "online", "log.pub"))
		}
		return 0
	case "serve":
		lim, err := fc.limits()
		if err != nil {
			return fail(stderr, 2, fmt.Errorf("%s: %w", *cfgFile, err), "docs/server.md lists the limits and their defaults")
		}
		ret, blobLim, err := fc.storage()
		if err != nil {
			return fail(stderr, 2, fmt.Errorf("%s: %w", *cfgFile, err), "docs/server.md lists the storage settings and their defaults")
		}
		if blobLim != nil && blobLim.Reserve < 0 {
			blobLim.Reserve = server.DefaultBlobLimits(filepath.Join(dir, "blobs")).Reserve
		}
		c := server.Config{Limits: lim, Retention: ret, BlobLimits: blobLim}
		if fc.LeaseTTL != "" {
			// At least a second: a renewal (every third of it) must fit
			// a few database round trips on a busy server.
			d, err := time.ParseDuration(fc.LeaseTTL)
			if err != nil || d < time.Second {
				return fail(stderr, 2, fmt.Errorf("%s: lease_ttl %q is not a duration of at least 1s such as \"30s\"", *cfgFile, fc.LeaseTTL), "docs/scaling.md#replicas")
			}
			c.LeaseTTL = d
		}
		every := time.Minute
		if fc.BackgroundInterval != "" {
			// Under a second the reloads would load the store for little;
			// over an hour, revocations would take that long to reach
			// the other replicas, and timestamps (a day) would be
			// refreshed late.
			d, err := time.ParseDuration(fc.BackgroundInterval)
			if err != nil || d < time.Second || d > time.Hour {
				return fail(stderr, 2, fmt.Errorf("%s: background_interval %q is not a duration from 1s to 1h such as \"1m\"", *cfgFile, fc.BackgroundInterval), "docs/scaling.md#bounds-in-one-place")
			}
			every = d
		}
		var attrs []any
		if path := pick(*manufacturerCA, "RAMPART_MANUFACTURER_CA", fc.ManufacturerCA, ""); path != "" {
			pool, certs, err := pki.LoadCABundle(path)
			if err != nil {
				return fail(stderr, 2, err, "--manufacturer-ca (or RAMPART_MANUFACTURER_CA, or manufacturer_ca) is a PEM file of the manufacturers' CA certificates")
			}
			c.ManufacturerCAs = pool
			var names []string
			for _, ca := range certs {
				names = append(names, ca.Subject.String())
			}
			attrs = []any{"manufacturer_ca", path, "manufacturers", names}
		}
		backends := datadir.OpenOptions{
			BlobStore:       pick("", "RAMPART_BLOB_STORE", fc.BlobStore, ""),
			BlobCredentials: fc.BlobStoreCredentials,
			Store:           storeDB,
			LogDir:          pick("", "RAMPART_LOG_DIR", fc.LogDir, ""),
		}
		return serve(ctx, dir, pick(*listen, "RAMPART_LISTEN", fc.Listen, "127.0.0.1:8443"), fc.MetricsListen, every, c, backends, stderr, attrs...)
	}
	return fail(stderr, 2, fmt.Errorf("unknown command %q", args[0]), "rampart-server --help lists the commands")
}

const storeHint = `--store (or RAMPART_STORE, or "store") takes postgres://USER:PASSWORD@HOST:PORT/DATABASE; leave it out for SQLite in DATA/rampart.db`

func exitFor(err error) int {
	if errors.Is(err, datadir.ErrInitialized) || errors.Is(err, datadir.ErrStoreInitialized) || errors.Is(err, postgres.ErrDSN) {
		return 2
	}
	return 3
}

// hintFor says what to do about an error opening the store.
func hintFor(err error) string {
	switch {
	case errors.Is(err, postgres.ErrDSN):
		return storeHint
	case errors.Is(err, postgres.ErrUnreachable):
		return "check that PostgreSQL is running and reachable from here, and the user, password, database and sslmode in --store; rampart-server does not create the database (CREATE DATABASE first)"
	case errors.Is(err, store.ErrSchemaTooNew):
		return "a newer rampart-server migrated this store: run that version (on every replica)"
	}
	return ""
}

// leaseTTL is the lease lifetime the server uses for ttl (0: the default).
func leaseTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return lease.DefaultTTL
	}
	return ttl
}

func fail(w io.Writer, code int, err error, hint string) int {
	fmt.Fprintf(w, "rampart-server: error: %v\n", err)
	if hint != "" {
		fmt.Fprintf(w, "rampart-server: hint: %s\n", hint)
	}
	return code
}

func serve(ctx context.Context, dir, addr, metricsAddr string, every time.Duration, c server.Config, backends datadir.OpenOptions, stderr io.Writer, attrs ...any) int {
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	c.Logger = logger
	in, err := datadir.OpenWith(ctx, dir, c, backends)
	if err != nil {
		return fail(stderr, exitFor(err), err, hintFor(err))
	}
	defer in.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fail(stderr, 3, err, "is another server listening there?")
	}
	hs := in.Server.HTTPServer(in.TLS, slog.NewLogLogger(logger.Handler(), slog.LevelWarn))
	// Run ends before the store closes (deferred calls run last first):
	// it releases the background lease, so that on a graceful stop
	// another replica takes the background work over at once.
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); in.Server.Run(runCtx, every) }()
	defer func() { stopRun(); <-runDone }()
	errc := make(chan error, 2)
	// A client may send only what a device's handshake needs before it
	// is verified: crypto/tls parses up to 256 KiB of certificates first.
	go func() { errc <- server.ServeTLS(hs, ln) }()
	if metricsAddr != "" {
		mln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fail(stderr, 3, err, "metrics_listen: is another process listening there?")
		}
		// Plain HTTP without credentials: bind it where only the
		// monitoring system can reach it.
		ms := &http.Server{Handler: in.Server.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
		go func() { errc <- ms.Serve(mln) }()
		defer ms.Close()
		logger.Info("serving metrics", "addr", mln.Addr().String())
	}
	if c.ManufacturerCAs != nil {
		logger.Info("manufacturer enrollment enabled", attrs...)
	}
	ids, err := onlineKeyIDs(dir)
	if err != nil {
		return fail(stderr, 3, err, "")
	}
	// Operators compare these, out of band, with what rampart server keys
	// printed before trusting the keys it wrote.
	logger.Info("online keys", ids...)
	l := in.Server.Limits()
	logger.Info("limits", "body_timeout", l.BodyTimeout.String(), "response_timeout", l.ResponseTimeout.String(),
		"min_transfer_rate", l.MinRate, "max_unauthenticated", l.MaxUnauthenticated)
	rt := in.Server.Retention()
	blobStore := filepath.Join(dir, "blobs")
	if backends.BlobStore != "" {
		blobStore = backends.BlobStore
	}
	metaStore := filepath.Join(dir, "rampart.db")
	if backends.Store != "" {
		metaStore = postgres.Redact(backends.Store)
	}
	logDir := filepath.Join(dir, "log")
	if backends.LogDir != "" {
		logDir = backends.LogDir
	}
	storage := []any{"store", metaStore, "blob_store", blobStore, "log_dir", logDir, "log_shared", backends.Store != "", "lease_ttl", leaseTTL(c.LeaseTTL).String(), "background_interval", every.String(), "report_burst", l.ReportBurst, "report_interval", l.ReportEvery.String(), "blob_grace", rt.BlobGrace.String(), "audit_retention", rt.Audit.String()}
	if bl, ok := in.Server.BlobLimits(); ok {
		storage = append(storage, "blob_quota", bl.Quota, "disk_reserve", bl.Reserve)
	}
	logger.Info("storage", storage...)
	logger.Info("serving", "addr", ln.Addr().String(), "data", dir)
	select {
	case err := <-errc:
		return fail(stderr, 3, err, "")
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		logger.Error("shutdown", "err", err)
	}
	return 0
}

// onlineKeyIDs returns, as log attributes, the key id of each online
// signing key the server loaded and the log's verifier key.
func onlineKeyIDs(dir string) ([]any, error) {
	var attrs []any
	for _, role := range []string{"snapshot", "timestamp", "director-targets", "director-snapshot", "director-timestamp"} {
		sg, err := keys.OpenFile(filepath.Join(dir, "keys", role+".key"), nil)
		if err != nil {
			return nil, err
		}
		id, err := keys.ID(sg.Public())
		sg.Close()
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, role, id)
	}
	vkey, err := os.ReadFile(filepath.Join(dir, "online", "log.pub"))
	if err != nil {
		return nil, err
	}
	return append(attrs, "log_key", strings.TrimSpace(string(vkey))), nil
}
