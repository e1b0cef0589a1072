// Package schedulertest sets up the decision benchmarks of the scheduler and of the packages
// that plug into it (the predictor), so that they time the same decision over the same pool.
//
// Allowed imports (checked by imports_test.go): pool, scheduler, k8s.io/utils.
package schedulertest
