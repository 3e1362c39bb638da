//go:build !unix

package bootenv

// lockFile is a no-op where flock(2) does not exist; fw_setenv does not run
// there either.
func lockFile(string) (unlock func()) { return func() {} }
