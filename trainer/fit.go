package trainer

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/models/xgbconv"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/trainer/xgb"
)

// Params are the tree models' training parameters.
type Params struct {
	Trees          int     // boosting rounds
	Depth          int     // max_depth
	Eta            float64 // learning rate
	MinChildWeight float64
	Subsample      float64 // rows per tree
	ColSample      float64 // columns per tree
	Lambda         float64 // L2 regularisation of leaf values
	Threads        int     // 0: all cores
	Seed           uint64
}

// DefaultParams are sized for the picker's request path: each prediction walks every tree,
// and a decision predicts two targets for up to dozens of candidates within tens of
// microseconds (see docs/benchmarks.md), so the models are few deep trees with a large
// learning rate, boosted from the analytic prior, which carries most of the signal.
func DefaultParams() Params {
	return Params{Trees: 12, Depth: 8, Eta: 0.3, MinChildWeight: 5, Subsample: 0.8, ColSample: 1, Lambda: 1, Seed: 1}
}

func (p Params) xgboost() [][2]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	out := [][2]string{
		{"booster", "gbtree"}, {"tree_method", "hist"}, {"objective", "reg:squarederror"},
		// The prior's logarithm is every row's base margin; the trees add to it alone.
		{"base_score", "0"},
		{"max_depth", strconv.Itoa(p.Depth)}, {"eta", f(p.Eta)}, {"min_child_weight", f(p.MinChildWeight)},
		{"subsample", f(p.Subsample)}, {"colsample_bytree", f(p.ColSample)}, {"lambda", f(p.Lambda)},
		{"seed", strconv.FormatUint(p.Seed%math.MaxInt32, 10)}, {"verbosity", "0"},
	}
	if p.Threads > 0 {
		out = append(out, [2]string{"nthread", strconv.Itoa(p.Threads)})
	}
	return out
}

// threadsFor is the XGBoost threads for a training set of rows: all cores by default, but
// one below 20,000 rows, where OpenMP's synchronisation costs more than it saves (and, on a
// machine whose cores are busy, its spinning threads slow training tenfold).
func (p Params) threadsFor(rows int) Params {
	if p.Threads == 0 && rows < 20_000 {
		p.Threads = 1
	}
	return p
}

func (p Params) check() error {
	switch {
	case p.Trees < 1 || p.Trees > 10000:
		return fmt.Errorf("trees %d: want 1..10000", p.Trees)
	case p.Depth < 1 || p.Depth > 16:
		return fmt.Errorf("depth %d: want 1..16", p.Depth)
	case !(p.Eta > 0 && p.Eta <= 1):
		return fmt.Errorf("eta %v: want (0, 1]", p.Eta)
	case !(p.Subsample > 0 && p.Subsample <= 1) || !(p.ColSample > 0 && p.ColSample <= 1):
		return fmt.Errorf("subsample %v and colsample %v: want (0, 1]", p.Subsample, p.ColSample)
	case p.MinChildWeight < 0 || p.Lambda < 0 || p.Threads < 0:
		return fmt.Errorf("min_child_weight, lambda and threads must not be negative")
	}
	return nil
}

// Progress reports training as it goes.
type Progress struct {
	Target models.Target
	Model  models.ModelKind
	Round  int // rounds done
	Rounds int
}

// design is the model input for rows: float32 features, log labels and log-prior margins.
type design struct {
	x              []float32
	y, margin      []float32
	rows, cols     int
	target         models.Target
	layout         models.Layout
	prior          models.Prior
	priorClassIdx  map[string]int
	layoutClassIdx map[string]int
}

func newDesign(t models.Target, rows []Row) (*design, error) {
	var classes []string
	for i := range rows {
		classes = append(classes, rows[i].Class)
	}
	layout := models.NewLayout(classes)
	obs := make([]models.Observation, len(rows))
	for i := range rows {
		obs[i] = models.Observation{Features: rows[i].Features, Class: rows[i].Class, Ms: rows[i].Label(t)}
	}
	prior, err := models.FitPrior(t, obs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	d := &design{rows: len(rows), cols: layout.Width(), target: t, layout: layout, prior: prior,
		priorClassIdx: map[string]int{}, layoutClassIdx: map[string]int{}}
	for _, c := range layout.Classes {
		d.priorClassIdx[c], d.layoutClassIdx[c] = prior.ClassIndex(c), layout.ClassIndex(c)
	}
	d.x = make([]float32, d.rows*d.cols)
	d.y = make([]float32, d.rows)
	d.margin = make([]float32, d.rows)
	for i := range rows {
		r := &rows[i]
		layout.Fill32(d.x[i*d.cols:(i+1)*d.cols], &r.Features, d.layoutClassIdx[r.Class])
		d.y[i] = float32(math.Log(r.Label(t)))
		d.margin[i] = float32(math.Log(prior.Estimate(&r.Features, d.priorClassIdx[r.Class])))
	}
	return d, nil
}

// booster trains one model on d; custom, when set, supplies the gradients (a custom
// objective). It runs on the calling goroutine, which XGBoost binds to one thread meanwhile.
func (d *design) booster(ctx context.Context, p Params, custom func(pred, label []float32) (g, h []float32), progress func(round int)) ([]byte, error) {
	// One thread for every XGBoost call here: its error messages are per thread, and so is
	// a booster's training cache (xgb.NewBooster locks too; the locks nest).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m, err := xgb.NewDMatrix(d.x, d.rows, d.cols)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	if err := m.SetLabels(d.y); err != nil {
		return nil, err
	}
	if err := m.SetBaseMargin(d.margin); err != nil {
		return nil, err
	}
	b, err := xgb.NewBooster(m)
	if err != nil {
		return nil, err
	}
	defer b.Free()
	for _, kv := range append(p.threadsFor(d.rows).xgboost(), [2]string{"monotone_constraints", d.monotone()}) {
		if err := b.SetParam(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	for i := range p.Trees {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if custom == nil {
			err = b.UpdateOneIter(i)
		} else {
			var pred []float32
			if pred, err = b.Predict(m, true, true); err == nil {
				g, h := custom(pred, d.y)
				err = b.BoostOneIter(g, h)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i, err)
		}
		if progress != nil {
			progress(i + 1)
		}
	}
	return b.SaveJSON()
}

// monotoneIn are the features a target's latency cannot fall with: more prompt to compute,
// more of it queued ahead, more requests waiting for a seat, more streams in the batch.
// Trees fit where the samples are and, past the deepest queue they saw, keep whatever their
// last split learned, which can fall (a 450,000-token queue predicted shorter than a
// 250,000-token one, in the wind tunnel); constrained, the trees' part never falls with
// each of these alone. It still can when features that grow with the queue but are free
// here (the prompt tokens of the current and next step, all tokens in flight) move with it,
// and so can the prior through its step terms; constraining those too was measured and
// not kept (docs/benchmarks.md, "Third round").
var monotoneIn = map[models.Target][]string{
	models.TTFT: {"uncached_input_tokens", "prefill_uncached_tokens_in_flight", "num_requests_waiting"},
	models.TPOT: {"decode_requests_in_flight", "prefill_uncached_tokens_in_flight"},
}

// MonotoneIn returns the features target t's trees never fall with.
func MonotoneIn(t models.Target) []string { return slices.Clone(monotoneIn[t]) }

// Form says what the models this package trains are made of, beyond Params: a cache of
// models trained earlier is stale when it changes.
func Form() string {
	var b strings.Builder
	fmt.Fprintf(&b, "prior of %d terms, rising terms never negative", models.PriorTerms)
	for _, t := range models.Targets() {
		fmt.Fprintf(&b, "; %s trees never fall with %s", t, strings.Join(monotoneIn[t], ", "))
	}
	return b.String()
}

// monotone is XGBoost's monotone_constraints for d: 1 for the columns of monotoneIn[target].
func (d *design) monotone() string {
	v := make([]string, d.cols)
	for i := range v {
		v[i] = "0"
	}
	for _, name := range monotoneIn[d.target] {
		v[models.Index(name)] = "1"
	}
	return "(" + strings.Join(v, ",") + ")"
}

// pinball returns the gradients of the pinball loss of quantile q (in log space, where the
// labels are): the loss's slope is -q below the label and 1-q above it. The loss has no
// curvature; taking it as 1/scale, where scale is the typical size of the residuals, makes
// a leaf move by about scale times its imbalance per round instead of by a whole log unit,
// which overshoots the quantile and oscillates.
func pinball(q float32, scale float32) func(pred, label []float32) (g, h []float32) {
	return func(pred, label []float32) (g, h []float32) {
		g, h = make([]float32, len(pred)), make([]float32, len(pred))
		for i := range pred {
			if label[i] > pred[i] {
				g[i] = -q
			} else {
				g[i] = 1 - q
			}
			h[i] = 1 / scale
		}
		return g, h
	}
}

// residualScale is the mean absolute log residual of the prior: how far a quantile
// typically lies from it.
func (d *design) residualScale() float32 {
	s := 0.0
	for i := range d.y {
		s += math.Abs(float64(d.y[i] - d.margin[i]))
	}
	return float32(max(s/float64(len(d.y)), 0.01))
}

// fitTarget trains target t's mean and upper-quantile models on train, calibrating a
// calibrated quantile on cal.
func fitTarget(ctx context.Context, t models.Target, train, cal []Row, o *Options, run string) (mean, upper models.Artifact, err error) {
	d, err := newDesign(t, train)
	if err != nil {
		return mean, upper, err
	}
	report := func(kind models.ModelKind) func(int) {
		return func(round int) {
			if o.Progress != nil {
				o.Progress(Progress{Target: t, Model: kind, Round: round, Rounds: o.Params.Trees})
			}
		}
	}
	js, err := d.booster(ctx, o.Params, nil, report(models.Mean))
	if err != nil {
		return mean, upper, fmt.Errorf("%s mean model: %w", t, err)
	}
	now := o.now()
	mean, err = artifact(js, d, models.Manifest{Run: run, Target: t, Kind: models.Mean, CreatedAt: now}, o)
	if err != nil {
		return mean, upper, err
	}
	um := models.Manifest{Run: run, Target: t, Kind: models.Quantile, Quantile: o.Quantile, Method: o.QuantileMethod, CreatedAt: now}
	point, cal90, err := calibrate(mean, cal, o.Quantile)
	if err != nil {
		return mean, upper, fmt.Errorf("%s calibration: %w", t, err)
	}
	switch o.QuantileMethod {
	case models.MethodPinball:
		js, err := d.booster(ctx, o.Params, pinball(float32(o.Quantile), d.residualScale()), report(models.Quantile))
		if err != nil {
			return mean, upper, fmt.Errorf("%s quantile model: %w", t, err)
		}
		if upper, err = artifact(js, d, um, o); err != nil {
			return mean, upper, err
		}
	default:
		um.Calibration = cal90
		if upper, err = artifact(js, d, um, o); err != nil {
			return mean, upper, err
		}
	}
	mean.Manifest.Calibration = point
	return mean, upper, nil
}

func artifact(js []byte, d *design, m models.Manifest, o *Options) (models.Artifact, error) {
	bin, err := xgbconv.ConvertJSON(js)
	if err != nil {
		return models.Artifact{}, err
	}
	m.Version = m.Run + "-" + m.Name()
	m.SchemaVersion = models.SchemaVersion
	m.Columns, m.Classes = d.layout.Columns(), d.layout.Classes
	m.Prior = d.prior
	m.Trees = o.Params.Trees
	m.Params = map[string]string{}
	for _, kv := range o.Params.xgboost() {
		m.Params[kv[0]] = kv[1]
	}
	m.Samples = d.rows
	a := models.Artifact{Manifest: m, Leaves: bin, XGBoost: js}
	a.Seal()
	return a, nil
}

// MinCalibration is the fewest calibration samples a regime needs for an offset of its own.
const MinCalibration = 200

// calibrate measures the mean model's log residuals (ln observed - ln predicted) on cal,
// samples it was not trained on, and returns per regime two offsets to add to its log
// prediction:
//
//   - upper, the q-quantile of the residuals: the calibrated quantile model;
//   - point, the median of the residuals weighted by exp(-residual): the offset that
//     minimises the absolute percentage error of the corrected prediction (the error the mean
//     model is judged by; fitting log latency by least squares aims at the geometric mean,
//     which overshoots where errors are skewed).
//
// A regime with fewer than MinCalibration samples takes the offsets of the coarsest group that
// has enough: its load regime on its replica class, then its load regime, then all samples (a
// rare regime such as idle has errors unlike the others'). Every regime of every class the
// model knows gets offsets.
func calibrate(mean models.Artifact, cal []Row, q float64) (point, upper *models.Calibration, err error) {
	set, err := predictor.Load([]models.Artifact{mean})
	if err != nil {
		return nil, nil, err
	}
	t := mean.Manifest.Target
	buf := set.NewBuffer()
	byRegime := map[models.Regime][]float64{}
	type loadClass struct {
		load  models.LoadRegime
		class string
	}
	byLoadClass := map[loadClass][]float64{}
	byLoad := map[models.LoadRegime][]float64{}
	var all []float64
	for i := range cal {
		r := &cal[i]
		y := r.Label(t)
		if y <= 0 {
			continue
		}
		res := math.Log(y) - math.Log(set.Predict(t, &r.Features, r.Class, buf).Mean)
		if math.IsNaN(res) || math.IsInf(res, 0) {
			continue
		}
		all = append(all, res)
		g := models.RegimeOf(&r.Features, r.Class)
		byRegime[g] = append(byRegime[g], res)
		byLoadClass[loadClass{g.Load, g.Class}] = append(byLoadClass[loadClass{g.Load, g.Class}], res)
		byLoad[g.Load] = append(byLoad[g.Load], res)
	}
	if len(all) == 0 {
		return nil, nil, fmt.Errorf("no calibration samples")
	}
	point = &models.Calibration{Offsets: map[string]float64{}, Default: mapeOffset(all)}
	upper = &models.Calibration{Offsets: map[string]float64{}, Default: quantile(all, q)}
	classes := slices.Clone(mean.Manifest.Classes)
	for g := range byRegime {
		if !slices.Contains(classes, g.Class) {
			classes = append(classes, g.Class)
		}
	}
	for _, class := range classes {
		for _, load := range []models.LoadRegime{models.Idle, models.Loaded, models.Overloaded} {
			for _, hit := range []bool{false, true} {
				g := models.Regime{Load: load, PrefixHit: hit, Class: class}
				var res []float64
				switch {
				case len(byRegime[g]) >= MinCalibration:
					res = byRegime[g]
				case len(byLoadClass[loadClass{load, class}]) >= MinCalibration:
					res = byLoadClass[loadClass{load, class}]
				case len(byLoad[load]) >= MinCalibration:
					res = byLoad[load]
				default:
					continue
				}
				point.Offsets[g.Key()] = mapeOffset(res)
				upper.Offsets[g.Key()] = quantile(res, q)
			}
		}
	}
	return point, upper, nil
}

// mapeOffset is the offset m that minimises the mean of |1 - exp(m - r)| over log residuals
// r: the median of r weighted by exp(-r). (Sorts res in place.)
func mapeOffset(res []float64) float64 {
	slices.Sort(res)
	total := 0.0
	for _, r := range res {
		total += math.Exp(-r)
	}
	acc := 0.0
	for _, r := range res {
		acc += math.Exp(-r)
		if acc >= total/2 {
			return r
		}
	}
	return res[len(res)-1]
}

// quantile is the q-quantile of v (sorted in place), by linear interpolation.
func quantile(v []float64, q float64) float64 {
	slices.Sort(v)
	return stat.Quantile(q, stat.LinInterp, v, nil)
}

// elapsed formats a duration for the report.
func elapsed(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// FitModel fits target t's mean model on all of rows with parameters p, without splitting,
// balancing or judging: the trees alone, for tools and benchmarks.
func FitModel(ctx context.Context, t models.Target, rows []Row, p Params) (models.Artifact, error) {
	if err := p.check(); err != nil {
		return models.Artifact{}, err
	}
	d, err := newDesign(t, rows)
	if err != nil {
		return models.Artifact{}, err
	}
	js, err := d.booster(ctx, p, nil, nil)
	if err != nil {
		return models.Artifact{}, err
	}
	o := Options{Params: p}
	return artifact(js, d, models.Manifest{Run: NewRun(time.Now()), Target: t, Kind: models.Mean, CreatedAt: time.Now().UTC()}, &o)
}
