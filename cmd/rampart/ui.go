package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK          = 0
	exitRefused     = 1
	exitInput       = 2
	exitEnvironment = 3
)

// usageError is a command-line mistake.
type usageError struct{ msg, hint string }

func (e *usageError) Error() string             { return e.msg }
func (e *usageError) FailureKind() failure.Kind { return failure.Input }
func (e *usageError) FailureHint() string       { return e.hint }

func usagef(hint, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), hint: hint}
}

// classes maps sentinel errors of the internal packages to an exit class
// and a hint, in order of precedence.
var classes = []struct {
	err  error
	kind failure.Kind
	hint string
}{
	{offlinerepo.ErrBelowThreshold, failure.Refused, "collect the missing signatures with rampart repo sign, then publish again; a published role whose keys changed must first be staged again with rampart repo stage"},
	{offlinerepo.ErrNotAuthorised, failure.Refused, "check the key with rampart key id and the role's keys with rampart repo status"},
	{offlinerepo.ErrAlreadySigned, failure.Refused, "a key counts once towards a threshold; ask another key holder to sign"},
	{offlinerepo.ErrSecurityLower, failure.Refused, ""},
	{offlinerepo.ErrExpired, failure.Refused, ""},
	{offlinerepo.ErrCorruptStaging, failure.Refused, ""},
	{offlinerepo.ErrLocked, failure.Environment, "wait for the other rampart command on this repository to finish"},
	{offlinerepo.ErrNotRepository, failure.Input, "create one with rampart repo init, or check the path"},
	{offlinerepo.ErrExists, failure.Input, ""},
	{offlinerepo.ErrUnknownRole, failure.Input, "rampart repo status lists the roles"},
	{offlinerepo.ErrNothingStaged, failure.Input, "rampart repo status shows what is staged"},
	{offlinerepo.ErrBadInput, failure.Input, ""},
	{release.ErrInvalid, failure.Input, ""},
	{keys.ErrWrongPassphrase, failure.Input, "check RAMPART_PASSPHRASE or the file given with --passphrase-file"},
	{keys.ErrNoPassphrase, failure.Input, "set RAMPART_PASSPHRASE, give --passphrase-file FILE, or run in a terminal to be asked"},
	{keys.ErrMalformedKey, failure.Input, "a public key file is a PEM \"PUBLIC KEY\" block as written by rampart key generate"},
	{keys.ErrUnsupportedKey, failure.Input, "use ed25519, ecdsa-p256 or rsa-3072 keys"},
	{keys.ErrTokenNotFound, failure.Input, "check token= in the PKCS#11 URI; softhsm2-util --show-slots or pkcs11-tool -L lists tokens"},
	{keys.ErrTokenLogin, failure.Input, "check the PIN given by pin-source= or RAMPART_PKCS11_PIN; a locked token must be unlocked by its security officer"},
	{keys.ErrObjectNotFound, failure.Input, "check object= or id= in the PKCS#11 URI; pkcs11-tool -O lists objects"},
	{keys.ErrNoPKCS11, failure.Environment, ""},
	{keys.ErrBadURI, failure.Input, "the format is pkcs11:token=LABEL;object=LABEL?module-path=/path/to/module.so&pin-source=file:/path/to/pin (docs/key-ceremony.md)"},
	{bundle.ErrEscape, failure.Refused, ""},
	{fs.ErrExist, failure.Input, "choose another name or remove the existing file first; rampart never overwrites keys"},
	{fs.ErrNotExist, failure.Input, "check the path"},
	{fs.ErrPermission, failure.Environment, "check the file's permissions"},
}

// reportLineMax bounds each line of an error report, in runes.
const reportLineMax = 4096

// report prints err the way age does and returns the exit code. Each line
// of the message, and the hint, is made safe to print (internal/termsafe):
// errors can carry text from a server or a file.
func report(stderr io.Writer, err error) int {
	kind := failure.Environment
	hint := ""
	var c failure.Classifier
	if errors.As(err, &c) {
		kind = c.FailureKind()
		hint = failure.HintOf(err)
	} else {
		for _, cl := range classes {
			if errors.Is(err, cl.err) {
				kind, hint = cl.kind, cl.hint
				break
			}
		}
	}
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = termsafe.Bounded(l, reportLineMax)
	}
	fmt.Fprintf(stderr, "rampart: error: %s\n", strings.Join(lines, "\nrampart:   "))
	if hint != "" {
		fmt.Fprintf(stderr, "rampart: hint: %s\n", termsafe.Bounded(hint, reportLineMax))
	}
	return int(kind)
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parse parses flags and positional arguments in any order, so that
// `rampart repo sign repo root --key k` and `--key k repo root` both work.
// A lone "--" ends flag parsing.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("rampart "+fs.Name()+" --help shows the options", "%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func isTerminal(f any) bool {
	if ff, ok := f.(*os.File); ok {
		return term.IsTerminal(int(ff.Fd()))
	}
	return false
}
