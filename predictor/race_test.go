//go:build race

package predictor_test

// raceEnabled: under the race detector, sync.Pool drops a share of what is put back, so a
// call through a pool allocates now and then however lean it is.
const raceEnabled = true
