//go:build !unix

package server

// openFileLimit is unknown here.
func openFileLimit() int { return 0 }

// fsSize is unknown here.
func fsSize(string) (int64, bool) { return 0, false }
