//go:build cgo

package xgb

/*
#cgo LDFLAGS: -lxgboost
#include <stdlib.h>
#include <xgboost/c_api.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

func check(rc C.int, what string) error {
	if rc == 0 {
		return nil
	}
	return fmt.Errorf("xgb: %s: %s", what, C.GoString(C.XGBGetLastError()))
}

// DMatrix is a dense matrix of float32 features held by XGBoost. Free releases it.
type DMatrix struct {
	h    C.DMatrixHandle
	rows int
}

// NewDMatrix copies rows x cols values (row-major) into a new matrix; NaN marks a missing
// value.
func NewDMatrix(values []float32, rows, cols int) (*DMatrix, error) {
	if rows <= 0 || cols <= 0 || len(values) != rows*cols {
		return nil, fmt.Errorf("xgb: %d values for %d x %d", len(values), rows, cols)
	}
	d := &DMatrix{rows: rows}
	rc := C.XGDMatrixCreateFromMat((*C.float)(unsafe.Pointer(&values[0])), C.bst_ulong(rows), C.bst_ulong(cols),
		C.float(float32(math.NaN())), &d.h)
	runtime.KeepAlive(values)
	if err := check(rc, "XGDMatrixCreateFromMat"); err != nil {
		return nil, err
	}
	return d, nil
}

// Rows is the number of rows.
func (d *DMatrix) Rows() int { return d.rows }

// SetLabels sets one label per row.
func (d *DMatrix) SetLabels(labels []float32) error {
	if len(labels) != d.rows {
		return fmt.Errorf("xgb: %d labels for %d rows", len(labels), d.rows)
	}
	field := C.CString("label")
	defer C.free(unsafe.Pointer(field))
	rc := C.XGDMatrixSetFloatInfo(d.h, field, (*C.float)(unsafe.Pointer(&labels[0])), C.bst_ulong(len(labels)))
	runtime.KeepAlive(labels)
	return check(rc, "XGDMatrixSetFloatInfo")
}

// Free releases the matrix; it may be called more than once.
func (d *DMatrix) Free() {
	if d.h != nil {
		C.XGDMatrixFree(d.h)
		d.h = nil
	}
}

// Booster is an XGBoost model being trained. Free releases it. Not safe for concurrent use.
type Booster struct {
	h     C.BoosterHandle
	train *DMatrix
}

// NewBooster creates a booster that trains on train (which must outlive it).
func NewBooster(train *DMatrix) (*Booster, error) {
	b := &Booster{train: train}
	dm := [1]C.DMatrixHandle{train.h}
	if err := check(C.XGBoosterCreate(&dm[0], 1, &b.h), "XGBoosterCreate"); err != nil {
		return nil, err
	}
	return b, nil
}

// SetParam sets one training parameter (e.g. "max_depth", "8").
func (b *Booster) SetParam(name, value string) error {
	n, v := C.CString(name), C.CString(value)
	defer C.free(unsafe.Pointer(n))
	defer C.free(unsafe.Pointer(v))
	return check(C.XGBoosterSetParam(b.h, n, v), "XGBoosterSetParam "+name)
}

// UpdateOneIter runs boosting round iter with the configured objective.
func (b *Booster) UpdateOneIter(iter int) error {
	return check(C.XGBoosterUpdateOneIter(b.h, C.int(iter), b.train.h), "XGBoosterUpdateOneIter")
}

// BoostOneIter runs one boosting round with the given gradients and hessians (one per
// training row): a custom objective.
func (b *Booster) BoostOneIter(grad, hess []float32) error {
	if len(grad) != b.train.rows || len(hess) != b.train.rows {
		return fmt.Errorf("xgb: %d gradients and %d hessians for %d rows", len(grad), len(hess), b.train.rows)
	}
	rc := C.XGBoosterBoostOneIter(b.h, b.train.h, (*C.float)(unsafe.Pointer(&grad[0])), (*C.float)(unsafe.Pointer(&hess[0])),
		C.bst_ulong(len(grad)))
	runtime.KeepAlive(grad)
	runtime.KeepAlive(hess)
	return check(rc, "XGBoosterBoostOneIter")
}

// Predict returns one prediction per row of d, from all trees. margin asks for the untransformed
// sum; training marks a prediction on training data inside a custom objective.
func (b *Booster) Predict(d *DMatrix, margin, training bool) ([]float32, error) {
	mask, tr := C.int(0), C.int(0)
	if margin {
		mask = 1
	}
	if training {
		tr = 1
	}
	var n C.bst_ulong
	var res *C.float
	if err := check(C.XGBoosterPredict(b.h, d.h, mask, 0, tr, &n, &res), "XGBoosterPredict"); err != nil {
		return nil, err
	}
	if int(n) != d.rows {
		return nil, fmt.Errorf("xgb: %d predictions for %d rows", n, d.rows)
	}
	out := make([]float32, int(n))
	copy(out, unsafe.Slice((*float32)(unsafe.Pointer(res)), int(n)))
	return out, nil
}

// SaveJSON returns the model in XGBoost's JSON format.
func (b *Booster) SaveJSON() ([]byte, error) {
	cfg := C.CString(`{"format":"json"}`)
	defer C.free(unsafe.Pointer(cfg))
	var n C.bst_ulong
	var p *C.char
	if err := check(C.XGBoosterSaveModelToBuffer(b.h, cfg, &n, &p), "XGBoosterSaveModelToBuffer"); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("xgb: empty model buffer")
	}
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))...), nil
}

// Free releases the booster; it may be called more than once.
func (b *Booster) Free() {
	if b.h != nil {
		C.XGBoosterFree(b.h)
		b.h = nil
	}
}
