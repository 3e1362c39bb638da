//go:build unix

package bootenv

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes the same flock fw_printenv and fw_setenv take. Like
// libubootenv it carries on without the lock when the lock file cannot be
// created (read-only or missing /var/lock): refusing would leave a device
// unable to commit or roll back an update over a missing directory.
func lockFile(path string) (unlock func()) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return func() {}
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}
