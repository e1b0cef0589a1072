//go:build cgo

package xgb_test

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/augur-llm/augur/models/xgbconv"
	"github.com/augur-llm/augur/trainer/xgb"
	"github.com/dmitryikh/leaves"
)

const features = 8

// synth makes rows with about 10% NaN; some features take few distinct values (integers,
// multiples of 0.25), so rows fall exactly on split conditions and the < / <= difference
// between XGBoost and leaves would show.
func synth(r *rand.Rand, rows int) (x, y []float32) {
	x = make([]float32, rows*features)
	y = make([]float32, rows)
	for i := range rows {
		row := x[i*features : (i+1)*features]
		for j := range row {
			switch j % 4 {
			case 0:
				row[j] = float32(r.IntN(20))
			case 1:
				row[j] = float32(math.Round(r.Float64()*40) / 4)
			case 2:
				row[j] = float32(r.NormFloat64() * 100)
			default:
				row[j] = float32(r.ExpFloat64())
			}
		}
		v := func(j int) float64 {
			if math.IsNaN(float64(row[j])) {
				return 0
			}
			return float64(row[j])
		}
		y[i] = float32(50 + 3*v(0) + 10*math.Sin(v(1)) + 0.05*v(2) + 20*v(3)*v(4)/(1+v(4)) + 2*v(5) - v(6)*v(7) + r.NormFloat64())
		for j := range row {
			if r.Float64() < 0.1 {
				row[j] = float32(math.NaN())
			}
		}
	}
	return x, y
}

// compare predicts x with XGBoost and with leaves from the converted model and returns the
// largest relative difference, |leaves - xgboost| / max(|xgboost|, 1), and the largest absolute
// one. The floor of 1 is for predictions that cross zero: XGBoost adds its trees up in float32
// (one ulp at the base score of 40 is 3.8e-6), leaves in float64, so near zero only an absolute
// comparison is meaningful.
func compare(t *testing.T, name string, b *xgb.Booster, js []byte, x []float32, rows int) (worstRel, worstAbs float64) {
	t.Helper()
	bin, err := xgbconv.ConvertJSON(js)
	if err != nil {
		t.Fatalf("%s: ConvertJSON: %v", name, err)
	}
	ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(bin)), false)
	if err != nil {
		t.Fatalf("%s: leaves cannot load the converted model: %v", name, err)
	}
	want, err := b.PredictFromDense(x, rows, features)
	if err != nil {
		t.Fatal(err)
	}
	fvals := make([]float64, features)
	failures := 0
	for i := range rows {
		for j := range fvals {
			fvals[j] = float64(x[i*features+j])
		}
		got := ens.PredictSingle(fvals, 0)
		w := float64(want[i])
		abs := math.Abs(got - w)
		rel := abs / math.Max(math.Abs(w), 1)
		worstRel, worstAbs = max(worstRel, rel), max(worstAbs, abs)
		if rel > 1e-4 {
			t.Errorf("%s: row %d %v: leaves %v, XGBoost %v (relative difference %.3g)", name, i, x[i*features:(i+1)*features], got, w, rel)
			if failures++; failures == 10 {
				t.Fatalf("%s: too many differences", name)
			}
		}
	}
	// On a sample, add the trees up as XGBoost does (float32, in order): leaves' prediction
	// from the first k trees, minus that from the first k-1, is tree k's leaf value.
	const sample = 300
	ulps := 0
	for i := range min(rows, sample) {
		for j := range fvals {
			fvals[j] = float64(x[i*features+j])
		}
		// base score + first tree: exact in float64, so rounding it is float32 addition.
		last := ens.PredictSingle(fvals, 1)
		sum := float32(last)
		for k := 2; k <= ens.NEstimators(); k++ {
			p := ens.PredictSingle(fvals, k)
			sum += float32(p - last)
			last = p
		}
		d := int(math.Float32bits(sum)) - int(math.Float32bits(want[i]))
		ulps = max(ulps, d, -d)
	}
	if ulps != 0 {
		t.Errorf("%s: leaves' leaf values added in float32 differ from XGBoost by %d ulps", name, ulps)
	}
	t.Logf("%s: on %d rows, leaves' leaf values added in float32 are within %d ulps of XGBoost", name, min(rows, sample), ulps)
	return worstRel, worstAbs
}

func train(t *testing.T, x, y []float32, rows int, params [][2]string, rounds int, custom func(pred, label []float32) (g, h []float32)) (*xgb.Booster, []byte) {
	t.Helper()
	d, err := xgb.NewDMatrix(x, rows, features)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Free)
	if err := d.SetLabels(y); err != nil {
		t.Fatal(err)
	}
	b, err := xgb.NewBooster(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Free)
	for _, p := range params {
		if err := b.SetParam(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rounds {
		if custom == nil {
			err = b.UpdateOneIter(i)
		} else {
			var pred []float32
			if pred, err = b.Predict(d, true, true); err == nil {
				g, h := custom(pred, y)
				err = b.BoostOneIter(g, h)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	js, err := b.SaveJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b, js
}

// TestConvertedModelsPredictLikeXGBoost is the proof of the conversion: trees of depth 2, 5
// and 8, with NaN as missing, predicted by leaves from the converted model and by XGBoost.
func TestConvertedModelsPredictLikeXGBoost(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 1))
	const trainRows, testRows = 10000, 10000
	x, y := synth(r, trainRows)
	tx, _ := synth(r, testRows)
	cases := []struct {
		depth  int
		trees  int
		method string
	}{{2, 100, "hist"}, {5, 100, "hist"}, {8, 60, "hist"}, {5, 50, "exact"}}
	for _, c := range cases {
		name := fmt.Sprintf("depth %d, %d trees, %s", c.depth, c.trees, c.method)
		params := [][2]string{
			{"objective", "reg:squarederror"}, {"max_depth", fmt.Sprint(c.depth)}, {"eta", "0.1"},
			{"tree_method", c.method}, {"subsample", "0.8"}, {"colsample_bytree", "0.8"},
			{"min_child_weight", "5"}, {"gamma", "0.2"}, {"base_score", "40"}, {"seed", "1"}, {"nthread", "2"},
		}
		b, js := train(t, x, y, trainRows, params, c.trees, nil)
		rel, abs := compare(t, name, b, js, tx, testRows)
		t.Logf("%s: max relative difference %.3g (absolute %.3g) over %d rows", name, rel, abs, testRows)
	}
}

// A quantile (p90) model trained with pinball-loss gradients through BoostOneIter.
func TestConvertedCustomObjectiveModel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 2))
	const rows = 10000
	x, y := synth(r, rows)
	tx, _ := synth(r, rows)
	const q = 0.9
	pinball := func(pred, label []float32) (g, h []float32) {
		g, h = make([]float32, len(pred)), make([]float32, len(pred))
		for i := range pred {
			if label[i] > pred[i] {
				g[i] = -q
			} else {
				g[i] = 1 - q
			}
			h[i] = 1
		}
		return g, h
	}
	params := [][2]string{{"max_depth", "6"}, {"eta", "0.3"}, {"tree_method", "hist"}, {"base_score", "55"}, {"seed", "1"}, {"nthread", "2"}}
	b, js := train(t, x, y, rows, params, 80, pinball)
	rel, abs := compare(t, "pinball p90, depth 6", b, js, tx, rows)
	t.Logf("pinball p90, depth 6, 80 trees: max relative difference %.3g (absolute %.3g) over %d rows", rel, abs, rows)
}
