//go:build race

package chunkindex

const raceEnabled = true
