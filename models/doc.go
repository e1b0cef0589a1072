// Package models is the contract between the recorder, the trainer and the predictor:
//
//   - the feature schema (features.go): each feature's name, order, kind and how it is
//     computed from a candidate replica at decision time (or NULL), and its version;
//   - a model's input row (Layout): the features, then one indicator per replica class;
//   - the regimes accuracy is reported, balanced and calibrated by (regime.go);
//   - the analytic prior every model is boosted from and the cold start uses (prior.go);
//   - model artifacts (artifact.go): XGBoost's JSON model, the binary leaves reads, and a
//     manifest (target, kind, schema version, training window, holdout metrics, parent,
//     checksums), stored in Postgres by package store or in a directory.
//
// Adding a feature is one entry in the schema, its computation in Extract (and its
// definition in the test that checks Extract), plus a migration in store/ that adds its
// column, and a new SchemaVersion: models of another schema are refused by Verify.
//
// Allowed imports (checked by imports_test.go): scheduler, pool, gonum.org/v1/gonum.
package models
