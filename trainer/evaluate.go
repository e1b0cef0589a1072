package trainer

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/stat"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/predictor"
)

// Regime names in evaluations: the load regimes, prefix hit and miss, and "class NAME".
const (
	RegimePrefixHit  = "prefix hit"
	RegimePrefixMiss = "prefix miss"
	classPrefix      = "class "
)

// RegimeNames lists the regimes a row belongs to: its load regime, prefix hit or miss, its
// replica class.
func RegimeNames(r *Row) [3]string {
	p := RegimePrefixMiss
	if r.Features.PrefixHit() {
		p = RegimePrefixHit
	}
	return [3]string{r.Features.Load().String(), p, classPrefix + r.Class}
}

type accumulator struct {
	ape, abs []float64
	covered  int
	pinball  float64
	n        int
}

func (a *accumulator) addMean(pred, y float64) {
	a.n++
	a.abs = append(a.abs, math.Abs(pred-y))
	a.ape = append(a.ape, math.Abs(pred-y)/y)
}

func (a *accumulator) addUpper(pred, y, q float64) {
	a.n++
	if y <= pred {
		a.covered++
		a.pinball += (1 - q) * (pred - y)
	} else {
		a.pinball += q * (y - pred)
	}
}

func (a *accumulator) meanMetrics() models.Metrics {
	m := models.Metrics{Count: a.n}
	if a.n == 0 {
		return m
	}
	m.MAPE, m.MAE = mean(a.ape), mean(a.abs)
	slices.Sort(a.ape)
	m.P50APE, m.P90APE = stat.Quantile(0.5, stat.LinInterp, a.ape, nil), stat.Quantile(0.9, stat.LinInterp, a.ape, nil)
	return m
}

func (a *accumulator) upperMetrics() models.Metrics {
	m := models.Metrics{Count: a.n}
	if a.n > 0 {
		m.Coverage = float64(a.covered) / float64(a.n)
		m.Pinball = a.pinball / float64(a.n)
	}
	return m
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// Evaluate measures set's models for target t on rows (those with a t label): the mean
// model's errors and, when the set has a quantile model, its coverage of quantile q and
// pinball loss, overall and per regime.
func Evaluate(set *predictor.Set, t models.Target, rows []Row, q float64) (meanEval, upperEval models.Evaluation) {
	buf := set.NewBuffer()
	var all, allU accumulator
	byRegime, byRegimeU := map[string]*accumulator{}, map[string]*accumulator{}
	for i := range rows {
		r := &rows[i]
		y := r.Label(t)
		if y <= 0 {
			continue
		}
		e := set.Predict(t, &r.Features, r.Class, buf)
		names := RegimeNames(r)
		all.addMean(e.Mean, y)
		for _, n := range names {
			a := byRegime[n]
			if a == nil {
				a = &accumulator{}
				byRegime[n] = a
			}
			a.addMean(e.Mean, y)
		}
		if !math.IsNaN(e.Upper) {
			allU.addUpper(e.Upper, y, q)
			for _, n := range names {
				a := byRegimeU[n]
				if a == nil {
					a = &accumulator{}
					byRegimeU[n] = a
				}
				a.addUpper(e.Upper, y, q)
			}
		}
	}
	meanEval = models.Evaluation{Overall: all.meanMetrics(), Regimes: map[string]models.Metrics{}}
	for n, a := range byRegime {
		meanEval.Regimes[n] = a.meanMetrics()
	}
	if allU.n > 0 {
		upperEval = models.Evaluation{Overall: allU.upperMetrics(), Regimes: map[string]models.Metrics{}}
		for n, a := range byRegimeU {
			upperEval.Regimes[n] = a.upperMetrics()
		}
	}
	return meanEval, upperEval
}
