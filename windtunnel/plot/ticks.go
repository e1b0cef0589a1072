package plot

import (
	"math"
	"strconv"

	gplot "gonum.org/v1/plot"
)

// logTicks marks a log axis: labelled ticks at the densest of 1..9, 1-2-5, 1-3 or 1 per
// decade that gives at most eight labels and at least two, unlabelled ticks at the other
// integer multiples while the range spans at most four decades. A range too narrow for two
// labels gets linear ticks.
func logTicks(lo, hi float64) []gplot.Tick {
	if !(lo > 0) || !(hi > lo) || !finite(lo) || !finite(hi) {
		return nil
	}
	first := int(math.Floor(math.Log10(lo))) - 1
	last := int(math.Ceil(math.Log10(hi))) + 1
	decades := math.Log10(hi / lo)

	var all []gplot.Tick // every integer multiple in range, unlabelled
	for e := first; e <= last; e++ {
		for m := 1; m <= 9; m++ {
			if v := decimal(m, e); v >= lo && v <= hi {
				all = append(all, gplot.Tick{Value: v})
			}
		}
	}
	tooMany := false
	for _, set := range [][]int{{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 5}, {1, 3}, {1}} {
		n := 0
		for _, t := range all {
			if contains(set, mantissa(t.Value)) {
				n++
			}
		}
		if n < 2 {
			break // sparser sets give fewer still
		}
		if tooMany = n > 8; tooMany {
			continue
		}
		var out []gplot.Tick
		for _, t := range all {
			if contains(set, mantissa(t.Value)) {
				out = append(out, gplot.Tick{Value: t.Value, Label: label(t.Value)})
			} else if decades <= 4 {
				out = append(out, t)
			}
		}
		return out
	}
	// More than eight powers of ten in range: label every k-th.
	if tooMany {
		k := int(math.Ceil((decades + 1) / 8))
		var out []gplot.Tick
		for e := first; e <= last; e++ {
			if v := decimal(1, e); v >= lo && v <= hi {
				t := gplot.Tick{Value: v}
				if ((e%k)+k)%k == 0 {
					t.Label = label(v)
				}
				out = append(out, t)
			}
		}
		return out
	}
	// Less than two labels' worth: linear ticks read well over so short a range.
	out := gplot.DefaultTicks{}.Ticks(lo, hi)
	for i := range out {
		if out[i].Label != "" {
			out[i].Label = label(out[i].Value)
		}
	}
	return out
}

// decimal is m×10^e without the rounding error of multiplying by a power of ten.
func decimal(m, e int) float64 { return decimal64(int64(m), e) }

func decimal64(m int64, e int) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatInt(m, 10)+"e"+strconv.Itoa(e), 64)
	return v
}

// mantissa is the leading digit of a value made by decimal.
func mantissa(v float64) int {
	s := strconv.FormatFloat(v, 'e', -1, 64)
	return int(s[0] - '0')
}

func contains(set []int, m int) bool {
	for _, x := range set {
		if x == m {
			return true
		}
	}
	return false
}

// label formats a tick value plainly (1000, 0.05), in exponent form only when very large
// or very small.
func label(v float64) string {
	if a := math.Abs(v); a != 0 && (a < 1e-4 || a >= 1e7) {
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// linearTicks marks a linear axis: labelled ticks at the finest step of 1, 2, 2.5 or 5
// times a power of ten that gives at most eight labels, with an unlabelled tick halfway
// between labels.
func linearTicks(lo, hi float64) []gplot.Tick {
	if !finite(lo) || !finite(hi) || !(hi > lo) {
		return gplot.DefaultTicks{}.Ticks(lo, hi)
	}
	e0 := int(math.Floor(math.Log10(hi-lo))) - 2
	for e := e0; e <= e0+4; e++ {
		for _, m := range []int64{10, 20, 25, 50} { // the step is m×10^(e-1)
			step := decimal64(m, e-1)
			a, b := lo/step, hi/step
			if math.Abs(a) > 1e12 || math.Abs(b) > 1e12 {
				return gplot.DefaultTicks{}.Ticks(lo, hi)
			}
			first, last := int64(math.Ceil(a-1e-9)), int64(math.Floor(b+1e-9))
			if last-first+1 > 8 {
				continue
			}
			var out []gplot.Tick
			for k := first - 1; k <= last; k++ {
				if k >= first {
					v := decimal64(k*m, e-1)
					out = append(out, gplot.Tick{Value: v, Label: label(v)})
				}
				if v := decimal64((2*k+1)*5*m, e-2); v >= lo && v <= hi {
					out = append(out, gplot.Tick{Value: v})
				}
			}
			return out
		}
	}
	return gplot.DefaultTicks{}.Ticks(lo, hi)
}

// percentTicks marks a 0..100 axis every 20 with minor ticks every 10; other ranges get
// linear ticks.
func percentTicks(lo, hi float64) []gplot.Tick {
	if lo != 0 || hi != 100 {
		return linearTicks(lo, hi)
	}
	var out []gplot.Tick
	for v := 0; v <= 100; v += 10 {
		t := gplot.Tick{Value: float64(v)}
		if v%20 == 0 {
			t.Label = strconv.Itoa(v)
		}
		out = append(out, t)
	}
	return out
}
