package predictor

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/requestcontrol"
)

// DriftOptions configure the per-replica drift correction: how the predictor notices that a
// replica's latency departs from what the models predict for it (it silently slowed: a
// throttled GPU, a noisy neighbour, a driver update) and corrects for it until the next
// models, which have learned the change, are swapped in.
//
// For every replica and target the predictor keeps an exponentially weighted mean of
// log(observed/predicted), the prediction being the models' own (before any correction).
// When a target's mean stays beyond Threshold either way for Window consecutive
// completions of the replica, the replica is drifting: the onset is counted and OnDrift is
// told. It stops drifting once every target's mean has stayed within Threshold/2 for Window
// completions. Every replica starts afresh when new models are swapped in.
//
// Predict multiplies a replica's TPOT predictions (mean and upper) by its TPOT ratio always;
// with CorrectTTFT, its TTFT predictions by its TTFT ratio while it drifts. Measured in the
// wind tunnel (mixed-SLO workload; models trained on its traffic):
//
//   - Prediction error. A replica's TPOT error persists from one completion to the next (its
//     requests share its batches), so the correction tracks it: mean absolute percentage
//     error 8.7% to 6.6% on eight healthy replicas (8.4% to 8.1% on three), 50% to 20% on one
//     slowed 1.5x. TTFT error does not persist that way: outside drift its correction only
//     adds noise (9.4% to 9.6%); on the slowed replica it halves the error (36% to 17%).
//   - SLO attainment under the augur profile on 6x8b-h100,2x8b-a100, one replica slowed 1.5x,
//     from the slowdown on (three seeds; one run varies by several points): at 0.8 of
//     capacity 89.9% uncorrected, 92.4% with the TPOT correction, 90.3% with TTFT corrected
//     too, against 90.4% for models trained on traffic that included the slowdown (97.0%
//     with the TPOT correction); at 0.9, 71.0%, 71.0%, 61.3%, against 67.4% (83.6%). The
//     TTFT correction makes the SLO picker avoid the slowed replica beyond what its capacity
//     warrants and overload the others near capacity; hence CorrectTTFT is off by default.
//     Retrained models with the TPOT correction do best: hence OnDrift, which asks for them.
type DriftOptions struct {
	// Alpha is the weight of each completion in the mean (default DefaultDriftAlpha: about
	// the last 100 completions count).
	Alpha float64
	// Threshold is on |log(observed/predicted)| (default DefaultDriftThreshold(): 25%
	// either way, beyond the error of a replica's predictions over a hundred completions in
	// the wind tunnel, up to 20%, where the models know the load).
	Threshold float64
	// Window is how many consecutive completions of the replica the mean must stay beyond
	// Threshold (default DefaultDriftWindow).
	Window int
	// CorrectTTFT also multiplies a drifting replica's TTFT predictions by its TTFT ratio.
	CorrectTTFT bool
	// Off turns drift detection and correction off.
	Off bool
}

// Drift detection defaults (see DriftOptions): a replica slowed 1.5x drifts after 90 to 240
// of its completions in the wind tunnel, about 190 in a synthetic stream.
const (
	DefaultDriftAlpha  = 0.01
	DefaultDriftWindow = 100
)

// DefaultDriftThreshold is the default DriftOptions.Threshold: log(1.25).
func DefaultDriftThreshold() float64 { return math.Log(1.25) }

// maxLogRatio clips one completion's log(observed/predicted), so that a request stuck behind
// a burst moves the mean no more than a few ordinary ones.
var maxLogRatio = math.Log(4)

func (o *DriftOptions) withDefaults() {
	if !(o.Alpha > 0 && o.Alpha <= 1) {
		o.Alpha = DefaultDriftAlpha
	}
	if !(o.Threshold > 0) {
		o.Threshold = DefaultDriftThreshold()
	}
	if o.Window <= 0 {
		o.Window = DefaultDriftWindow
	}
}

// DriftState is what the predictor knows of a replica's drift since the models serving were
// swapped in.
type DriftState struct {
	// Drifting says that the replica's latency departs from the models' predictions; with
	// CorrectTTFT, Predict then corrects its TTFT predictions too (TPOT always is).
	Drifting bool
	// TTFT and TPOT are the weighted mean ratios of observed to predicted latency (1: the
	// models are right on average), and Samples the completions that measured them.
	TTFT, TPOT               float64
	TTFTSamples, TPOTSamples int
	Onsets                   int // times the replica started drifting
}

// driftTarget is one target's detector on one replica.
type driftTarget struct {
	mean  float64 // EW mean of log(observed/predicted by the models)
	n     int
	above int  // consecutive completions with |mean| > threshold
	below int  // consecutive completions with |mean| < threshold/2
	alarm bool // above reached the window, below has not since
}

func (d *driftTarget) update(r float64, o *DriftOptions) {
	d.mean += o.Alpha * (r - d.mean)
	d.n++
	switch m := math.Abs(d.mean); {
	case m > o.Threshold:
		d.above++
		d.below = 0
	case m < o.Threshold/2:
		d.below++
		d.above = 0
	default:
		d.above, d.below = 0, 0
	}
	if d.above >= o.Window {
		d.alarm = true
	} else if d.below >= o.Window {
		d.alarm = false
	}
}

// correction is a change of the log factors Predict applies to a replica, from an instant on.
type correction struct {
	at  time.Time
	log [2]float64
}

// historyLen is how many changes of a replica's applied correction are kept to tell what a
// completion's decision applied; publishStep is the least change published.
const (
	historyLen  = 64
	publishStep = 0.02
)

// replicaDrift is a replica's drift state. Predict reads factor; the rest is guarded by
// Predictor.driftMu.
type replicaDrift struct {
	name   string
	factor [2]atomic.Uint64 // float64 bits of the ratios Predict multiplies by

	t       [2]driftTarget
	active  bool       // drifting
	applied [2]float64 // log of factor
	history [historyLen]correction
	changes int // corrections written to history, ever
	onsets  int

	ratio       [2]prometheus.Gauge // nil without metrics
	activeGauge prometheus.Gauge
}

// appliedAt is the log correction Predict applied to a decision taken at t.
func (d *replicaDrift) appliedAt(t time.Time) [2]float64 {
	n := min(d.changes, historyLen)
	for k := 1; k <= n; k++ {
		c := &d.history[(d.changes-k)%historyLen]
		if !c.at.After(t) {
			return c.log
		}
	}
	if d.changes > historyLen {
		return d.history[d.changes%historyLen].log // older than we remember: the oldest known
	}
	return [2]float64{} // before the first correction
}

func (d *replicaDrift) publish(at time.Time, log [2]float64) {
	d.applied = log
	for i := range log {
		d.factor[i].Store(math.Float64bits(math.Exp(log[i])))
	}
	d.history[d.changes%historyLen] = correction{at: at, log: log}
	d.changes++
}

// driftTable is the replicas' drift states by name, copy-on-write: Predict reads it without
// a lock.
type driftTable map[string]*replicaDrift

// replicaDrift returns name's state, adding it. Called with driftMu held.
func (p *Predictor) replicaDrift(name string) *replicaDrift {
	tbl := *p.drifts.Load()
	if d := tbl[name]; d != nil {
		return d
	}
	d := &replicaDrift{name: name}
	for i := range d.factor {
		d.factor[i].Store(math.Float64bits(1))
	}
	if m := p.opts.Metrics; m != nil {
		for i, t := range models.Targets() {
			d.ratio[i] = m.driftRatio.WithLabelValues(name, string(t))
			d.ratio[i].Set(1)
		}
		d.activeGauge = m.driftActive.WithLabelValues(name)
		d.activeGauge.Set(0)
	}
	next := make(driftTable, len(tbl)+1)
	for k, v := range tbl {
		next[k] = v
	}
	next[name] = d
	p.drifts.Store(&next)
	return d
}

// resetDrift forgets every replica's drift: new models have learned what the corrections
// made up for.
func (p *Predictor) resetDrift() {
	p.driftMu.Lock()
	defer p.driftMu.Unlock()
	if m := p.opts.Metrics; m != nil {
		for name := range *p.drifts.Load() {
			m.driftActive.DeleteLabelValues(name)
			for _, t := range models.Targets() {
				m.driftRatio.DeleteLabelValues(name, string(t))
			}
		}
	}
	p.drifts.Store(&driftTable{})
}

// onset is a replica that started drifting, for OnDrift.
type onset struct {
	replica string
	target  models.Target
	ratio   float64
}

// observeDrift updates the completion's replica's detector with its observed latencies
// (labels, ms, by target; 0 when not measured).
func (p *Predictor) observeDrift(c *requestcontrol.Completion, labels [2]float64) {
	preds := [2]*float64{c.PredictedTTFTMs, c.PredictedTPOTMs}
	decided := c.Decided
	if decided.IsZero() {
		decided = c.Dispatched
	}
	p.driftMu.Lock()
	// The state is read under the lock: a swap's reset comes after it, so a completion of
	// the previous models is either wiped by the reset or told apart by its version.
	st := p.state.Load()
	var use [2]bool
	for i, t := range models.Targets() {
		use[i] = labels[i] > 0 && preds[i] != nil && *preds[i] > 0 && st.source(t) != SourceDefault
	}
	if c.ModelVersion != st.version || !(use[0] || use[1]) {
		// Decided by other models (its error says nothing about these), or nothing measured.
		p.driftMu.Unlock()
		return
	}
	o := &p.opts.Drift
	var on *onset
	d := p.replicaDrift(c.Target.Name)
	applied := d.appliedAt(decided)
	for i := range use {
		if !use[i] {
			continue
		}
		// The models' own error: what the decision predicted, less the correction it applied.
		r := math.Log(labels[i]) - math.Log(*preds[i]) + applied[i]
		d.t[i].update(min(max(r, -maxLogRatio), maxLogRatio), o)
		if d.ratio[i] != nil {
			d.ratio[i].Set(math.Exp(d.t[i].mean))
		}
	}
	drifting := d.t[0].alarm || d.t[1].alarm
	if drifting && !d.active {
		i := 0
		if !d.t[0].alarm || (d.t[1].alarm && math.Abs(d.t[1].mean) > math.Abs(d.t[0].mean)) {
			i = 1
		}
		t := models.Targets()[i]
		on = &onset{replica: d.name, target: t, ratio: math.Exp(d.t[i].mean)}
		d.onsets++
		if m := p.opts.Metrics; m != nil {
			m.driftOnsets.WithLabelValues(d.name, string(t)).Inc()
		}
	}
	// The correction applied from now on (TPOT always, TTFT while drifting with CorrectTTFT:
	// see DriftOptions), published when it moved by more than publishStep.
	want := [2]float64{0, d.t[1].mean}
	if drifting && o.CorrectTTFT {
		want[0] = d.t[0].mean
	}
	if drifting != d.active || math.Abs(want[0]-d.applied[0]) > publishStep || math.Abs(want[1]-d.applied[1]) > publishStep {
		d.publish(c.Dispatched.Add(c.E2E), want)
	}
	if drifting != d.active {
		d.active = drifting
		if d.activeGauge != nil {
			d.activeGauge.Set(b2f(drifting))
		}
	}
	p.driftMu.Unlock()
	if on != nil {
		p.opts.Log.Warn("replica drifting from the models: its predictions are corrected until the next models",
			"replica", on.replica, "target", on.target, "ratio", on.ratio)
		if p.opts.OnDrift != nil {
			p.opts.OnDrift(on.replica, on.target, on.ratio)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Drift returns what the predictor knows of replica's drift (by endpoint name) since the
// models serving were swapped in.
func (p *Predictor) Drift(replica string) DriftState {
	p.driftMu.Lock()
	defer p.driftMu.Unlock()
	d := (*p.drifts.Load())[replica]
	if d == nil {
		return DriftState{TTFT: 1, TPOT: 1}
	}
	return DriftState{
		Drifting: d.active,
		TTFT:     math.Exp(d.t[0].mean), TPOT: math.Exp(d.t[1].mean),
		TTFTSamples: d.t[0].n, TPOTSamples: d.t[1].n,
		Onsets: d.onsets,
	}
}
