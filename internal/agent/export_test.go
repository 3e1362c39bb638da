package agent

// SetProgressEvery changes how many chunks go between progress syncs, for
// tests that need batches with images of a few chunks; it returns a func
// restoring the default.
func SetProgressEvery(n int) func() {
	old := progressEvery
	progressEvery = n
	return func() { progressEvery = old }
}
