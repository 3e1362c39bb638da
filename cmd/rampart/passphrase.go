package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/rampartfw/rampart/internal/keys"
)

// passphraseSource returns where a key passphrase comes from: the file
// named by --passphrase-file, else RAMPART_PASSPHRASE, else a prompt when
// stdin is a terminal. It is called only when an encrypted key is opened.
func passphraseSource(e *env, file string) keys.Passphrase {
	var cached *string
	return func() (string, error) {
		if cached != nil {
			return *cached, nil
		}
		p, err := readPassphrase(e, file, false)
		if err != nil {
			return "", err
		}
		cached = &p
		return p, nil
	}
}

func readPassphrase(e *env, file string, confirm bool) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading passphrase file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", fmt.Errorf("%w: %s is empty", keys.ErrNoPassphrase, file)
		}
		return p, nil
	}
	if p := e.getenv("RAMPART_PASSPHRASE"); p != "" {
		return p, nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", keys.ErrNoPassphrase
	}
	fmt.Fprint(e.stderr, "Passphrase: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(e.stderr, "Confirm passphrase: ")
		b2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", err
		}
		if string(b) != string(b2) {
			return "", usagef("", "the passphrases do not match")
		}
	}
	if len(b) == 0 {
		return "", keys.ErrNoPassphrase
	}
	return string(b), nil
}
