//go:build race

package fleet

// raceEnabled builds the servers under test with the race detector when
// the test itself runs under it.
const raceEnabled = true
