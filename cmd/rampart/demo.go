package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/rampartfw/rampart/internal/demo"
	"github.com/rampartfw/rampart/internal/failure"
)

var demoCmd = &cmdSpec{
	name:    "demo",
	summary: "tell the whole story: ceremony, server, fleet, rollouts, an attack, a rollback, a key revocation",
	usage: `
Usage: rampart demo [--devices N] [--keep] [--serve]

Runs the whole of Rampart in this process, in a new temporary directory,
with nothing to set up, narrating each step:
  1. the offline key ceremony (root 2 of 2, release signers 2 of 3) and
     the director root, around a fresh server data directory;
  2. rampart-server on a loopback port, TLS with its own CA and device
     client certificates; the repositories pushed to it;
  3. N simulated devices (the real agent on a simulated bootloader)
     enrolled and running release 1.0.0;
  4. release 1.1.0 rolled out in phases (10%, 50%, 100%) to every device;
  5. a man-in-the-middle that alters a chunk in transit: refused, the slot
     untouched, the detection reported to the server;
  6. release 1.2.0 failing its health check on some devices: they roll
     back, and the rollout's gate pauses it in its first phase;
  7. a key revocation drill: hotfix 1.1.1, signed with rel-b, reaches the
     first phase of its rollout; rel-b is revoked (incident revoke-key:
     the rollout aborted, the affected devices and the offline rotation
     steps listed), then incident redeploy puts 1.1.0 back on them, and
     the time to recover is measured;
  8. a summary from the server's fleet stats: devices per release,
     success rate, time to install, time to recover (MTTR), tamper
     detections by class.
Each step checks that what it narrates happened; the exit status is 0
only when every step did, 1 otherwise (naming what did not happen).

Flags:
    --devices N  size of the simulated fleet (default 100, 10 to 2000)
    --keep       keep the temporary directory (keys, repositories, the
                 server's data directory) and print where it is
    --serve      then keep the server running until Ctrl-C, printing
                 its URL, CA file and an admin token

Example:
    rampart demo
    rampart demo --devices 20 --serve
`,
	run: runDemo,
}

func runDemo(e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var cfg demo.Config
	fs.IntVar(&cfg.Devices, "devices", demo.DefaultDevices, "")
	fs.BoolVar(&cfg.Keep, "keep", false, "")
	fs.BoolVar(&cfg.Serve, "serve", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("rampart demo --help shows what it does", "demo takes no arguments, only flags (got %q)", pos[0])
	}
	cfg.Out = e.stdout
	cfg.Live = isTerminal(e.stdout)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = demo.Run(ctx, cfg)
	var ce *demo.ConfigError
	if errors.As(err, &ce) {
		return usagef("rampart demo --help shows the options", "%s", ce.Msg)
	}
	var se *demo.StepError
	if errors.As(err, &se) {
		return &demoFailed{se}
	}
	return err
}

// demoFailed is a step that did not behave as narrated: exit status 1.
type demoFailed struct{ *demo.StepError }

func (e *demoFailed) FailureKind() failure.Kind { return failure.Refused }
func (e *demoFailed) FailureHint() string {
	return "run it again with --keep to look at the server's log (server.log), its data and the devices' files"
}
