package predictor

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dmitryikh/leaves"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/models/xgbconv"
)

// maxLatencyMs bounds a sane prediction: a day.
const maxLatencyMs = 24 * 60 * 60 * 1000

// Estimate is a candidate's predicted latency for one target, in ms: the mean model's
// prediction and the upper quantile's (Upper is NaN when no quantile model serves).
type Estimate struct {
	Mean, Upper float64
}

// model is one loaded artifact.
type model struct {
	manifest models.Manifest
	ens      *leaves.Ensemble
	layout   models.Layout
	// offsets and offset are a calibrated quantile's log offsets by regime (keys parsed
	// once, so that the request path looks them up without building strings).
	offsets map[models.Regime]float64
	offset  float64
}

func (m *model) calibration(r models.Regime) float64 {
	if o, ok := m.offsets[r]; ok {
		return o
	}
	return m.offset
}

// trees is the sum of the model's trees for row (its prediction without the prior), in log ms.
func (m *model) trees(row []float64, out []float64) float64 {
	// Predict with a caller's slice does not allocate, where PredictSingle does.
	if err := m.ens.Predict(row[:m.layout.Width()], 0, out[:1]); err != nil {
		return math.NaN()
	}
	return out[0]
}

// pair is a target's models.
type pair struct {
	mean, upper *model
	// shared: the quantile is the mean model's trees and prior with a calibration offset,
	// so the trees are evaluated once.
	shared bool
}

// Set is a checked set of models, ready to predict: for each target a mean model and
// optionally an upper-quantile model. It is immutable and safe for concurrent use.
type Set struct {
	version string
	pairs   [2]pair // by target: TTFT, TPOT
	width   int     // the widest input row
	// sameRow: both targets' mean models read the same row, and neither's quantile model
	// overwrites it, so a decision fills it once per candidate.
	sameRow bool
}

func targetIndex(t models.Target) int {
	if t == models.TPOT {
		return 1
	}
	return 0
}

// Has reports whether the set has a model for target t.
func (s *Set) Has(t models.Target) bool { return s.pairs[targetIndex(t)].mean != nil }

// Version names the set: the trainer run that made its models, or the run per target when
// they differ or a target has none ("ttft=RUN;tpot=RUN").
func (s *Set) Version() string { return s.version }

// Load checks arts and builds a set from them. It refuses the whole set, with an error
// wrapping models.ErrInvalidArtifact, when any artifact is corrupt, truncated, of another
// feature schema, unreadable by leaves, or predicts a value that is not a positive, finite
// latency on the reference rows; when a target has a quantile model without its mean model,
// a slot is filled twice, or there is nothing to load. A target without models is allowed
// (Has reports it).
func Load(arts []models.Artifact) (*Set, error) {
	s := &Set{}
	for i := range arts {
		a := &arts[i]
		if err := a.Verify(); err != nil {
			return nil, err
		}
		m, err := loadModel(a)
		if err != nil {
			return nil, err
		}
		p := &s.pairs[targetIndex(a.Manifest.Target)]
		slot := &p.mean
		if a.Manifest.Kind == models.Quantile {
			slot = &p.upper
		}
		if *slot != nil {
			return nil, fmt.Errorf("%w: two %s models (%s, %s)", models.ErrInvalidArtifact, a.Manifest.Name(), (*slot).manifest.Version, a.Manifest.Version)
		}
		*slot = m
		s.width = max(s.width, m.layout.Width())
	}
	var runs []string
	for i, t := range models.Targets() {
		p := &s.pairs[i]
		if p.mean == nil {
			if p.upper != nil {
				return nil, fmt.Errorf("%w: a %s quantile model without its mean model", models.ErrInvalidArtifact, t)
			}
			continue
		}
		if u := p.upper; u != nil {
			p.shared = u.manifest.Method == models.MethodCalibrated && u.manifest.LeavesSHA256 == p.mean.manifest.LeavesSHA256 &&
				slices.Equal(u.manifest.Classes, p.mean.manifest.Classes) && priorEqual(&u.manifest.Prior, &p.mean.manifest.Prior)
		}
		runs = append(runs, string(t)+"="+p.mean.manifest.Run)
	}
	m0, m1 := s.pairs[0], s.pairs[1]
	s.sameRow = m0.mean != nil && m1.mean != nil && slices.Equal(m0.mean.manifest.Classes, m1.mean.manifest.Classes) &&
		(m0.upper == nil || m0.shared)
	switch {
	case len(runs) == 0:
		return nil, fmt.Errorf("%w: no model to load", models.ErrInvalidArtifact)
	case len(runs) == 2 && s.pairs[0].mean.manifest.Run == s.pairs[1].mean.manifest.Run:
		s.version = s.pairs[0].mean.manifest.Run
	default:
		s.version = strings.Join(runs, ";")
	}
	if err := s.sane(); err != nil {
		return nil, err
	}
	return s, nil
}

func priorEqual(a, b *models.Prior) bool {
	if a.Target != b.Target || a.Floor != b.Floor || !slices.Equal(a.Classes, b.Classes) || !slices.Equal(a.Pooled, b.Pooled) {
		return false
	}
	return slices.EqualFunc(a.Coef, b.Coef, func(x, y []float64) bool { return slices.Equal(x, y) })
}

func loadModel(a *models.Artifact) (m *model, err error) {
	man := a.Manifest
	layout := models.NewLayout(man.Classes)
	nf, _, err := xgbconv.CheckBinary(a.Leaves)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	if nf != layout.Width() {
		return nil, fmt.Errorf("%w %q: the model reads %d features, its manifest lists %d columns", models.ErrInvalidArtifact, man.Version, nf, layout.Width())
	}
	defer func() {
		// leaves trusts the bytes it reads; CheckBinary has walked them, this is the last guard.
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w %q: leaves failed on the model: %v", models.ErrInvalidArtifact, man.Version, r)
		}
	}()
	ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(a.Leaves)), false)
	if err != nil {
		return nil, fmt.Errorf("%w %q: leaves cannot read it: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	if ens.NFeatures() > layout.Width() || ens.NOutputGroups() != 1 {
		return nil, fmt.Errorf("%w %q: %d features, %d outputs", models.ErrInvalidArtifact, man.Version, ens.NFeatures(), ens.NOutputGroups())
	}
	m = &model{manifest: man, ens: ens, layout: layout}
	if c := man.Calibration; c != nil {
		m.offsets, m.offset = make(map[models.Regime]float64, len(c.Offsets)), c.Default
		for k, o := range c.Offsets {
			r, err := models.ParseRegime(k)
			if err != nil {
				return nil, fmt.Errorf("%w %q: calibration: %v", models.ErrInvalidArtifact, man.Version, err)
			}
			m.offsets[r] = o
		}
	}
	return m, nil
}

// sane predicts reference rows and refuses a set that answers with anything but positive,
// finite latencies below a day: a model trained on broken labels or damaged after its
// checksum was taken.
func (s *Set) sane() error {
	b := s.NewBuffer()
	for _, v := range referenceRows() {
		for _, t := range models.Targets() {
			p := s.pairs[targetIndex(t)]
			if p.mean == nil {
				continue
			}
			classes := p.mean.manifest.Classes
			if len(classes) == 0 {
				classes = []string{""}
			}
			for _, class := range classes {
				e := s.Predict(t, &v, class, b)
				bad := !(e.Mean > 0 && e.Mean < maxLatencyMs)
				if p.upper != nil {
					bad = bad || !(e.Upper > 0 && e.Upper < maxLatencyMs)
				}
				if bad {
					return fmt.Errorf("%w: %s models predict %v ms (upper %v) for a reference request on %q",
						models.ErrInvalidArtifact, t, e.Mean, e.Upper, class)
				}
			}
		}
	}
	return nil
}

// referenceRows are requests a serving model must answer sensibly: to an idle replica, and
// to a busy one.
func referenceRows() []models.Vector {
	set := func(v *models.Vector, name string, x float64) { v.Set(models.Index(name), x) }
	var idle, busy models.Vector
	for _, v := range []*models.Vector{&idle, &busy} {
		set(v, "input_tokens", 1000)
		set(v, "uncached_input_tokens", 1000)
		set(v, "max_tokens", 200)
		set(v, "num_gpu_blocks", 20000)
		set(v, "block_size", 16)
		set(v, "prefix_match", 0)
	}
	for _, name := range []string{"kv_cache_usage", "num_requests_waiting", "num_requests_running", "inflight_requests",
		"prefill_tokens_in_flight", "decode_requests_in_flight", "inflight_tokens", "metrics_age_ms", "prefill_uncached_tokens_in_flight",
		"decode_tokens_left", "request_rate", "uncached_token_rate", "dispatched_since_scrape", "first_tokens_since_scrape", "finished_since_scrape"} {
		set(&idle, name, 0)
	}
	for name, x := range map[string]float64{"kv_cache_usage": 0.5, "num_requests_waiting": 2, "num_requests_running": 30, "inflight_requests": 32,
		"prefill_tokens_in_flight": 4000, "decode_requests_in_flight": 30, "inflight_tokens": 60000, "metrics_age_ms": 25,
		"prefill_uncached_tokens_in_flight": 3000, "decode_tokens_left": 5000, "last_token_age_ms": 10, "request_rate": 4,
		"uncached_token_rate": 4000, "dispatched_since_scrape": 1, "first_tokens_since_scrape": 1, "finished_since_scrape": 1} {
		set(&busy, name, x)
	}
	return []models.Vector{idle, busy}
}

// Buffer is scratch space for Predict: one per goroutine, reused across calls.
type Buffer struct {
	row, out []float64
}

// NewBuffer returns a buffer for s's models.
func (s *Set) NewBuffer() *Buffer {
	return &Buffer{row: make([]float64, s.width), out: make([]float64, 1)}
}

func (b *Buffer) fit(width int) {
	if len(b.row) < width {
		b.row = make([]float64, width)
	}
	if len(b.out) < 1 {
		b.out = make([]float64, 1)
	}
}

// Predict is target t's estimate for features v on a replica of class (NaN when the set
// has no model for t). With a buffer from NewBuffer it allocates nothing.
func (s *Set) Predict(t models.Target, v *models.Vector, class string, b *Buffer) Estimate {
	b.fit(s.width)
	return s.predict(t, v, class, b, false)
}

// PredictBoth is Predict for TTFT and TPOT at once: when their models read the same input
// row (they were trained on the same replica classes), it is filled once.
func (s *Set) PredictBoth(v *models.Vector, class string, b *Buffer) (ttft, tpot Estimate) {
	b.fit(s.width)
	ttft = s.predict(models.TTFT, v, class, b, false)
	tpot = s.predict(models.TPOT, v, class, b, s.sameRow && s.pairs[0].mean != nil)
	return ttft, tpot
}

// predict is Predict; filled says b.row already holds v's row in the mean model's layout.
func (s *Set) predict(t models.Target, v *models.Vector, class string, b *Buffer, filled bool) Estimate {
	p := &s.pairs[targetIndex(t)]
	mean := p.mean
	if mean == nil {
		return Estimate{Mean: math.NaN(), Upper: math.NaN()}
	}
	if !filled {
		mean.layout.Fill(b.row, v, mean.layout.ClassIndex(class))
	}
	logPrior := math.Log(mean.manifest.Prior.Estimate(v, mean.manifest.Prior.ClassIndex(class)))
	sum := mean.trees(b.row, b.out)
	u := p.upper
	var regime models.Regime
	if mean.offsets != nil || u != nil {
		regime = models.RegimeOf(v, class)
	}
	e := Estimate{Mean: math.Exp(sum + logPrior + mean.calibration(regime)), Upper: math.NaN()}
	if u == nil {
		return e
	}
	if !p.shared {
		u.layout.Fill(b.row, v, u.layout.ClassIndex(class))
		logPrior = math.Log(u.manifest.Prior.Estimate(v, u.manifest.Prior.ClassIndex(class)))
		sum = u.trees(b.row, b.out)
	}
	e.Upper = math.Exp(sum + logPrior + u.calibration(regime))
	return e
}

// joinVersions names artifacts for logs.
func joinVersions(arts []models.Artifact) string {
	var v []string
	for _, a := range arts {
		v = append(v, a.Manifest.Name()+"="+a.Manifest.Version)
	}
	slices.Sort(v)
	return strings.Join(v, ", ")
}
