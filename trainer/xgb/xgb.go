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

// Booster is an XGBoost model being trained. Free releases it.
//
// A booster belongs to the goroutine that created it, which NewBooster locks to its OS thread
// until Free: XGBoost keeps a booster's training-data cache per thread, so a boosting round
// run on another thread than the one that created the booster finds no data ("0 feature is
// supplied"), and its error message is per thread too. Create, train and free a booster on
// one goroutine.
type Booster struct {
	h     C.BoosterHandle
	train *DMatrix
}

// NewBooster creates a booster that trains on train (which must outlive it) and locks the
// calling goroutine to its thread until Free.
func NewBooster(train *DMatrix) (*Booster, error) {
	runtime.LockOSThread()
	b := &Booster{train: train}
	dm := [1]C.DMatrixHandle{train.h}
	if err := check(C.XGBoosterCreate(&dm[0], 1, &b.h), "XGBoosterCreate"); err != nil {
		runtime.UnlockOSThread()
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

// Free releases the booster and unlocks its goroutine from its thread; it may be called more
// than once.
func (b *Booster) Free() {
	if b.h != nil {
		C.XGBoosterFree(b.h)
		b.h = nil
		runtime.UnlockOSThread()
	}
}

// PredictFromDense predicts rows x cols values (row-major, NaN missing) in place, without a
// DMatrix (XGBoosterPredictFromDense): the model's output for each row, base score included.
func (b *Booster) PredictFromDense(values []float32, rows, cols int) ([]float32, error) {
	if rows <= 0 || cols <= 0 || len(values) != rows*cols {
		return nil, fmt.Errorf("xgb: %d values for %d x %d", len(values), rows, cols)
	}
	// The array interface passes the data's address as a number; the data is copied to C
	// memory so that no Go pointer travels that way.
	n := C.size_t(len(values)) * C.size_t(unsafe.Sizeof(float32(0)))
	buf := C.malloc(n)
	if buf == nil {
		return nil, errors.New("xgb: out of memory")
	}
	defer C.free(buf)
	copy(unsafe.Slice((*float32)(buf), len(values)), values)
	arr := C.CString(fmt.Sprintf(`{"data": [%d, true], "shape": [%d, %d], "typestr": "<f4", "version": 3}`, uintptr(buf), rows, cols))
	defer C.free(unsafe.Pointer(arr))
	cfg := C.CString(`{"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false, "missing": NaN, "cache_id": 0}`)
	defer C.free(unsafe.Pointer(cfg))
	var shape *C.bst_ulong
	var dim C.bst_ulong
	var res *C.float
	if err := check(C.XGBoosterPredictFromDense(b.h, arr, cfg, nil, &shape, &dim, &res), "XGBoosterPredictFromDense"); err != nil {
		return nil, err
	}
	total := 1
	for _, s := range unsafe.Slice(shape, int(dim)) {
		total *= int(s)
	}
	if total != rows {
		return nil, fmt.Errorf("xgb: %d predictions for %d rows", total, rows)
	}
	out := make([]float32, rows)
	copy(out, unsafe.Slice((*float32)(unsafe.Pointer(res)), rows))
	return out, nil
}

// SetBaseMargin sets one starting margin per row: boosting fits the trees to what the margin
// leaves unexplained, and predictions on d add it.
func (d *DMatrix) SetBaseMargin(margin []float32) error {
	if len(margin) != d.rows {
		return fmt.Errorf("xgb: %d margins for %d rows", len(margin), d.rows)
	}
	field := C.CString("base_margin")
	defer C.free(unsafe.Pointer(field))
	rc := C.XGDMatrixSetFloatInfo(d.h, field, (*C.float)(unsafe.Pointer(&margin[0])), C.bst_ulong(len(margin)))
	runtime.KeepAlive(margin)
	return check(rc, "XGDMatrixSetFloatInfo")
}

// LoadJSON returns a booster holding the model js (XGBoost's JSON format), for predictions.
// Like NewBooster it locks the calling goroutine to its thread until Free.
func LoadJSON(js []byte) (*Booster, error) {
	if len(js) == 0 {
		return nil, errors.New("xgb: empty model")
	}
	runtime.LockOSThread()
	b := &Booster{}
	if err := check(C.XGBoosterCreate(nil, 0, &b.h), "XGBoosterCreate"); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	rc := C.XGBoosterLoadModelFromBuffer(b.h, unsafe.Pointer(&js[0]), C.bst_ulong(len(js)))
	runtime.KeepAlive(js)
	if err := check(rc, "XGBoosterLoadModelFromBuffer"); err != nil {
		b.Free()
		return nil, err
	}
	return b, nil
}
