//go:build !race

package gateway

// raceEnabled scales the concurrency tests down under the race detector.
const raceEnabled = false
