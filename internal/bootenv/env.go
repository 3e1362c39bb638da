package bootenv

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Env maps variable names to values. Encoders write variables sorted by
// name, which is also the order fw_setenv writes them in, so an environment
// written by us and one written by fw_setenv with the same content are the
// same bytes.
type Env map[string]string

// Names returns the variable names in the order they are serialised.
func (e Env) Names() []string {
	names := make([]string, 0, len(e))
	for k := range e {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Clone returns a copy that can be changed without touching e.
func (e Env) Clone() Env {
	c := make(Env, len(e))
	for k, v := range e {
		c[k] = v
	}
	return c
}

var (
	// ErrBadCRC reports a U-Boot environment whose stored checksum does not
	// match its content: a torn write, the wrong offset or the wrong size.
	ErrBadCRC = errors.New("bad environment checksum")
	// ErrFormat reports content that the bootloader would not parse the way
	// the bytes suggest, so it is refused rather than guessed at.
	ErrFormat = errors.New("malformed environment")
	// ErrTooLarge reports variables that do not fit the environment size.
	ErrTooLarge = errors.New("environment does not fit")
)

// CRCError is the detailed form of ErrBadCRC.
type CRCError struct {
	Stored, Computed uint32
}

func (e *CRCError) Error() string {
	return fmt.Sprintf("%v: stored %08x, computed %08x", ErrBadCRC, e.Stored, e.Computed)
}

func (e *CRCError) Is(target error) bool { return target == ErrBadCRC }

// checkName rejects names that a reader would split differently from how
// they were meant: "=" ends a name in every format, NUL ends a U-Boot entry,
// and forbidden holds the format's line separator.
func checkName(name, forbidden string) error {
	if name == "" {
		return fmt.Errorf("%w: empty variable name", ErrFormat)
	}
	if i := strings.IndexAny(name, "=\x00"+forbidden); i >= 0 {
		return fmt.Errorf("%w: variable name %q contains %q", ErrFormat, name, name[i])
	}
	return nil
}
