// Command rampart-agent is the device side of Rampart. It only parses flags
// and wires internal/agent together; see docs/agent.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/command"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/termsafe"
	"github.com/rampartfw/rampart/internal/verify"
)

// Exit codes: distinct for each kind of failure, so scripts and service
// managers can tell a refused update from a broken configuration.
const (
	exitOK        = 0
	exitRefused   = 1 // verification refused, policy refused, enrollment refused
	exitUsage     = 2 // bad arguments or configuration
	exitFailed    = 3 // environment: network, disk, bootloader
	exitUnhealthy = 4 // boot: the health check failed on a committed slot
)

// program is the shared help, version and command lookup (internal/command).
var program = &command.Program{
	Name:  "rampart-agent",
	Intro: "rampart-agent is the device side of Rampart: it verifies updates against both repositories and the transparency log, installs them into the inactive slot, trial-boots, and commits or rolls back.",
	More:  "Every command reads --config (default /etc/rampart/agent.toml); docs/agent.md describes it.",
	Commands: []*command.Command{
		{Name: "enroll", Summary: "make the device key and obtain its certificate", Usage: `
Usage: rampart-agent enroll --config FILE [--server URL] (--token TOKEN | --manufacturer-cert FILE)

Makes the device key (device.key, unless the manufacturer put one there)
and obtains the device certificate from the server: with a one-time
token from the operator (rampart device token), or with the certificate
chain the manufacturer gave the device, for the key in device.key.

Flags:
    --config FILE              the agent configuration (default /etc/rampart/agent.toml)
    --server URL               the server, when the configuration does not name it
    --token TOKEN              a one-time enrollment token
    --manufacturer-cert FILE   the device's manufacturer certificate chain (PEM)

Example:
    rampart-agent enroll --config /etc/rampart/agent.toml --token "$TOKEN"
`},
		{Name: "run", Summary: "poll, verify, install, reboot, report", Usage: `
Usage: rampart-agent run --config FILE [--once] [-v]

Polls the server, verifies and installs what the director assigns into
the inactive slot, arms a trial boot and reboots; reports every outcome.

Flags:
    --config FILE   the agent configuration (default /etc/rampart/agent.toml)
    --once          one check-in, then exit
    -v              debug logging

Example:
    rampart-agent run --config /etc/rampart/agent.toml --once
`},
		{Name: "boot", Summary: "at boot: finish a trial (health check, commit or roll back)", Usage: `
Usage: rampart-agent boot --config FILE

Run once at every boot. After a trial boot it runs the health check,
then commits the slot (and raises the security counter) or rolls back.

Flags:
    --config FILE   the agent configuration (default /etc/rampart/agent.toml)

Example:
    rampart-agent boot --config /etc/rampart/agent.toml
`},
		{Name: "status", Summary: "slots, versions, security counter, pending update, last error", Usage: `
Usage: rampart-agent status --config FILE [--json]

Flags:
    --config FILE   the agent configuration (default /etc/rampart/agent.toml)
    --json          machine-readable output

Example:
    rampart-agent status --config /etc/rampart/agent.toml --json
`},
		{Name: "install", Summary: "out-of-band update from a bundle file", Usage: `
Usage: rampart-agent install --config FILE BUNDLE [--json]

Installs an offline bundle (rampart bundle) with the same verification as
an online update, then arms a trial boot. The bundle is checked whole
first, with the reader and the order of checks of rampart verify, and the
device changes only if it passes: a refused bundle leaves the slots, the
boot order and the state as they were. BUNDLE must be a regular file.

Flags:
    --config FILE   the agent configuration (default /etc/rampart/agent.toml)
    --json          print the outcome as JSON; a refusal as rampart verify
                    --json prints one: {"verified":false,"class":...}

Example:
    rampart-agent install --config /etc/rampart/agent.toml /media/usb/fw.rbundle
`},
		{Name: "provision", Summary: "write the factory boot state (only slot A bootable)", Usage: `
Usage: rampart-agent provision --config FILE
       rampart-agent provision --backend grub --env-out FILE
       rampart-agent provision --backend uboot --env-out FILE [--env-size SIZE] [--redundant] [--max-attempts N]

Writes the boot state a device must leave the factory with: slot A (the
factory image) is the only slot the bootloader may boot, and slot B,
which holds nothing verified yet, is out of the boot order. Other
variables of an existing environment are kept.

With --config it writes the configured environment in place (the
grubenv, or the U-Boot environment of fw_env.config). With --env-out it
builds the environment file for an image build: a grubenv, or a U-Boot
environment image of one copy of SIZE bytes (default 0x4000, U-Boot's
CONFIG_ENV_SIZE) or, with --redundant, two copies back to back (at
offsets 0 and SIZE in fw_env.config). An existing file is updated.

Flags:
    --config FILE        the agent configuration
    --backend NAME       grub, uboot or sim, with --env-out
    --env-out FILE       the environment file to write
    --env-size SIZE      U-Boot's CONFIG_ENV_SIZE (default 0x4000)
    --redundant          U-Boot: two copies (CONFIG_SYS_REDUNDAND_ENVIRONMENT)
    --max-attempts N     U-Boot and sim: attempts of slot A (default 3); must equal the boot script's

Example:
    rampart-agent provision --backend grub --env-out rootfs/boot/grub/grubenv
    rampart-agent provision --backend uboot --env-out uboot-env.bin --env-size 0x4000 --redundant
`},
		{Name: "power-cycle", Summary: "simulated devices: what a power-on does (bootloader backend sim)", Usage: `
Usage: rampart-agent power-cycle --config FILE

For a simulated device (bootloader.backend = "sim") only: does what
powering the device off and on does to its boot state. The simulated
bootloader picks the slot to boot from its boot order and attempts (a
trial boot spends one attempt; a slot with none left is skipped, which
is how a failed trial falls back), then writes bootloader.cmdline naming
that slot (rauc.slot=A or B), as the kernel would see it. Run
rampart-agent boot after it, as a device's init does. A real device is
power-cycled, not told to: other backends are refused.

Flags:
    --config FILE   the agent configuration (default /etc/rampart/agent.toml)

Example:
    rampart-agent power-cycle --config dev/agent.toml && rampart-agent boot --config dev/agent.toml
`},
		{Name: "version", Summary: "print the version", Usage: `
Usage: rampart-agent version

Example:
    rampart-agent version
`},
	},
	ExitStatus: `    0  success
    1  refused: verification, policy or enrollment refused
    2  usage or configuration error
    3  environment error: network, disk, bootloader
    4  boot: the health check failed on a committed slot`,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile(os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// startCPUProfile writes a CPU profile of the whole command to the file
// named by RAMPART_AGENT_CPUPROFILE, when set (for bench/agent-install.sh
// and go tool pprof). It returns the function that finishes the profile.
func startCPUProfile(stderr io.Writer) func() {
	path := os.Getenv("RAMPART_AGENT_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(stderr, "rampart-agent: warning: CPU profile: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(stderr, "rampart-agent: warning: CPU profile: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "rampart-agent: warning: CPU profile: %v\n", err)
		}
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, args, done, err := program.Resolve(args, stdout)
	if done {
		return exitOK
	}
	var unknown *command.UnknownError
	if errors.As(err, &unknown) {
		return fail(stderr, exitUsage, err, unknown.Hint())
	}
	cmd := c.Name
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "/etc/rampart/agent.toml", "")
	server := fs.String("server", "", "")
	token := fs.String("token", "", "")
	mfrCert := fs.String("manufacturer-cert", "", "")
	once := fs.Bool("once", false, "")
	asJSON := fs.Bool("json", false, "")
	verbose := fs.Bool("v", false, "")
	backend := fs.String("backend", "", "")
	envOut := fs.String("env-out", "", "")
	envSize := fs.String("env-size", "0x4000", "")
	redundant := fs.Bool("redundant", false, "")
	maxAttempts := fs.Int("max-attempts", 0, "")
	pos, err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		program.Help(stdout, c)
		return exitOK
	}
	if err != nil {
		return fail(stderr, exitUsage, err, "rampart-agent "+cmd+" --help shows the flags")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: termsafe.LogAttr}))

	want := map[string]int{"enroll": 0, "run": 0, "boot": 0, "status": 0, "install": 1, "provision": 0, "power-cycle": 0}
	n, ok := want[cmd]
	if !ok {
		return fail(stderr, exitUsage, fmt.Errorf("unknown command %q", cmd), "run rampart-agent help")
	}
	if len(pos) != n {
		if cmd == "install" {
			return fail(stderr, exitUsage, errors.New("install takes one BUNDLE file"), "example: rampart-agent install --config agent.toml /media/usb/fw.rbundle")
		}
		return fail(stderr, exitUsage, fmt.Errorf("%s takes no arguments, got %q", cmd, strings.Join(pos, " ")), "")
	}
	if cmd == "provision" {
		size, err := strconv.ParseInt(*envSize, 0, 64)
		if err != nil || size <= 0 {
			return fail(stderr, exitUsage, fmt.Errorf("--env-size %q is not a positive number", *envSize), "example: --env-size 0x4000")
		}
		switch {
		case *envOut == "" && *backend != "":
			return fail(stderr, exitUsage, errors.New("--backend goes with --env-out"), "rampart-agent provision --help shows both forms")
		case *envOut != "" && *backend != "grub" && *backend != "uboot" && *backend != "sim":
			return fail(stderr, exitUsage, fmt.Errorf("--env-out needs --backend grub, uboot or sim, not %q", *backend), "")
		}
		msg, err := provision(provisionOptions{config: *configPath, backend: *backend, envOut: *envOut,
			envSize: size, redundant: *redundant, maxAttempts: *maxAttempts})
		if err != nil {
			return report(stderr, err)
		}
		fmt.Fprintln(stdout, msg)
		return exitOK
	}
	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		return report(stderr, err)
	}

	if cmd == "power-cycle" {
		slot, err := powerCycle(cfg)
		if err != nil {
			return report(stderr, err)
		}
		fmt.Fprintf(stdout, "power-cycled: the simulated bootloader booted slot %s\n", slot)
		return exitOK
	}

	if cmd == "enroll" {
		var cred agent.Credential
		switch {
		case *token != "" && *mfrCert != "":
			return fail(stderr, exitUsage, errors.New("enroll takes --token or --manufacturer-cert, not both"), "")
		case *token != "":
			cred.Token = *token
		case *mfrCert != "":
			b, err := os.ReadFile(*mfrCert)
			if err != nil {
				return fail(stderr, exitUsage, err, "name the PEM file of the device's manufacturer certificate (then any intermediates)")
			}
			cred.ManufacturerChain = b
		default:
			return fail(stderr, exitUsage, errors.New("enroll needs --token or --manufacturer-cert"),
				"get a token with: rampart device token --hardware "+cfg.Device.HardwareID+", or name the device's manufacturer certificate when the server trusts its CA")
		}
		if *server != "" {
			cfg.Server.URL = *server
		}
		res, err := agent.Enroll(ctx, cfg, cred)
		if err != nil {
			return report(stderr, err)
		}
		fmt.Fprintf(stdout, "enrolled %s (%s); certificate valid until %s\n", res.DeviceID, res.Hardware, res.NotAfter.Format(time.RFC3339))
		return exitOK
	}

	a, err := agent.New(cfg, log)
	if err != nil {
		return report(stderr, err)
	}
	draw, clearProgress := progressLine(stderr, time.Now)
	a.OnProgress = draw
	switch cmd {
	case "status":
		s, err := a.Status()
		if err != nil {
			return report(stderr, err)
		}
		if *asJSON {
			return printJSON(stdout, s)
		}
		printStatus(stdout, s)
		return exitOK
	case "boot":
		out, err := a.Boot(ctx)
		if out != nil {
			print(stdout, out, *asJSON)
		}
		if out != nil && out.Action == "unhealthy" {
			return fail(stderr, exitUnhealthy, err, "the running slot stays unconfirmed; the bootloader falls back after its attempts run out")
		}
		return report(stderr, err)
	case "install":
		out, err := a.InstallBundle(ctx, pos[0])
		clearProgress()
		if out != nil {
			print(stdout, out, *asJSON)
		}
		if err != nil && *asJSON {
			printRefusal(stdout, err)
		}
		return report(stderr, err)
	}
	// run
	for {
		out, err := a.Run(ctx)
		clearProgress()
		if out != nil {
			print(stdout, out, *asJSON)
		}
		if *once || (out != nil && out.Reboot) {
			return report(stderr, err)
		}
		if err != nil {
			if code := report(stderr, err); code == exitUsage {
				return code
			}
		}
		wait := cfg.Poll.Interval.Duration
		if j := cfg.Poll.Jitter.Duration; j > 0 {
			wait += rand.N(j)
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(wait):
		}
	}
}

// parse allows flags after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func print(w io.Writer, out *agent.Outcome, asJSON bool) {
	if asJSON {
		printJSON(w, out)
		return
	}
	line := out.Action
	if out.Target != "" {
		line += " " + out.Target
	}
	if out.Slot != "" {
		line += " slot " + out.Slot
	}
	if out.Reason != "" {
		line += " (" + out.Reason + ")"
	}
	fmt.Fprintln(w, line)
	if in := out.Install; in != nil {
		verb := "downloaded"
		if in.Source == "bundle" {
			verb = "installed from bundle"
		}
		fmt.Fprintf(w, "%s %d of %d bytes (%.1f%%), reused %d bytes from the running slot\n",
			verb, in.BytesDownloaded, in.ImageSize, 100*float64(in.BytesDownloaded)/float64(max(in.ImageSize, 1)), in.BytesReused)
	}
}

// refusal is install --json's answer to a refused bundle: the fields of
// rampart verify --json's refusal, so one parser reads both programs.
// A refusal by offline.policy is not a verdict on the bundle: it has
// neither "verified" nor a class, and "refused" says which policy.
type refusal struct {
	Verified    *bool        `json:"verified,omitempty"`
	Class       verify.Class `json:"class,omitempty"`
	RefusedRole string       `json:"refused_role,omitempty"`
	Refused     string       `json:"refused,omitempty"`
	Error       string       `json:"error"`
}

// printRefusal prints a refusal as one JSON line; other failures (usage,
// environment) print nothing on stdout.
func printRefusal(w io.Writer, err error) {
	var ve *verify.Error
	r := refusal{Error: termsafe.Bounded(err.Error(), 1024)}
	switch {
	case errors.As(err, &ve):
		r.Verified = new(bool)
		r.Class, r.RefusedRole = ve.Class, ve.Role
	case errors.Is(err, agent.ErrOfflineRefused):
		r.Refused = "offline.policy"
	default:
		return
	}
	b, _ := json.Marshal(r)
	fmt.Fprintln(w, string(b))
}

func printJSON(w io.Writer, v any) int {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(b))
	return exitOK
}

func printStatus(w io.Writer, s *agent.Status) {
	fmt.Fprintf(w, "device:           %s (%s), enrolled: %v\n", s.DeviceID, s.HardwareID, s.Enrolled)
	fmt.Fprintf(w, "booted slot:      %s (committed: %s)\n", orDash(s.BootedSlot), orDash(s.CommittedSlot))
	rel := func(r *agent.Release) string {
		if r == nil {
			return "-"
		}
		return fmt.Sprintf("%s (security version %d)", r.Target, r.SecurityVersion)
	}
	fmt.Fprintf(w, "running:          %s\n", rel(s.Running))
	fmt.Fprintf(w, "other slot:       %s\n", rel(s.Other))
	fmt.Fprintf(w, "security counter: %d\n", s.SecurityCounter)
	if p := s.Pending; p != nil {
		fmt.Fprintf(w, "pending:          %s into slot %s, phase %s\n", p.Target, p.Slot, p.Phase)
	} else {
		fmt.Fprintln(w, "pending:          -")
	}
	if b := s.Boot; b != nil {
		var parts []string
		for _, sl := range b.Order {
			parts = append(parts, fmt.Sprintf("%s(%d)", sl, b.Attempts[sl]))
		}
		line := strings.Join(parts, " ")
		if b.Error != "" {
			line += " [" + b.Error + "]"
		}
		fmt.Fprintf(w, "boot order:       %s\n", line)
	}
	if e := s.LastError; e != nil {
		class := ""
		if e.Class != "" {
			class = " [" + e.Class + "]"
		}
		fmt.Fprintf(w, "last error:       %s%s %s\n", e.Time.Format(time.RFC3339), class, e.Msg)
	}
	fmt.Fprintf(w, "queued reports:   %d\n", s.QueuedReports)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// report prints err in the error:/hint: style and returns its exit code.
func report(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var ve *verify.Error
	var ce *agent.ConfigError
	var ee *agent.EnrollError
	var ue *agent.UsageError
	var sc *agent.SlotChangedError
	switch {
	case errors.As(err, &ue):
		return fail(stderr, exitUsage, err, ue.Hint)
	case errors.As(err, &sc) && errors.As(err, &ve):
		return fail(stderr, exitRefused, err, "the update was refused as "+string(ve.Class)+" after the install into slot "+sc.Slot+" began: that slot no longer holds a bootable release; the running slot is untouched")
	case errors.As(err, &ve):
		return fail(stderr, exitRefused, err, "the update was refused as "+string(ve.Class)+"; nothing was installed and the running slot is untouched")
	case errors.Is(err, agent.ErrOfflineRefused):
		return fail(stderr, exitRefused, err, "")
	case errors.As(err, &ee):
		hint, ok := enrollHints[ee.Code]
		if !ok {
			hint = "ask the operator for a new token: rampart device token"
		}
		return fail(stderr, exitRefused, err, hint)
	case errors.As(err, &ce):
		return fail(stderr, exitUsage, err, "see docs/agent.md for every configuration key")
	case errors.Is(err, agent.ErrNotEnrolled):
		return fail(stderr, exitUsage, err, "run rampart-agent enroll --token TOKEN first")
	case errors.Is(err, agent.ErrInstall) && failure.HintOf(err) == "":
		return fail(stderr, exitFailed, err, "the running slot is untouched; the next check-in resumes the download")
	}
	// The agent's own advice, when it has some (a failed check-in, a
	// release too large for the slots).
	return fail(stderr, exitFailed, err, failure.HintOf(err))
}

// enrollHints say what to do about the server's enrollment refusals that
// a new token would not fix.
var enrollHints = map[string]string{
	"no-manufacturer-ca":        "this server accepts no manufacturer certificates (rampart-server serve --manufacturer-ca FILE); enroll with a token",
	"manufacturer-unknown-ca":   "the server does not trust the CA of this certificate: put any intermediates after it in the file, or ask the operator to add the manufacturer's CA",
	"manufacturer-cert-expired": "a certificate of the chain is outside its validity: check the device's clock, or enroll with a token",
	"bad-manufacturer-cert":     "the file must hold the device's own certificate first, then its intermediates (not the root)",
	"manufacturer-key-mismatch": "device.key must hold the key the manufacturer certified",
	"device-id-mismatch":        "device.id must be the manufacturer certificate's subject serialNumber (or CommonName when it has none)",
	"hardware-mismatch":         "device.hardware_id must be the hardware id in the manufacturer certificate (its rampart:hardware: URI)",
	"wrong-hardware":            "the token was made for other hardware than device.hardware_id; it was not spent and this device id is still free: ask for a token for this device's hardware (rampart device token --hardware), or correct device.hardware_id",
	"device-exists":             "a device with this id is already enrolled, and an id enrolls once: give this device another id, or ask the operator which device holds it",
}

func fail(stderr io.Writer, code int, err error, hint string) int {
	// The error may quote a hostile peer (a server, a bundle): one line,
	// bounded, with no terminal controls.
	fmt.Fprintf(stderr, "rampart-agent: error: %s\n", termsafe.Bounded(err.Error(), 1024))
	if hint != "" {
		fmt.Fprintf(stderr, "rampart-agent: hint: %s\n", termsafe.Bounded(hint, 1024))
	}
	return code
}

// powerCycle is a simulated power-on: the sim bootloader boots a slot,
// and the kernel command line names it.
func powerCycle(cfg *agent.Config) (bootloader.Slot, error) {
	if cfg.Bootloader.Backend != "sim" {
		return "", &agent.ConfigError{Msg: fmt.Sprintf("power-cycle is for simulated devices (bootloader.backend = \"sim\"), not %q: power-cycle the device itself", cfg.Bootloader.Backend)}
	}
	sim, err := bootloader.OpenSim(cfg.Bootloader.Env, cfg.Bootloader.MaxAttempts)
	if err != nil {
		return "", err
	}
	slot, err := sim.Boot()
	if err != nil {
		return "", err
	}
	return slot, os.WriteFile(cfg.Bootloader.Cmdline, []byte("rauc.slot="+string(slot)+"\n"), 0o644)
}
