package xgbconv

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"testing"

	"github.com/dmitryikh/leaves"
)

// FuzzCheckBinary feeds CheckBinary damaged models: it must never panic, and whatever it
// accepts leaves must load and predict finite numbers from, without running out of memory.
func FuzzCheckBinary(f *testing.F) {
	js, err := os.ReadFile("testdata/small.json")
	if err != nil {
		f.Fatal(err)
	}
	bin, err := ConvertJSON(js)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bin)
	f.Add(bin[:len(bin)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		nf, _, err := CheckBinary(b)
		if err != nil {
			return
		}
		ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(b)), false)
		if err != nil {
			t.Fatalf("CheckBinary accepted a model leaves cannot read: %v", err)
		}
		row := make([]float64, nf)
		out := make([]float64, 1)
		for _, x := range []float64{0, 1, -1, math.NaN(), 1e30} {
			for i := range row {
				row[i] = x
			}
			if err := ens.Predict(row, 0, out); err != nil || math.IsNaN(out[0]) || math.IsInf(out[0], 0) {
				t.Fatalf("accepted model predicts %v (%v) for %v", out[0], err, x)
			}
		}
	})
}
