//go:build race

package sim_test

// raceEnabled skips the 200-device end-to-end test under the race
// detector, where it is too slow for make test's budget; make test runs
// it without -race (a line of its own).
const raceEnabled = true
