package main

import "errors"

// writePlots draws the comparison's charts into dir.
func writePlots(dir string, res *comparison) error {
	return errors.New("--plots: charts are not available in this build")
}
