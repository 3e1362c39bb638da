package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/rampartfw/rampart/internal/termsafe"
)

var tokenCreateCmd = &cmdSpec{
	name:    "token create",
	summary: "create an operator token on the server (admin)",
	usage: `
Usage: rampart token create NAME --role ROLE --server URL --ca FILE --token ADMIN

Roles: admin, release-manager (push), operator (deploy, pause), auditor
(read the audit log). Prints the new token once; the server stores only
its hash. Names are 1-64 of a-z 0-9 . _ - and are never reused, not even
after the token is revoked.

Flags:
` + serverFlagsHelp + `    --role ROLE      the new token's role

Example:
    rampart token create ci --role release-manager --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("token create", flag.ContinueOnError)
		sf := addServerFlags(fs)
		role := fs.String("role", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *role == "" {
			return usagef("rampart token create --help shows an example", "token create takes NAME and --role")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		secret, err := c.CreateToken(context.Background(), pos[0], *role)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, termsafe.String(secret))
		return nil
	},
}

var tokenListCmd = &cmdSpec{
	name:    "token list",
	summary: "list the server's operator tokens and their roles (admin)",
	usage: `
Usage: rampart token list --server URL --ca FILE --token ADMIN

Prints every operator token, revoked ones included: name, role, when it was
created and when it was revoked ("-" if it is live). Secrets are never
shown; the server does not have them.

Flags:
` + serverFlagsHelp + `
Example:
    rampart token list --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("token list", flag.ContinueOnError)
		sf := addServerFlags(fs)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 {
			return usagef("rampart token list --help shows an example", "token list takes no arguments")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		toks, err := c.Tokens(context.Background())
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tREVOKED")
		for _, t := range toks {
			revoked := "-"
			if t.RevokedAt != nil {
				revoked = t.RevokedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", termsafe.String(t.Name), termsafe.String(t.Role), t.CreatedAt.UTC().Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	},
}

var tokenSetRoleCmd = &cmdSpec{
	name:    "token set-role",
	summary: "change an operator token's role (admin)",
	usage: `
Usage: rampart token set-role NAME --role ROLE --server URL --ca FILE --token ADMIN

The new role applies from the token's next request. The last live admin
token cannot lose the admin role, and a revoked token cannot be changed.

Flags:
` + serverFlagsHelp + `    --role ROLE      admin, release-manager, operator or auditor

Example:
    rampart token set-role ci --role auditor --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("token set-role", flag.ContinueOnError)
		sf := addServerFlags(fs)
		role := fs.String("role", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *role == "" {
			return usagef("rampart token set-role --help shows an example", "token set-role takes NAME and --role")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		t, err := c.SetTokenRole(context.Background(), pos[0], *role)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "token %s now has role %s\n", termsafe.String(t.Name), termsafe.String(t.Role))
		return nil
	},
}

var tokenRevokeCmd = &cmdSpec{
	name:    "token revoke",
	summary: "revoke an operator token; the server refuses it from its next request (admin)",
	usage: `
Usage: rampart token revoke NAME --server URL --ca FILE --token ADMIN

The token is refused with 401 token-revoked from its next request on. It
stays in rampart token list, and its name is not reused. The last live
admin token cannot be revoked.

Flags:
` + serverFlagsHelp + `
Example:
    rampart token revoke ci --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("token revoke", flag.ContinueOnError)
		sf := addServerFlags(fs)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("rampart token revoke --help shows an example", "token revoke takes the token's NAME")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		if err := c.RevokeToken(context.Background(), pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked token %s\n", termsafe.String(pos[0]))
		return nil
	},
}
