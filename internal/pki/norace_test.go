//go:build !race

package pki_test

const raceEnabled = false
