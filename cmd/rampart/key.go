package main

import (
	"encoding/json"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/rampartfw/rampart/internal/keys"
)

var keyGenerateCmd = &cmdSpec{
	name:    "key generate",
	summary: "create a key pair (file or PKCS#11 token)",
	usage: `
Usage: rampart key generate BASE [--type TYPE] [--passphrase-file FILE | --no-passphrase]
       rampart key generate BASE --pkcs11 URI [--type TYPE]

Creates BASE.key (the private key, encrypted with a passphrase, mode 0600)
and BASE.pub (the public key, PEM), and prints the TUF key id. Existing
files are never overwritten.

With --pkcs11, the key pair is created inside the token named by the RFC 7512
URI; the private key never leaves it and only BASE.pub is written.

Flags:
    --type TYPE             ed25519 (default), ecdsa-p256 or rsa-3072
    --passphrase-file FILE  read the passphrase from FILE instead of
                            RAMPART_PASSPHRASE or the terminal
    --no-passphrase         store the private key unencrypted (test keys only)
    --pkcs11 URI            create the key in a PKCS#11 token
    --json                  print {"key_id", "type", "public_key_file"}

Example:
    RAMPART_PASSPHRASE=... rampart key generate keys/rel-a
    rampart key generate keys/rel-b --pkcs11 'pkcs11:token=release;object=rel-b?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:pin.txt'
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("key generate", flag.ContinueOnError)
		typ := fs.String("type", "ed25519", "")
		ppFile := fs.String("passphrase-file", "", "")
		noPass := fs.Bool("no-passphrase", false, "")
		uri := fs.String("pkcs11", "", "")
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("example: rampart key generate keys/rel-a", "key generate takes one argument, the base name of the key files")
		}
		t, err := keys.ParseType(*typ)
		if err != nil {
			return usagef("", "%v", err)
		}
		base := pos[0]
		_, pubPath := keys.FilePaths(base)
		var pub any
		if *uri != "" {
			if *noPass || *ppFile != "" {
				return usagef("a token protects its keys with its PIN", "--pkcs11 cannot be combined with passphrase flags")
			}
			// Check the output first: a key made in the token whose .pub
			// cannot be written would be stranded there.
			if _, err := os.Lstat(pubPath); err == nil {
				return fmt.Errorf("%s already exists: %w", pubPath, iofs.ErrExist)
			}
			if err := os.MkdirAll(filepath.Dir(pubPath), 0o755); err != nil {
				return err
			}
			p, err := keys.GeneratePKCS11(*uri, t)
			if err != nil {
				return err
			}
			b, err := keys.MarshalPublic(p)
			if err != nil {
				return err
			}
			if err := writeNewFile(pubPath, b); err != nil {
				return err
			}
			pub = p
		} else {
			pass := ""
			if !*noPass {
				if pass, err = readPassphrase(e, *ppFile, true); err != nil {
					return err
				}
			} else if *ppFile != "" {
				return usagef("", "--no-passphrase and --passphrase-file contradict each other")
			}
			p, err := keys.GenerateFile(base, t, pass)
			if err != nil {
				return err
			}
			pub = p
		}
		id, err := keys.ID(pub)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(map[string]string{"key_id": id, "type": string(t), "public_key_file": pubPath})
		}
		fmt.Fprintln(e.stdout, id)
		return nil
	},
}

var keyIDCmd = &cmdSpec{
	name:    "key id",
	summary: "print the TUF key id of a public key, key file or PKCS#11 key",
	usage: `
Usage: rampart key id KEY [--passphrase-file FILE] [--json]

KEY is a .pub file, a .key file (asks for its passphrase) or a PKCS#11 URI.

Example:
    rampart key id keys/rel-a.pub
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("key id", flag.ContinueOnError)
		ppFile := fs.String("passphrase-file", "", "")
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("example: rampart key id keys/rel-a.pub", "key id takes one argument")
		}
		pub, err := loadAnyPublic(e, pos[0], *ppFile)
		if err != nil {
			return err
		}
		id, err := keys.ID(pub)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(map[string]string{"key_id": id, "type": string(keys.TypeOf(pub))})
		}
		fmt.Fprintf(e.stdout, "%s %s\n", id, keys.TypeOf(pub))
		return nil
	},
}
