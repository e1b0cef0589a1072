//go:build race

package predictor_test

// raceDetector says the tests run under the race detector, ten times slower; under it,
// sync.Pool also drops a share of what is put back, so a call through a pool allocates now
// and then however lean it is.
const raceDetector = true
