// Package models is the contract between the recorder, the trainer and the predictor: the
// feature schema (each feature's name, order, kind and how it is computed from a candidate
// replica at decision time, or NULL when it was not computed), its version, and later the
// model artifacts trained on it.
//
// Adding a feature is one entry in the schema (features.go) plus a migration in store/ that
// adds its column; a test there checks the table and the schema agree.
//
// Allowed imports (checked by imports_test.go): scheduler, pool.
package models
