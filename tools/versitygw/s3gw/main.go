// Command s3gw runs versitygw's S3 gateway over its POSIX backend, the
// S3 server the s3blob tests and bench/scale-out.sh run against. It is
// versitygw's own gateway (embedgw) and backend (backend/posix) wired
// with the options of `versitygw --access A --secret S --port ADDR posix
// DIR`, and nothing else: versitygw's command links every backend and
// identity service it supports (Azure, S3 proxy, LDAP, Vault, Kafka,
// NATS, ...), about 100 more packages to compile on a fresh machine for
// code these tests never run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/debuglogger"
	"github.com/versity/versitygw/embedgw"
)

func main() {
	access := flag.String("access", "", "root access key id")
	secret := flag.String("secret", "", "root secret access key")
	port := flag.String("port", "127.0.0.1:7070", "S3 API listening address")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: s3gw --access KEY --secret SECRET [--port ADDR] posix DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *access == "" || *secret == "" || flag.NArg() != 2 || flag.Arg(0) != "posix" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*access, *secret, *port, flag.Arg(1)); err != nil {
		fmt.Fprintln(os.Stderr, "s3gw:", err)
		os.Exit(1)
	}
}

func run(access, secret, port, root string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The defaults of versitygw's own flags (cmd/versitygw, cmd/internal/gwcli).
	opts := posix.PosixOpts{Concurrency: 5000, IOBufferSize: 1024 * 1024}
	opts.SetNewDirPerm(0o755)
	opts.SetNewFilePerm(0o644)
	if err := (meta.XattrMeta{}).Test(root); err != nil {
		return fmt.Errorf("xattr check failed: %w", err)
	}
	be, err := posix.New(root, meta.XattrMeta{}, opts)
	if err != nil {
		return fmt.Errorf("posix backend: %w", err)
	}
	return embedgw.RunVersityGW(ctx, be, &embedgw.Config{
		RootUserAccess:      access,
		RootUserSecret:      secret,
		Region:              "us-east-1",
		Ports:               []string{port},
		MaxConnections:      250000,
		MaxRequests:         100000,
		AdminMaxConnections: 250000,
		AdminMaxRequests:    100000,
		MultipartMaxParts:   10000,
		LogLevel:            debuglogger.LevelSilent,
		Quiet:               true,
	})
}
