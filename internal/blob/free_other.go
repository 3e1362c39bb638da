//go:build !unix

package blob

// freeSpace is unknown here: the reserve is not enforced.
func freeSpace(string) (int64, bool) { return 0, false }
