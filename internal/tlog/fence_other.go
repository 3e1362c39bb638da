//go:build !unix

package tlog

import (
	"context"
	"errors"
)

// lockFile: a shared log needs fcntl locks, which only Unix systems have.
func lockFile(context.Context, string) (func(), error) {
	return nil, errors.New("a shared log needs fcntl file locks (a Unix system)")
}
