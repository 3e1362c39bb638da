//go:build race

package pki_test

// raceEnabled: the race detector multiplies the CPU cost of parsing, so
// CPU bounds are logged, not asserted, under it (the real-binary tests of
// cmd/rampart-server assert them on a server built without it).
const raceEnabled = true
