//go:build !race

package predictor_test

const raceEnabled = false
