//go:build race

package agent_test

// raceEnabled lets the exhaustive power-cut test sample its crash points
// under the race detector, which slows it roughly fifteenfold; `make test`
// also runs it exhaustively without -race.
const raceEnabled = true
