// Package xgb is the trainer's minimal cgo binding to XGBoost 1.7's C API (Debian's
// libxgboost-dev, linked with -lxgboost): dense float32 matrices with NaN as the missing
// value, labels, a booster with parameters, one boosting round at a time (built-in objective
// or custom gradients), predictions and the model as JSON. It is what the trainer needs and
// no more; the picker never links it (it loads models converted by models/xgbconv with leaves).
//
// Its tests prove the conversion: models trained here, converted by models/xgbconv and loaded
// with github.com/dmitryikh/leaves predict what XGBoost predicts.
//
// Allowed imports (checked by imports_test.go): none.
package xgb
