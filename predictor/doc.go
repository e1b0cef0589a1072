// Package predictor predicts, in the picker's process, how long a request would wait for its
// first token (TTFT) and how fast it would stream (TPOT) on each candidate replica.
//
// Trained models (package trainer) are loaded from their binary form after every check that
// can fail without serving: checksums against the manifest, the feature schema, a walk of the
// binary format, a reading by github.com/dmitryikh/leaves, and a sanity prediction on
// reference requests (Load). Predictions walk the trees as laid out by forest.go, every
// candidate of a decision at once; they are leaves' predictions bit for bit, which Load
// checks on reference rows before a model serves. The published champions are followed in Postgres or in a
// directory and swapped in atomically; models that fail a check are refused and the previous
// ones keep serving (Follow). Before any model exists, each target is estimated by the
// analytic prior of package models, fitted online from the picker's first samples (and by
// its documented defaults before those), and augur_predictor_source says which serves.
//
// Predict fills the decision's per-candidate values for every candidate in one call, without
// allocating or locking; Observe measures live error per replica class and, per replica, how
// far its latency departs from the models' predictions. A replica whose error stays beyond a
// threshold is drifting (it silently slowed): its predictions are corrected by its measured
// ratio until new models load, augur_drift_active and augur_drift_ratio show it, and
// Options.OnDrift is told, so that the picker can ask the trainer to run early (see
// DriftOptions).
//
// Allowed imports (checked by imports_test.go): models, models/xgbconv, requestcontrol, scheduler, store, github.com/dmitryikh/leaves, github.com/jackc/pgx/v5, github.com/prometheus/client_golang, gonum.org/v1/gonum, k8s.io/utils.
package predictor
