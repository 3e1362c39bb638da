package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/sim"
)

var simCmd = &cmdSpec{
	name:    "sim",
	summary: "run a fleet of simulated devices (the real agent) against a server",
	usage: `
Usage: rampart sim --server URL --ca FILE --token TOKEN --devices N --hardware ID
           [--fail-health P%] [--power-cut P%] [--tamper P%] [--drop P%] [--skew D]
           [--poll D] [--reconnect] [--duration D] [--id-prefix P]
           [--slot-size BYTES] [--json]

Runs N virtual devices in this process, each the real device agent on the
simulated bootloader with in-memory slots that can lose power, enrolled
through the server's enrollment API with a key and certificate of its own
(one one-time enrollment token each, made with TOKEN, an operator token).
Device ids are the prefix followed by a number from 1 to N, so several
simulators can share a server. The server must already publish its image
repository (rampart repo push) and director root (rampart director push-root).

Each fault picks its own devices, that percentage of the fleet:
    --fail-health P%   new images fail their health check: trial boots roll back
    --power-cut P%     the power is cut once, at a random write of an install or
                       of the reboot that commits it; the device must come back
    --tamper P%        a hostile front end flips a byte of the first chunk sent;
                       the agent must refuse it ("mismatch"), slot untouched
    --drop P%          the first two image transfers are cut halfway
    --skew D           every device's clock is off by up to D, either way

While stdout is a terminal a live line shows devices per state, check-ins
per second, check-in p50 and p99 and errors; at the end a report, or with
--json one object: devices, by_state, by_release, checkins, checkin_p50_ms,
checkin_p99_ms, installs, install_p50_ms, install_p99_ms, errors,
tamper_refusals, power_cuts_survived. A check-in's time runs to its
verified decision; an install after it is timed apart. Exit status
1 when errors is not 0 (something went wrong that no fault explains).

Flags:
` + serverFlagsHelp + `    --devices N        how many devices
    --hardware ID      their hardware id
    --poll D           time between a device's check-ins (default 5s, 10% jitter)
    --reconnect        each device closes its connection after a check-in, as
                       devices behind NAT or on cellular links find theirs
                       closed: every check-in makes a TLS handshake, and the
                       server holds connections only for check-ins under way
                       (without it, one kept-alive connection per device)
    --duration D       how long to run (default 1m; Ctrl-C ends early with the report)
    --id-prefix P      device id prefix (default sim-)
    --slot-size BYTES  size of each slot, held in memory (default 262144)
    --workers N        check-ins run at once (default 32)
    --seed N           picks the faulty devices and the faults' moments
    --json             print the report as JSON

Example:
    rampart sim --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$OPERATOR" \
        --devices 2000 --hardware acme-gw-rev2 --fail-health 5% --power-cut 2% \
        --tamper 1% --drop 2% --poll 5s --duration 10m
`,
	run: runSim,
}

func runSim(e *env, args []string) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	sf := addServerFlags(fs)
	var cfg sim.Config
	fs.IntVar(&cfg.Devices, "devices", 0, "")
	fs.StringVar(&cfg.Hardware, "hardware", "", "")
	for name, p := range map[string]*float64{"fail-health": &cfg.FailHealth, "power-cut": &cfg.PowerCut, "tamper": &cfg.Tamper, "drop": &cfg.Drop} {
		fs.Func(name, "", func(s string) (err error) { *p, err = sim.ParsePercent(s); return err })
	}
	fs.DurationVar(&cfg.Skew, "skew", 0, "")
	fs.DurationVar(&cfg.Poll, "poll", 5*time.Second, "")
	fs.BoolVar(&cfg.Reconnect, "reconnect", false, "")
	fs.DurationVar(&cfg.Duration, "duration", time.Minute, "")
	fs.StringVar(&cfg.IDPrefix, "id-prefix", sim.DefaultPrefix, "")
	fs.Int64Var(&cfg.SlotSize, "slot-size", sim.DefaultSlotSize, "")
	fs.IntVar(&cfg.Workers, "workers", sim.DefaultWorkers, "")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "")
	asJSON := fs.Bool("json", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("rampart sim --help shows an example", "sim takes no arguments, only flags (got %q)", pos[0])
	}
	if cfg.Devices == 0 || cfg.Hardware == "" {
		return usagef("rampart sim --help shows an example", "sim needs --devices N and --hardware ID")
	}
	if cfg.Duration == 0 {
		return usagef("", "--duration must be positive (Ctrl-C ends a run early)")
	}
	dir, err := os.MkdirTemp("", "rampart-sim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir
	if isTerminal(e.stdout) {
		cfg.Live = e.stdout
	}
	s, err := sim.New(cfg)
	var ce *sim.ConfigError
	if errors.As(err, &ce) {
		return usagef("rampart sim --help shows the options", "%s", ce.Msg)
	}
	if err != nil {
		return err
	}
	if _, err := sf.client(e); err != nil {
		return err // no server, or a CA file that does not load
	}
	s.SetServer(orEnv(e, *sf.server, "RAMPART_SERVER"), orEnv(e, *sf.ca, "RAMPART_CA"), orEnv(e, *sf.token, "RAMPART_TOKEN"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); s.Stop() }()
	r, err := s.Run(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		if err := r.WriteJSON(e.stdout); err != nil {
			return err
		}
	} else {
		r.WriteText(e.stdout)
	}
	if r.Errors > 0 {
		return &simErrors{n: r.Errors, first: r.ErrorSamples}
	}
	return nil
}

func orEnv(e *env, v, name string) string {
	if v != "" {
		return v
	}
	return e.getenv(name)
}

// simErrors is a run in which something went wrong that no fault knob
// explains: exit status 1.
type simErrors struct {
	n     int64
	first []string
}

func (e *simErrors) Error() string {
	msg := fmt.Sprintf("%d errors that no fault explains", e.n)
	if len(e.first) > 0 {
		msg += "; the first: " + e.first[0]
	}
	return msg
}

func (e *simErrors) FailureKind() failure.Kind { return failure.Refused }
func (e *simErrors) FailureHint() string {
	return "the report lists the first few; run again with fewer devices or a longer --poll to tell load from bugs"
}
