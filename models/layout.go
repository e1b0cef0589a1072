package models

import (
	"math"
	"slices"
)

// Layout is a model's input row: the schema's features in order, then one indicator column
// per replica class the model was trained on (1 for the candidate's class). Replica classes
// are text; an indicator per class keeps the model free of categorical splits, which leaves
// cannot read. A class the model has never seen gets no indicator set.
type Layout struct {
	Classes []string
}

// NewLayout returns the layout for classes, sorted and without repeats.
func NewLayout(classes []string) Layout {
	c := slices.Clone(classes)
	slices.Sort(c)
	return Layout{Classes: slices.Compact(c)}
}

// Width is the number of input columns.
func (l Layout) Width() int { return NumFeatures + len(l.Classes) }

// Columns names the input columns: the feature names, then "class=NAME" per class.
func (l Layout) Columns() []string {
	out := Names()
	for _, c := range l.Classes {
		out = append(out, "class="+c)
	}
	return out
}

// ClassIndex is the position of class among the layout's classes, or -1.
func (l Layout) ClassIndex(class string) int {
	for i, c := range l.Classes {
		if c == class {
			return i
		}
	}
	return -1
}

// Fill writes v's row for a replica of class into dst[:Width], NaN for a NULL feature. Values
// are rounded to float32, the precision XGBoost trains and splits on, so that a value close
// to a split goes the same way in training and in prediction. It does not allocate.
func (l Layout) Fill(dst []float64, v *Vector, class int) {
	for i := range NumFeatures {
		if x, ok := v.Get(i); ok {
			dst[i] = float64(float32(x))
		} else {
			dst[i] = math.NaN()
		}
	}
	for i := range l.Classes {
		dst[NumFeatures+i] = 0
	}
	if class >= 0 && class < len(l.Classes) {
		dst[NumFeatures+class] = 1
	}
}

// Fill32 is Fill for the trainer's float32 matrices.
func (l Layout) Fill32(dst []float32, v *Vector, class int) {
	for i := range NumFeatures {
		if x, ok := v.Get(i); ok {
			dst[i] = float32(x)
		} else {
			dst[i] = float32(math.NaN())
		}
	}
	for i := range l.Classes {
		dst[NumFeatures+i] = 0
	}
	if class >= 0 && class < len(l.Classes) {
		dst[NumFeatures+class] = 1
	}
}
