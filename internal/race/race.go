//go:build race

// Package race tells tests whether the race detector is on, so a test
// can sample (or skip, when make test runs it without -race) what the
// detector makes too slow, and log rather than assert CPU bounds.
package race

// Enabled is true in a build with -race.
const Enabled = true
