// Package xgbconv converts a gradient-boosted tree model saved by XGBoost 1.7 as JSON
// (XGBoosterSaveModelToBuffer with {"format":"json"}) into XGBoost's old binary model format
// (versions 0.72-0.90), the only XGBoost format github.com/dmitryikh/leaves reads. The trainer
// trains with XGBoost 1.7 and publishes the converted bytes; the picker loads them with leaves
// (leaves.XGEnsembleFromReader) and stays pure Go.
//
// Supported: the gbtree booster with one output (num_class 0 or 1, num_target 1), numerical
// splits only, no vector leaves, and an objective whose link is the identity
// (reg:squarederror, reg:linear, reg:absoluteerror, reg:pseudohubererror); a model trained
// with a custom objective through XGBoosterBoostOneIter carries the configured objective's
// name and is handled the same way. Anything else (dart, multi-class or multi-target models,
// categorical splits, other objectives) is refused with an error, as is malformed JSON.
//
// Exactness: XGBoost sends a value left when value < split_condition, leaves when value <=
// threshold, so each threshold is written as the largest float32 below the split condition.
// Predictions then agree with XGBoost's for every input that is a float32 value (XGBoost
// reads features as float32); NaN is the missing value and follows the node's default
// direction in both. The base score is written as the margin of the base prediction.
//
// It depends on the standard library only; its tests also use leaves to load what it writes.
//
// Allowed imports (checked by imports_test.go): none.
package xgbconv
