package predictor

import (
	"bufio"
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/dmitryikh/leaves"

	"github.com/augur-llm/augur/models/xgbconv"
)

// The forest predicts what leaves predicts from the same binary model, bit for bit, for rows
// of float32 values (as the predictor feeds both) that sit on the thresholds, a step either
// side of them, or are missing (NaN), infinite or zero: the cases where a reading of the
// split rule or of the default direction that differed from leaves' would show.
func TestForestPredictsAsLeaves(t *testing.T) {
	js, err := os.ReadFile("../models/xgbconv/testdata/small.json")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := xgbconv.ConvertJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(bin)), false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := xgbconv.ReadBinary(bin)
	if err != nil {
		t.Fatal(err)
	}
	const extra = 3 // columns the trees do not read, as a layout's class indicators
	width := m.NumFeatures + extra
	f, err := newForest(m, width)
	if err != nil {
		t.Fatal(err)
	}
	// Values worth trying per feature: its thresholds and their neighbours, and the specials.
	inf := float32(math.Inf(1))
	values := make([][]float32, width)
	for i := range values {
		values[i] = []float32{float32(math.NaN()), inf, -inf, 0, float32(math.Copysign(0, -1)), 1e30, -1e30}
	}
	for _, tree := range m.Trees {
		for _, n := range tree {
			if !n.Leaf() {
				v := n.Value
				values[n.Feature] = append(values[n.Feature], v, math.Nextafter32(v, inf), math.Nextafter32(v, -inf))
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	const rows = 5000
	row32 := make([]float32, rows*2*width)
	want := make([]float64, rows)
	row := make([]float64, width)
	for r := range rows {
		lo, hi := row32[r*2*width:(r*2+1)*width], row32[(r*2+1)*width:(r+1)*2*width]
		for i := range row {
			x := values[i][rng.IntN(len(values[i]))]
			row[i] = float64(x)
			lo[i], hi[i] = x, x
			if x != x {
				lo[i], hi[i] = -inf, inf
			}
		}
		out := make([]float64, 1)
		if err := ens.Predict(row, 0, out); err != nil {
			t.Fatal(err)
		}
		want[r] = out[0]
	}
	got := make([]float64, rows)
	for _, n := range []int{rows, 1, 3, 4, 7} { // every interleaving of rows the forest uses
		f.predict(row32[:n*2*width], got[:n])
		for r := range n {
			if math.Float64bits(got[r]) != math.Float64bits(want[r]) {
				t.Fatalf("%d rows, row %d: the forest predicts %v, leaves %v", n, r, got[r], want[r])
			}
		}
	}
}
