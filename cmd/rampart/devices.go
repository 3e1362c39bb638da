package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/rampartfw/rampart/internal/termsafe"
)

var deviceTokenCmd = &cmdSpec{
	name:    "device token",
	summary: "create a one-time enrollment token for a hardware id",
	usage: `
Usage: rampart device token --hardware ID [--ttl DURATION] --server URL --ca FILE --token TOKEN

Prints a token that enrolls exactly one device of that hardware id
(rampart-agent enroll --token ...), valid for DURATION (default 24h, at
most 720h). Needs an operator or admin token.

Flags:
` + serverFlagsHelp + `    --hardware ID    the hardware id the device will carry
    --ttl DURATION   how long the token stays valid

Example:
    rampart device token --hardware acme-gw-rev2 --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device token", flag.ContinueOnError)
		sf := addServerFlags(fs)
		hw := fs.String("hardware", "", "")
		ttl := fs.Duration("ttl", 24*time.Hour, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 || *hw == "" {
			return usagef("rampart device token --help shows an example", "device token needs --hardware and no arguments")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		tok, exp, err := c.EnrollToken(context.Background(), *hw, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, termsafe.String(tok))
		fmt.Fprintf(e.stderr, "rampart: note: enrolls one %s device until %s\n", termsafe.String(*hw), exp.UTC().Format(time.RFC3339))
		return nil
	},
}

var deviceRevokeCmd = &cmdSpec{
	name:    "device revoke",
	summary: "revoke a device; the server refuses its certificate from now on",
	usage: `
Usage: rampart device revoke ID --server URL --ca FILE --token TOKEN

Flags:
` + serverFlagsHelp + `
Example:
    rampart device revoke gw-0042 --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$OPERATOR"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device revoke", flag.ContinueOnError)
		c, pos, err := connect(e, fs, args, 1, usagef("", "device revoke takes the device id"))
		if err != nil {
			return err
		}
		if err := c.RevokeDevice(context.Background(), pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked %s\n", termsafe.String(pos[0]))
		return nil
	},
}

var deviceRemoveCmd = &cmdSpec{
	name:    "device remove",
	summary: "delete a device's record so that its id can enroll again",
	usage: `
Usage: rampart device remove ID --server URL --ca FILE --token TOKEN

Deletes the device's record and its assignment, for a device that must
enroll again under the same id (it enrolled with a token made for other
hardware, say, or was replaced). Its certificate is refused from its next
connection and stays refused; the audit log keeps its history. Needs an
operator or admin token.

Flags:
` + serverFlagsHelp + `
Example:
    rampart device remove gw-0042 --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$OPERATOR"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device remove", flag.ContinueOnError)
		c, pos, err := connect(e, fs, args, 1, usagef("rampart device remove --help shows an example", "device remove takes the device id"))
		if err != nil {
			return err
		}
		if err := c.RemoveDevice(context.Background(), pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed %s; its certificate is refused and its id may enroll again\n", termsafe.String(pos[0]))
		return nil
	},
}

var deployCmd = &cmdSpec{
	name:    "deploy",
	summary: "assign a published release to every device of a hardware id",
	usage: `
Usage: rampart deploy PRODUCT/VERSION[/FILE] --hardware ID --server URL --ca FILE --token TOKEN

Each enrolled, unrevoked device of the hardware id gets the release in its
director repository at its next check-in. The release must be published on
the server and list the hardware id. Needs an operator or admin token.

Flags:
` + serverFlagsHelp + `    --hardware ID    the devices to update

Example:
    rampart deploy acme-gw/2.4.1 --hardware acme-gw-rev2 --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
		sf := addServerFlags(fs)
		hw := fs.String("hardware", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *hw == "" {
			return usagef("rampart deploy --help shows an example", "deploy takes the release and --hardware")
		}
		target := pos[0]
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		n, changed, err := c.Deploy(context.Background(), target, *hw)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "deployed %s to %d %s device(s) (%d changed)\n", termsafe.String(target), n, termsafe.String(*hw), changed)
		return nil
	},
}
