//go:build race

package predictor_test

// raceDetector says the tests run under the race detector, ten times slower.
const raceDetector = true
