package predictor

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gonum.org/v1/gonum/stat"
	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// Sources of predictions, as the augur_predictor_source metric names them.
const (
	SourceModel   = "model"   // a trained model (a Set)
	SourceOnline  = "online"  // the prior fitted online from this picker's first samples
	SourceDefault = "default" // models.DefaultPrior: no sample seen yet
)

// Options configure a Predictor.
type Options struct {
	Clock clock.PassiveClock // the decision's clock; default real time
	Log   *slog.Logger
	// Metrics, when set, receives the predictor's metrics (see NewMetrics).
	Metrics *Metrics
	// OnlineWindow is how many recent samples per target the cold-start prior is fitted
	// to (default 4,096); RefitEvery how many new ones trigger a refit (default 256).
	OnlineWindow, RefitEvery int
	// SyncRefit refits on the caller of Observe instead of a goroutine: deterministic, for
	// virtual time.
	SyncRefit bool
	// Drift configures the per-replica drift correction (see DriftOptions).
	Drift DriftOptions
	// OnDrift, when set, is told when a replica starts drifting: the target whose error
	// crossed the threshold and its observed/predicted ratio. It is called on the goroutine of
	// Observe and must not block; the picker asks the trainer for new models with it.
	OnDrift func(replica string, target models.Target, ratio float64)
}

// cold is a target's estimate while no trained model serves it: a prior and the log offset
// that turns its estimate into the upper quantile.
type cold struct {
	prior  models.Prior
	offset float64
	source string
}

func (c *cold) estimate(v *models.Vector, class string) Estimate {
	m := c.prior.Estimate(v, c.prior.ClassIndex(class))
	return Estimate{Mean: m, Upper: m * math.Exp(c.offset)}
}

// state is what predicts, swapped atomically as a whole.
type state struct {
	set     *Set     // nil: no trained model
	cold    [2]*cold // per target, for targets set lacks
	version string   // what candidates are stamped with
}

func (s *state) source(t models.Target) string {
	if s.set != nil && s.set.Has(t) {
		return SourceModel
	}
	return s.cold[targetIndex(t)].source
}

// Predictor is the picker's latency predictor: for every candidate of a decision it sets the
// predicted TTFT and TPOT (mean and upper quantile) and the model version. It serves a
// trained Set when one is loaded and the cold-start prior for targets without one, swaps
// either without a restart, and as an Observer learns the cold-start prior and measures live
// error. Predict allocates nothing and takes no lock.
type Predictor struct {
	opts    Options
	state   atomic.Pointer[state]
	buffers sync.Pool

	mu      sync.Mutex // guards the online window and loads
	online  [2]*window
	fitting [2]bool
	loaded  string // fingerprint of the source's models last applied or refused

	driftMu sync.Mutex // guards the replicas' drift detectors and writes of drifts
	drifts  atomic.Pointer[driftTable]
}

// window is the recent observations of a target, a ring.
type window struct {
	obs   []models.Observation
	next  int // where the next observation goes once the ring is full
	fresh int // observations since the last fit
}

// DefaultQuantile is the upper quantile the cold start approximates.
const DefaultQuantile = 0.9

// coldOffset is the upper-quantile offset before any sample: p90 taken as 1.5 times the
// estimate.
var coldOffset = math.Log(1.5)

// New returns a predictor serving the default prior until models or samples arrive.
func New(o Options) *Predictor {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.OnlineWindow <= 0 {
		o.OnlineWindow = 4096
	}
	if o.RefitEvery <= 0 {
		o.RefitEvery = 256
	}
	o.Drift.withDefaults()
	p := &Predictor{opts: o}
	p.drifts.Store(&driftTable{})
	st := &state{}
	for i, t := range models.Targets() {
		st.cold[i] = &cold{prior: models.DefaultPrior(t), offset: coldOffset, source: SourceDefault}
		p.online[i] = &window{obs: make([]models.Observation, 0, o.OnlineWindow)}
	}
	st.version = versionOf(st)
	p.state.Store(st)
	p.buffers.New = func() any { return new(Buffer) }
	p.report(st)
	return p
}

func versionOf(st *state) string {
	if st.set != nil && st.set.Has(models.TTFT) && st.set.Has(models.TPOT) {
		return st.set.Version()
	}
	v := ""
	for i, t := range models.Targets() {
		if i > 0 {
			v += ";"
		}
		if st.set != nil && st.set.Has(t) {
			v += string(t) + "=" + st.set.pairs[i].mean.manifest.Run
		} else {
			v += string(t) + "=prior-" + st.cold[i].source
		}
	}
	return v
}

// Version names what predicts now: the trained models' run, or per target the run or the
// cold-start prior ("ttft=prior-online;tpot=prior-online").
func (p *Predictor) Version() string { return p.state.Load().version }

// Source is where target t's predictions come from now: SourceModel, SourceOnline or
// SourceDefault.
func (p *Predictor) Source(t models.Target) string { return p.state.Load().source(t) }

// Models returns the trained set serving, nil when none does.
func (p *Predictor) Models() *Set { return p.state.Load().set }

// Swap makes set serve new decisions (nil: back to the cold start); decisions in progress
// finish with what they started with. Drift corrections start afresh.
func (p *Predictor) Swap(set *Set) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.swapLocked(func(st *state) { st.set = set })
	p.resetDrift()
}

func (p *Predictor) swapLocked(change func(*state)) {
	st := *p.state.Load()
	change(&st)
	st.version = versionOf(&st)
	p.state.Store(&st)
	p.report(&st)
}

func (p *Predictor) report(st *state) {
	if m := p.opts.Metrics; m != nil {
		for _, t := range models.Targets() {
			m.setSource(t, st.source(t))
		}
		m.setVersion(st.version)
	}
}

// Predict implements scheduler.Predictor: it extracts every candidate's features, then
// predicts each target for all candidates at once (see Set), and sets the values.
func (p *Predictor) Predict(_ context.Context, req *scheduler.Request, cands []scheduler.Candidate) {
	st := p.state.Load()
	now := p.opts.Clock.Now()
	b := p.buffers.Get().(*Buffer)
	b.start(st.set, len(cands))
	drifts := *p.drifts.Load() // the replicas' corrections
	for i := range cands {
		c := &cands[i]
		b.vectors[i] = models.Extract(req, c, now)
		b.classes[i] = c.Endpoint.Class
		if len(drifts) > 0 {
			b.drifts[i] = drifts[c.Endpoint.Name]
		}
	}
	for ti, t := range models.Targets() {
		if st.set != nil && st.set.Has(t) {
			st.set.estimates(ti, b)
		} else {
			for i := range b.est {
				b.est[i] = st.cold[ti].estimate(&b.vectors[i], b.classes[i])
			}
		}
		mean, upper := scheduler.ValuePredictedTTFT, scheduler.ValuePredictedTTFTUpper
		if t == models.TPOT {
			mean, upper = scheduler.ValuePredictedTPOT, scheduler.ValuePredictedTPOTUpper
		}
		for i := range cands {
			e := &b.est[i]
			m, u := e.Mean, e.Upper
			if d := b.drifts[i]; d != nil {
				f := math.Float64frombits(d.factor[ti].Load())
				m, u = m*f, u*f
			}
			cands[i].SetValue(mean, m)
			if !math.IsNaN(u) {
				cands[i].SetValue(upper, u)
			}
		}
	}
	for i := range cands {
		cands[i].ModelVersion = st.version
	}
	b.done()
	p.buffers.Put(b)
}

// Estimate is what serves now predicts for target t from features v on a replica of
// class. It allocates; decisions use Predict.
func (p *Predictor) Estimate(t models.Target, v *models.Vector, class string) Estimate {
	st := p.state.Load()
	if st.set != nil && st.set.Has(t) {
		return st.set.Predict(t, v, class, st.set.NewBuffer())
	}
	return st.cold[targetIndex(t)].estimate(v, class)
}

// Observe implements requestcontrol.Observer: every finished request's observed latency
// against what was predicted for it (live error, per replica class, and per replica for the
// drift correction), and, while a target has no trained model, a sample for the online fit
// of its prior. It does not block: fits run on a goroutine (or inline with SyncRefit).
func (p *Predictor) Observe(c requestcontrol.Completion) {
	labels := [2]float64{}
	if c.Stream && !c.FirstToken.IsZero() && c.TTFT > 0 {
		labels[0] = msOf(c.TTFT)
	}
	if c.Stream && c.Outcome == requestcontrol.OutcomeOK && c.TPOT > 0 {
		labels[1] = msOf(c.TPOT)
	}
	if c.ServedByFallback {
		return // the features are the primary's, the latency another replica's
	}
	if m := p.opts.Metrics; m != nil {
		preds := [2][2]*float64{{c.PredictedTTFTMs, c.PredictedTTFTUpperMs}, {c.PredictedTPOTMs, c.PredictedTPOTUpperMs}}
		for i, t := range models.Targets() {
			if labels[i] > 0 && preds[i][0] != nil {
				m.observe(t, c.Target.Class, labels[i], *preds[i][0], preds[i][1])
			}
		}
	}
	if !p.opts.Drift.Off {
		p.observeDrift(&c, labels)
	}
	st := p.state.Load()
	for i, t := range models.Targets() {
		if labels[i] <= 0 || st.source(t) == SourceModel {
			continue
		}
		p.learn(i, t, models.Observation{Features: c.Features, Class: c.Target.Class, Ms: labels[i]})
	}
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (p *Predictor) learn(i int, t models.Target, o models.Observation) {
	p.mu.Lock()
	w := p.online[i]
	if len(w.obs) < cap(w.obs) {
		w.obs = append(w.obs, o)
	} else {
		w.obs[w.next] = o
		w.next = (w.next + 1) % len(w.obs)
	}
	w.fresh++
	// Fit at the first usable count, then every RefitEvery samples.
	threshold := p.opts.RefitEvery
	if p.state.Load().cold[i].source == SourceDefault {
		threshold = models.MinPriorSamples
	}
	if w.fresh < threshold || p.fitting[i] || len(w.obs) < models.MinPriorSamples {
		p.mu.Unlock()
		return
	}
	p.fitting[i] = true
	w.fresh = 0
	obs := append([]models.Observation(nil), w.obs...)
	p.mu.Unlock()
	fit := func() {
		c, err := fitCold(t, obs)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fitting[i] = false
		if err != nil {
			p.opts.Log.Debug("online prior fit failed; the previous estimate stays", "target", t, "err", err)
			return
		}
		p.swapLocked(func(st *state) { st.cold[i] = c })
	}
	if p.opts.SyncRefit {
		fit()
	} else {
		go fit()
	}
}

// fitCold fits a target's prior to obs and the upper offset to its log residuals there.
func fitCold(t models.Target, obs []models.Observation) (*cold, error) {
	prior, err := models.FitPrior(t, obs)
	if err != nil {
		return nil, err
	}
	res := make([]float64, 0, len(obs))
	for i := range obs {
		o := &obs[i]
		res = append(res, math.Log(o.Ms)-math.Log(prior.Estimate(&o.Features, prior.ClassIndex(o.Class))))
	}
	slices.Sort(res)
	off := stat.Quantile(DefaultQuantile, stat.LinInterp, res, nil)
	if math.IsNaN(off) || math.IsInf(off, 0) {
		off = coldOffset
	}
	return &cold{prior: prior, offset: off, source: SourceOnline}, nil
}
