// Package trainertest makes labelled samples with a known latency law and trains real models
// on them, for the tests of the trainer, the predictor and the picker.
//
// Allowed imports (checked by imports_test.go): models, store, trainer.
package trainertest
