// Package trainer fits Augur's latency models from recorded request samples: it reads a
// window of samples (from Postgres, as the picker recorded them), keeps those with a label,
// balances the training part across load regimes, fits for TTFT and TPOT a mean model and an
// upper-quantile model (XGBoost through trainer/xgb, boosted from the analytic prior of
// package models), evaluates them on the newest samples it did not train on, compares them on
// the same samples with the models serving, and publishes them only when they are not worse.
//
// It runs as a job (cmd/trainer, a Kubernetes CronJob) beside the pickers and never blocks
// them: it reads samples and writes model versions, and pickers pick champions up when they
// poll. It links libxgboost through cgo; the picker never imports it.
//
// Allowed imports (checked by imports_test.go): models, models/xgbconv, predictor, store, trainer/xgb, github.com/jackc/pgx/v5, gonum.org/v1/gonum.
package trainer
